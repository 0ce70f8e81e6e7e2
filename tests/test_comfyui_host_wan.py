"""Wan models under ComfyUI's memory manager, in the real host: the loaders' DiT and text encoder are
built from comfy.ops layers, so a ModelPatcher loaded partially (lowvram) leaves layers in the
cast-on-the-fly state and gives the same output as a full load; the size ComfyUI sees is the
weights' bytes; previews use core's Wan21 / Wan22 latent formats; the nodes run end to end.

Skipped unless COMFYUI_PATH points at a ComfyUI checkout whose requirements this Python has. The
checks run in a fresh interpreter (`python -m tests.test_comfyui_host_wan MODELS_DIR`), which makes
ComfyUI importable before the nodes (nodes.host decides once, at import, whether it is inside
ComfyUI) and prints what it found as JSON; the tests assert on that. On a CUDA machine the same
checks load to the GPU, with the offloaded layers left on the CPU.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from .wan_files import FAMILIES, TEXT_ENCODER, write_wan_models

REPO = Path(__file__).resolve().parents[1]
COMFYUI = os.environ.get("COMFYUI_PATH")

pytestmark = pytest.mark.skipif(not COMFYUI, reason="set COMFYUI_PATH to a ComfyUI checkout to run in the real host")


@pytest.fixture(scope="module")
def facts(tmp_path_factory):
    models = tmp_path_factory.mktemp("models")
    write_wan_models(models)
    run = subprocess.run([sys.executable, "-m", "tests.test_comfyui_host_wan", str(models)], cwd=REPO,
                         capture_output=True, text=True, timeout=900, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-6000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


def test_it_ran_inside_comfyui_with_core_layers(facts):
    assert facts["in_comfyui"]
    assert facts["layers"]["dit"][:2] == ["Linear", "comfy.ops.manual_cast.Linear"]
    assert facts["layers"]["text"][:2] == ["Linear", "comfy.ops.manual_cast.Linear"]
    assert facts["layers"]["norm"][0] == "comfy.ops.manual_cast.LayerNorm"


@pytest.mark.parametrize("part", ["dit", "text"])
def test_a_partial_load_casts_layers_on_the_fly_and_gives_the_full_loads_output(facts, part):
    f = facts[part]
    assert not f["full"]["lowvram"] and f["full"]["loaded"] == f["size"]
    partial = f["partial"]
    assert partial["lowvram"] and 0 < partial["loaded"] < f["size"] // 2
    assert partial["cast"] >= 4 and partial["cast"] < partial["layers"]  # some layers loaded, some cast on the fly
    assert set(partial["cast_weights_on"]) == {facts["offload_device"]}  # they stayed where the mapped file is
    assert partial["diff"] <= 1e-5 * f["scale"], (partial["diff"], f["scale"])


def test_the_size_comfyui_sees_is_the_weights_bytes(facts):
    assert facts["dit"]["size"] == facts["dit"]["file_bytes"]  # every tensor of the DiT file is a weight
    # umt5's file also holds its tokenizer (spiece_model), which is no weight
    assert facts["text"]["size"] == facts["text"]["file_bytes"] - facts["text"]["tokenizer_bytes"]


def test_the_text_encoder_uses_cores_text_encoder_devices(facts):
    assert facts["text"]["devices"] == facts["text_encoder_devices"]
    assert facts["dit"]["devices"] == facts["unet_devices"]


def test_fast_fp8_falls_back_to_cast_fp8_where_the_device_has_no_fp8_matmul(facts):
    f = facts["fp8_fast"]
    assert f["weight_dtype"] == "torch.float8_e4m3fn"
    assert f["base"] == ("comfy.ops.fp8_ops.Linear" if f["supported"] else "comfy.ops.manual_cast.Linear")
    assert f["rel_vs_plain_fp8"] < (0.05 if f["supported"] else 1e-6)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_previews_of_wan_latents_are_cores_own_for_its_wan_formats(facts, family):
    f = facts["previews"][family]
    assert f["format"] == {"2.1": "Wan21", "2.2": "Wan22"}[family] and f["channels"] == FAMILIES[family][2]
    assert f["size"] == [6, 4] and f["equal_to_core"]


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_the_nodes_run_a_wan_graph_under_the_memory_manager(facts, family):
    f = facts["graph"][family]
    assert f["frames"] == [9, f["size"], f["size"], 3] and f["finite"] and f["previews"] == 2
    assert f["loaded"] == ["dit", "text", "vae"]
    (text, _, text_full), (text_again, _, _), (dit, dit_memory, dit_full), (vae, vae_memory, vae_full) = f["loads"]
    assert (text, text_again, dit, vae) == ("text", "text", "dit", "vae")
    assert not text_full and not dit_full and vae_full  # the Wan DiT and umt5 may load in part, the VAE whole
    assert dit_memory > 0 and vae_memory > 0  # ComfyUI makes room for the work, not only the weights


# -- the checks, in a fresh interpreter ----------------------------------------------------------------

def _load_and_run(part, budget, run, mm):
    """Load `part`'s patcher fully, then partially with `budget` bytes, running `run` after each."""
    patcher = part.patcher
    out = {}
    for name, memory in (("full", 0), ("partial", budget)):
        patcher.patch_model(patcher.load_device, lowvram_model_memory=memory)
        with torch.no_grad():
            result = run().float().cpu()
        modules = [m for m in part.module.modules() if hasattr(m, "comfy_cast_weights")]
        cast = [m for m in modules if hasattr(m, "prev_comfy_cast_weights")]  # ModelPatcher's lowvram mark
        out[name] = {"lowvram": patcher.model.model_lowvram, "loaded": patcher.loaded_size(), "layers": len(modules),
                     "cast": len(cast), "cast_weights_on": sorted({str(m.weight.device) for m in cast}), "result": result}
        patcher.unpatch_model(patcher.offload_device)
    out["partial"]["diff"] = float((out["partial"].pop("result") - out["full"]["result"]).abs().max())
    scale = float(out["full"].pop("result").abs().max())
    return {**out, "scale": scale, "size": patcher.model_size(),
            "devices": [str(patcher.load_device), str(patcher.offload_device)]}


def _mro(layer) -> list[str]:
    return [c.__name__ if c.__module__ == "nodes.host" else f"{c.__module__}.{c.__qualname__}"
            for c in type(layer).__mro__][:3]


def host_facts(models: Path) -> dict:
    sys.path.append(COMFYUI)
    import comfy.cli_args

    comfy.cli_args.args.cpu = not torch.cuda.is_available()
    comfy.cli_args.args.preview_method = comfy.cli_args.LatentPreviewMethod.Latent2RGB
    import comfy.latent_formats
    import comfy.model_management as mm
    import folder_paths
    import latent_preview
    import numpy as np

    from nodes import host
    from nodes.latent import SoraPatchifyGrid, SoraVAEDecode
    from nodes.loader import SoraDiffusionModelLoader, SoraTextEncoderLoader, SoraVAELoader
    from nodes.sampler import SoraDiTSampler
    from nodes.text import SoraTextEncode
    from sora_core.wan import files

    torch.set_num_threads(min(2, torch.get_num_threads()))
    for folder in ("diffusion_models", "vae", "text_encoders"):  # as extra_model_paths.yaml adds folders
        folder_paths.add_model_folder_path(folder, str(models / folder))
    facts = {"in_comfyui": host.IN_COMFYUI, "offload_device": str(mm.unet_offload_device()),
             "unet_devices": [str(mm.get_torch_device()), str(mm.unet_offload_device())],
             "text_encoder_devices": [str(mm.text_encoder_device()), str(mm.text_encoder_offload_device())]}

    dit = SoraDiffusionModelLoader().load(FAMILIES["2.1"][0], "default", "default")[0]
    text = SoraTextEncoderLoader().load(TEXT_ENCODER, "default")[0]
    facts["layers"] = {"dit": _mro(dit.module.blocks[0].ffn[0]), "text": _mro(text.module.encoder.block[0].layer[1].DenseReluDense.wo),
                       "norm": _mro(dit.module.blocks[0].norm3)}
    g = torch.Generator().manual_seed(0)
    x, context = torch.randn(1, 16, 3, 4, 6, generator=g), torch.randn(1, 9, 64, generator=g)
    device = dit.patcher.load_device
    run_dit = lambda: dit.module(x.to(device), torch.tensor([0.6], device=device), context.to(device))  # noqa: E731
    header = files.read_header(dit.path)
    facts["dit"] = _load_and_run(dit, dit.patcher.model_size() // 3, run_dit, mm)
    facts["dit"]["file_bytes"] = sum(t.end - t.start for t in header.tensors.values())
    run_text = lambda: text.module.encode(["a red ball moving left over the hill"])[0]  # noqa: E731
    facts["text"] = _load_and_run(text, text.patcher.model_size() // 3, run_text, mm)
    header = files.read_header(text.path)
    facts["text"]["file_bytes"] = sum(t.end - t.start for t in header.tensors.values())
    facts["text"]["tokenizer_bytes"] = header.tensors["spiece_model"].end - header.tensors["spiece_model"].start

    plain = SoraDiffusionModelLoader().load(FAMILIES["2.1"][0], "fp8_e4m3fn", "default")[0]
    fast = SoraDiffusionModelLoader().load(FAMILIES["2.1"][0], "fp8_e4m3fn_fast", "default")[0]
    outs = []
    for part in (plain, fast):
        part.load()
        with torch.no_grad():
            outs.append(part.module(x.to(part.device), torch.tensor([0.6], device=part.device),
                                    context.to(part.device)).float().cpu())
    facts["fp8_fast"] = {"supported": mm.supports_fp8_compute(device), "base": _mro(fast.module.blocks[0].ffn[0])[1],
                         "weight_dtype": str(fast.module.blocks[0].ffn[0].weight.dtype),
                         "rel_vs_plain_fp8": float((outs[1] - outs[0]).norm() / outs[0].norm())}
    del plain, fast
    mm.unload_all_models()

    facts["previews"], facts["graph"] = {}, {}
    for family, (dit_name, vae_name, channels, _) in FAMILIES.items():
        part = SoraDiffusionModelLoader().load(dit_name, "default", "default")[0]
        x0 = torch.randn(1, channels, 1, 4, 6, generator=g)
        kind, image, _ = host.previewer(part)(x0)
        fmt = comfy.latent_formats.Wan22() if channels == 48 else comfy.latent_formats.Wan21()
        core = latent_preview.Latent2RGBPreviewer(fmt.latent_rgb_factors, fmt.latent_rgb_factors_bias)
        facts["previews"][family] = {"format": type(fmt).__name__, "channels": fmt.latent_channels, "size": list(image.size),
                                     "equal_to_core": np.array_equal(np.asarray(image), np.asarray(core.decode_latent_to_preview(x0)))}

        vae = SoraVAELoader().load(vae_name, "default")[0]
        names, loads, load_models_gpu = {id(part.patcher): "dit", id(text.patcher): "text", id(vae.patcher): "vae"}, [], \
            mm.load_models_gpu

        def spy(models, memory_required=0, force_full_load=False, **kw):
            loads.append([names[id(m)] for m in models] + [memory_required, force_full_load])
            return load_models_gpu(models, memory_required=memory_required, force_full_load=force_full_load, **kw)

        mm.load_models_gpu = spy
        encode = SoraTextEncode().encode
        positive, negative = encode(text, "a red ball moving left")[0], encode(text, "")[0]
        size = vae.config.pixel_multiple * 2
        latent = SoraPatchifyGrid().make(vae, "custom", 64, size, size, 9, 1)["result"][0]
        shown = []
        bar = host.Progress.update
        host.Progress.update = lambda self, value, total=None, preview=None: shown.append(preview) or bar(self, value, total, preview)
        try:
            out = SoraDiTSampler().sample(part, positive, negative, latent, 3, 2, 3.0, 0.0, "euler")[0]
        finally:
            host.Progress.update = bar
        frames = SoraVAEDecode().decode(vae, out, 1, 0)[0]
        mm.load_models_gpu = load_models_gpu
        loaded = sorted(kind for kind, p in (("dit", part), ("text", text), ("vae", vae))
                        if any(m.model is p.patcher for m in mm.current_loaded_models))
        facts["graph"][family] = {"frames": list(frames.shape), "size": size, "finite": bool(torch.isfinite(frames).all()),
                                  "previews": sum(p is not None for p in shown), "loaded": loaded, "loads": loads}
    return facts


if __name__ == "__main__":
    print(json.dumps(host_facts(Path(sys.argv[1]))))
