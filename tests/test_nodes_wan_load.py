"""The part loaders, called directly (no ComfyUI): Wan files listed from a ComfyUI-style models folder
(SORA_COMFY_MODELS) under their real names, loaded, and run end to end through today's Sora nodes;
a Sora checkpoint in any loader; wrong files named with their folder and what was expected."""

from __future__ import annotations

import re
import shutil

import pytest
import torch
from safetensors.torch import load_file

from nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS, host
from nodes.latent import SoraPatchifyGrid, SoraVAEDecode, SoraVAEEncode
from nodes.loader import SoraDiffusionModelLoader, SoraModelLoader, SoraTextEncoderLoader, SoraVAELoader
from nodes.sampler import SoraDiTSampler
from nodes.text import SoraTextEncode
from sora_core.wan import files
from sora_core.wan.dit import WanConfig

from .test_wan_dit import write
from .wan_files import FAMILIES, TEXT_ENCODER, write_wan_models


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest


@pytest.fixture(scope="module")
def models(tmp_path_factory, micro_checkpoint):
    root = tmp_path_factory.mktemp("models")
    write_wan_models(root)
    (root / "sora").mkdir()
    shutil.copy(micro_checkpoint, root / "sora" / "micro.safetensors")
    return root


@pytest.fixture(autouse=True)
def comfy_models(models, monkeypatch):
    monkeypatch.setenv(host.MODELS_ENV, str(models))
    monkeypatch.delenv("SORA_MODEL", raising=False)


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def wan(request, models):
    """One family's (DiT, VAE, text encoder) parts, loaded by the nodes from the folders."""
    dit_name, vae_name, _, _ = FAMILIES[request.param]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(host.MODELS_ENV, str(models))
        return (request.param, SoraDiffusionModelLoader().load(dit_name, "default", "default")[0],
                SoraVAELoader().load(vae_name, "default")[0], SoraTextEncoderLoader().load(TEXT_ENCODER, "default")[0])


def combo(cls, name):
    return cls.INPUT_TYPES()["required"][name][0]


# -- listing ----------------------------------------------------------------------------------------

def test_the_loaders_are_registered_under_the_contracts_names():
    for node_id, display in (("SoraDiffusionModelLoader", "Sora Load Diffusion Model"), ("SoraVAELoader", "Sora Load VAE 3D"),
                             ("SoraTextEncoderLoader", "Sora Load Text Encoder")):
        assert NODE_DISPLAY_NAME_MAPPINGS[node_id] == display
        assert NODE_CLASS_MAPPINGS[node_id].RETURN_NAMES == {"SoraDiffusionModelLoader": ("model",),
                                                             "SoraVAELoader": ("vae",),
                                                             "SoraTextEncoderLoader": ("text_encoder",)}[node_id]


def test_each_loader_lists_its_comfyui_folders_ours_and_the_shipped_model(models):
    default = host.DEFAULT_MODEL_NAME
    assert combo(SoraDiffusionModelLoader, "model_name") == [
        default, "wan2.1_t2v_1.3B_fp16.safetensors", "wan2.2_ti2v_5B_fp16.safetensors", "micro.safetensors"]
    assert combo(SoraVAELoader, "vae_name") == [default, "wan2.2_vae.safetensors", "wan_2.1_vae.safetensors",
                                                "micro.safetensors"]
    assert combo(SoraTextEncoderLoader, "text_encoder_name") == [default, TEXT_ENCODER, "micro.safetensors"]
    assert SoraDiffusionModelLoader.INPUT_TYPES()["required"]["weight_dtype"][0] == [
        "default", "fp8_e4m3fn", "fp8_e4m3fn_fast", "fp8_e5m2", "bfloat16", "float16", "float32"]


def test_core_legacy_folders_unet_and_clip_and_subfolders_are_listed_too(models):
    (models / "unet" / "wan").mkdir(parents=True)
    (models / "clip").mkdir()
    try:
        shutil.copy(models / "diffusion_models" / "wan2.1_t2v_1.3B_fp16.safetensors", models / "unet" / "wan" / "a.safetensors")
        shutil.copy(models / "text_encoders" / TEXT_ENCODER, models / "clip" / "b.safetensors")
        assert "wan/a.safetensors" in combo(SoraDiffusionModelLoader, "model_name")
        assert "b.safetensors" in combo(SoraTextEncoderLoader, "text_encoder_name")
        assert SoraDiffusionModelLoader().load("wan/a.safetensors", "default", "cpu")[0].family == "wan"
    finally:
        shutil.rmtree(models / "unet")
        shutil.rmtree(models / "clip")


def test_without_a_models_folder_only_the_shipped_model_is_listed(monkeypatch):
    monkeypatch.delenv(host.MODELS_ENV)
    for cls, name in ((SoraDiffusionModelLoader, "model_name"), (SoraVAELoader, "vae_name"),
                      (SoraTextEncoderLoader, "text_encoder_name")):
        assert combo(cls, name) == [host.DEFAULT_MODEL_NAME]


# -- loading -----------------------------------------------------------------------------------------

def test_wan_parts_carry_their_family_config_and_the_dits_vae_family(wan):
    family, dit, vae, text = wan
    channels = FAMILIES[family][2]
    assert (dit.family, vae.family, text.family) == ("wan", "wan", "wan")
    assert all(isinstance(p.config, WanConfig) for p in (dit, vae, text))
    assert dit.config.vae.latent_channels == vae.config.vae.latent_channels == channels  # the DiT alone knows its VAE
    assert dit.config.text.dim == text.config.text.dim == text.module.config.dim
    assert (dit.partial, text.partial, vae.partial) == (True, True, False)  # ComfyUI may load those two in part
    assert dit.path.endswith(FAMILIES[family][0]) and dit.module.blocks[0].ffn[0].weight.dtype == torch.float16
    q = text.module.encoder.block[0].layer[0].SelfAttention.q
    assert q.weight.dtype == torch.float8_e4m3fn and q.weight_scale is not None  # the scaled fp8 file, as stored


def test_wan_files_run_end_to_end_through_text_encode_grid_sampler_and_decode(wan):
    family, dit, vae, text = wan
    encode = SoraTextEncode().encode
    positive, negative = encode(text, "a red ball moving left")[0], encode(text, "")[0]
    assert positive[0][0].shape == (1, 512, text.module.config.dim)
    size = vae.config.pixel_multiple * 2
    latent = SoraPatchifyGrid().make(vae, "custom", 64, size, size, 9, 1)["result"][0]
    out = SoraDiTSampler().sample(dit, positive, negative, latent, 3, 2, 3.0, 0.0, "euler")[0]
    assert out["samples"].shape == latent["samples"].shape and not torch.equal(out["samples"], latent["samples"])
    frames = SoraVAEDecode().decode(vae, out, 1, 0)[0]
    assert frames.shape == (9, size, size, 3) and torch.isfinite(frames).all() and frames.std() > 0.01
    again = SoraDiTSampler().sample(dit, positive, negative, latent, 3, 2, 3.0, 0.0, "euler")[0]
    assert torch.equal(again["samples"], out["samples"])  # seeded


def test_wan_vae_encode_then_decode_streams_any_frame_count(wan):
    family, _, vae, _ = wan
    size = vae.config.pixel_multiple
    images = torch.rand(9, size, size, 3, generator=torch.Generator().manual_seed(0))
    latent = SoraVAEEncode().encode(vae, images, 1)[0]
    assert latent["samples"].shape == (1, FAMILIES[family][2], 3, size // vae.config.vae.spatial_factor,
                                       size // vae.config.vae.spatial_factor)
    whole = SoraVAEDecode().decode(vae, latent, 4, 0)[0]
    streamed = SoraVAEDecode().decode(vae, latent, 1, 0)[0]  # one latent frame at a time, through the causal cache
    assert whole.shape == (9, size, size, 3) and (whole - streamed).abs().max() < 1e-4
    tiled = SoraVAEDecode().decode(vae, {"samples": torch.randn(1, FAMILIES[family][2], 2, 10, 10)}, 1, 8)[0]
    assert tiled.shape == (5, 10 * vae.config.vae.spatial_factor, 10 * vae.config.vae.spatial_factor, 3)


def test_fp8_weight_dtype_casts_the_linear_weights_only_and_stays_close(models):
    name = FAMILIES["2.1"][0]
    default = SoraDiffusionModelLoader().load(name, "float32", "default")[0].module
    fp8 = SoraDiffusionModelLoader().load(name, "fp8_e4m3fn", "default")[0].module
    block = fp8.blocks[0]
    assert block.ffn[0].weight.dtype == block.self_attn.q.weight.dtype == torch.float8_e4m3fn
    assert block.norm3.weight.dtype == block.modulation.dtype == fp8.patch_embedding.weight.dtype == torch.float16
    x = torch.randn(1, 16, 2, 4, 4, generator=torch.Generator().manual_seed(1))
    context = torch.randn(1, 7, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        want, got = default(x, torch.tensor([0.5]), context), fp8(x, torch.tensor([0.5]), context)
    assert ((got - want).norm() / want.norm()) < 0.1


def test_a_sora_checkpoint_in_any_loader_gives_that_part_of_it(micro_model):
    dit = SoraDiffusionModelLoader().load("micro.safetensors", "default", "default")[0]
    vae = SoraVAELoader().load("micro.safetensors", "default")[0]
    text = SoraTextEncoderLoader().load("micro.safetensors", "default")[0]
    assert (dit.kind, vae.kind, text.kind) == ("dit", "vae", "text")
    assert all(p.family == "sora" and p.config.name == "micro" and not p.partial for p in (dit, vae, text))
    assert dit.latent_rgb is not None and dit.preview_vae is not None
    for mine, theirs in ((dit, micro_model.dit), (vae, micro_model.vae), (text, micro_model.text)):
        assert torch.equal(next(mine.module.parameters()), next(theirs.parameters()))
    with pytest.raises(ValueError, match=r"weight_dtype='fp8_e4m3fn' is for Wan diffusion models; the Sora checkpoint"):
        SoraDiffusionModelLoader().load("micro.safetensors", "fp8_e4m3fn", "default")


# -- refusals ---------------------------------------------------------------------------------------

def test_a_file_in_the_wrong_folder_is_named_with_the_folder_what_was_expected_and_its_loader(models):
    misplaced = [(models / "vae" / "wan_2.1_vae.safetensors", models / "diffusion_models"),
                 (models / "diffusion_models" / "wan2.2_ti2v_5B_fp16.safetensors", models / "text_encoders"),
                 (models / "vae" / "wan_2.1_vae.safetensors", models / "sora")]
    for file, folder in misplaced:
        shutil.copy(file, folder / file.name)
    try:
        with pytest.raises(ValueError) as err:
            SoraDiffusionModelLoader().load("wan_2.1_vae.safetensors", "default", "default")
        message = str(err.value)
        assert message.startswith("model_name='wan_2.1_vae.safetensors' is not what Sora Load Diffusion Model takes "
                                  "from diffusion_models (or unet): a Wan 2.1 / 2.2 diffusion model such as")
        path = models / "diffusion_models" / "wan_2.1_vae.safetensors"
        assert f"'{path}' is a wan VAE (wan2.1-vae): Wan 2.1 VAE: 16 latent channels, 4x8x8 compression, not a " \
               f"diffusion model. sora_core reads Wan 2.1 / 2.2 diffusion models" in message
        assert message.endswith("It belongs in Sora Load VAE 3D.")
        with pytest.raises(ValueError, match=r"text_encoder_name='wan2.2_ti2v_5B_fp16.safetensors' is not what Sora "
                                             r"Load Text Encoder takes .*It belongs in Sora Load Diffusion Model\.$"):
            SoraTextEncoderLoader().load("wan2.2_ti2v_5B_fp16.safetensors", "default")
        with pytest.raises(ValueError, match=r"ckpt_name='wan_2.1_vae.safetensors' is a wan VAE \(wan2.1-vae\), not a "
                                             r"Sora checkpoint; load Wan files with Sora Load Diffusion Model"):
            SoraModelLoader().load("wan_2.1_vae.safetensors", "auto", "default")
    finally:
        for file, folder in misplaced:
            (folder / file.name).unlink()


def test_a_missing_file_names_every_folder_it_may_go_in(models):
    with pytest.raises(FileNotFoundError) as err:
        SoraVAELoader().load("wan2.2_vae_missing.safetensors", "default")
    folders = " or ".join(repr(str(d)) for d in (models / "vae", models / "sora", host.SHIPPED_MODELS_DIR))
    assert str(err.value) == (f"VAE 'wan2.2_vae_missing.safetensors' was not found; put the .safetensors file in "
                              f"{folders}")
    with pytest.raises(ValueError, match=r"vae_name='../text_encoders/x' is not allowed"):
        SoraVAELoader().load("../text_encoders/x", "default")


def test_gguf_unknown_and_tokenizerless_files_are_refused_by_name_before_loading(models, monkeypatch):
    gguf = models / "diffusion_models" / "wan2.1-t2v-1.3b-Q4_K_M.gguf"
    gguf.write_bytes(b"GGUF\x03\x00\x00\x00" + bytes(64))
    no_tokenizer = models / "text_encoders" / "umt5-enc.safetensors"
    try:
        write(models / "diffusion_models" / "mystery.safetensors", {"foo.weight": torch.zeros(2, 2)})
        umt5 = load_file(str(models / "text_encoders" / TEXT_ENCODER))
        write(no_tokenizer, {k: v for k, v in umt5.items() if k != "spiece_model"})
        monkeypatch.setattr(files, "load_into", lambda *a, **k: pytest.fail("loaded weights"))
        with pytest.raises(ValueError, match=r"model_name='wan2.1-t2v-1.3b-Q4_K_M.gguf' is not what .* is a GGUF file "
                                             r"\(llama.cpp's quantised format\); it is refused without being opened"):
            SoraDiffusionModelLoader().load(gguf.name, "default", "default")
        with pytest.raises(ValueError, match=r"model_name='mystery.safetensors' .* is a file of no known layout"):
            SoraDiffusionModelLoader().load("mystery.safetensors", "default", "default")
        with pytest.raises(ValueError, match=re.escape("text_encoder_name='umt5-enc.safetensors' holds no tokenizer "
                                                       "(a `spiece_model` tensor); use ComfyUI's repackaged umt5 file")):
            SoraTextEncoderLoader().load("umt5-enc.safetensors", "default")
        with pytest.raises(ValueError, match=r"weight_dtype='int4' is not allowed"):
            SoraDiffusionModelLoader().load(FAMILIES["2.1"][0], "int4", "default")
    finally:
        for p in (gguf, no_tokenizer, models / "diffusion_models" / "mystery.safetensors"):
            p.unlink(missing_ok=True)


def test_every_weight_of_the_wan_dit_and_umt5_sits_in_a_layer_of_the_injected_ops():
    """What lets ComfyUI load them partially: its ModelPatcher moves or casts only layers it knows (comfy.ops
    classes, passed as `ops`); anything else would be left behind on the offload device. The modulation
    tables alone are plain parameters, cast where they are used."""
    from sora_core.wan.dit import WanDiT, WanDiTConfig
    from sora_core.wan.ops import TORCH
    from sora_core.wan.umt5 import UMT5Config, UMT5Encoder

    layers = tuple(vars(TORCH).values())
    with torch.device("meta"):
        models = (WanDiT(WanDiTConfig(dim=256, layers=2, heads=2, ffn_dim=512, text_dim=64)),
                  UMT5Encoder(UMT5Config(vocab_size=64, dim=64, inner_dim=64, heads=4, ffn_dim=96, layers=2)))
    for model in models:
        loose = {f"{n}.{p}" for n, m in model.named_modules() if not isinstance(m, layers)
                 for p, _ in m.named_parameters(recurse=False)}
        assert loose == ({"blocks.0.modulation", "blocks.1.modulation", "head.modulation"}
                         if isinstance(model, WanDiT) else set())
