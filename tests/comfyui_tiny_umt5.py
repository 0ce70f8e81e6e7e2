"""Test only, installed by tests/test_comfyui_server.py into its server's custom_nodes: lets core's
CLIPLoader(type=wan) read the tiny random umt5 that tests/wan_files.py writes (4096 wide like
umt5-xxl, 2 layers, a 64-token vocabulary).

Core builds umt5-xxl from a fixed config (24 layers, a 256k vocabulary) and recognises a umt5 file
by its 24th block. Here a file with a tokenizer and a 64-row embedding is recognised as umt5-xxl and
built with the tiny file's sizes, through core's own config override (model_options
"umt5xxl_model_config"). Core's loader, tokenizer, T5 code and CLIPTextEncode run unchanged.
"""

import comfy.sd
import comfy.text_encoders.sd3_clip
import comfy.text_encoders.wan

TINY = {"vocab_size": 64, "d_kv": 16, "num_heads": 4, "d_ff": 96, "num_layers": 2}  # wan_files.write_wan_models'


def _tiny(sd) -> bool:
    return "spiece_model" in sd and "shared.weight" in sd and sd["shared.weight"].shape[0] == TINY["vocab_size"]


_detect, _t5xxl, _init = comfy.sd.detect_te_model, comfy.sd.t5xxl_detect, comfy.text_encoders.wan.UMT5XXlModel.__init__
comfy.sd.detect_te_model = lambda sd: comfy.sd.TEModel.T5_XXL if _tiny(sd) else _detect(sd)
comfy.sd.t5xxl_detect = lambda data: (comfy.text_encoders.sd3_clip.t5_xxl_detect(data[0])  # its dtype, fp8 scales
                                      if len(data) == 1 and _tiny(data[0]) else _t5xxl(data))


def _tiny_init(self, *args, model_options={}, **kwargs):
    _init(self, *args, model_options={**model_options, "umt5xxl_model_config": TINY}, **kwargs)


comfy.text_encoders.wan.UMT5XXlModel.__init__ = _tiny_init
NODE_CLASS_MAPPINGS = {}
