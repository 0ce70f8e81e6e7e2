"""The Wan 2.1 / 2.2 VAEs: tiny random files in the original key layout, loaded the way the shared
loader does (meta device + assign), equal to diffusers' AutoencoderKLWan; streaming, tiling, the
causal history primitive, loading errors and the decode-memory estimate."""

from __future__ import annotations

import re

import pytest
import torch
from safetensors.torch import load_file, save_file

from sora_core.wan.vae import (
    WAN21_VAE,
    WAN22_VAE,
    WanVAE,
    WanVAEConfig,
    config_from_shapes,
    decode_memory,
    expected_shapes,
)

TINY = {
    "2.1": WanVAEConfig("2.1", dim=8, dec_dim=8, z_dim=16),
    "2.2": WanVAEConfig("2.2", dim=8, dec_dim=12, z_dim=48),  # dec_dim != dim, as in the real 2.2 (160 / 256)
}


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


def write_random_file(path, config: WanVAEConfig, seed: int = 0) -> str:
    """A random VAE as a single safetensors file in the original layout (keys = Wan's module names)."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for key, shape in expected_shapes(config).items():
        t = torch.randn(shape, generator=g) * (0.3 if len(shape) > 1 else 0.1)
        if key.endswith("gamma"):
            t += 1.0
        if key.startswith("decoder.head.2."):
            t *= 0.1  # keep the decoded video inside [-1, 1], so the final clamp hides no difference
        sd[key] = t
    save_file(sd, str(path))
    return str(path)


def load(path: str) -> WanVAE:
    """What the shared loader does: config from the shapes, module on the meta device, assign the tensors."""
    sd = load_file(path)
    config = config_from_shapes({k: tuple(v.shape) for k, v in sd.items()})
    with torch.device("meta"):
        vae = WanVAE(config)
    vae.load_state_dict(sd, assign=True)
    return vae.eval()


@pytest.fixture(scope="module", params=["2.1", "2.2"])
def tiny(request, tmp_path_factory):
    path = write_random_file(tmp_path_factory.mktemp("wan") / f"wan{request.param}_vae.safetensors", TINY[request.param])
    return path, load(path)


def video(frames: int, h: int, w: int, seed: int = 1) -> torch.Tensor:
    return torch.rand(1, 3, frames, h, w, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def size(vae: WanVAE, cells: tuple[int, int] = (2, 3)) -> tuple[int, int]:
    return cells[0] * vae.spatial_factor, cells[1] * vae.spatial_factor


# -- equal to the reference ------------------------------------------------------------------
_RESNET = {"0.gamma": "norm1.gamma", "2.weight": "conv1.weight", "2.bias": "conv1.bias",
           "3.gamma": "norm2.gamma", "6.weight": "conv2.weight", "6.bias": "conv2.bias"}


def wan22_to_diffusers(sd: dict) -> dict:
    """Original Wan 2.2 VAE keys -> diffusers' names (the renames of diffusers' own
    scripts/convert_wan_to_diffusers.py; its 0.42.1 single-file converter knows only the 2.1 layout)."""
    rules = [
        (r"^(encoder|decoder)\.conv1\.", r"\1.conv_in."), (r"^conv1\.", "quant_conv."), (r"^conv2\.", "post_quant_conv."),
        (r"^(encoder|decoder)\.head\.0\.", r"\1.norm_out."), (r"^(encoder|decoder)\.head\.2\.", r"\1.conv_out."),
        (r"\.middle\.1\.", ".mid_block.attentions.0."), (r"\.middle\.0\.", ".mid_block.resnets.0."), (r"\.middle\.2\.", ".mid_block.resnets.1."),
        (r"^encoder\.downsamples\.(\d+)\.downsamples\.\d+\.(resample|time_conv)", r"encoder.down_blocks.\1.downsampler.\2"),
        (r"^decoder\.upsamples\.(\d+)\.upsamples\.\d+\.(resample|time_conv)", r"decoder.up_blocks.\1.upsampler.\2"),
        (r"^encoder\.downsamples\.(\d+)\.downsamples\.(\d+)\.", r"encoder.down_blocks.\1.resnets.\2."),
        (r"^decoder\.upsamples\.(\d+)\.upsamples\.(\d+)\.", r"decoder.up_blocks.\1.resnets.\2."),
        (r"\.shortcut\.", ".conv_shortcut."),
    ]
    out = {}
    for key, value in sd.items():
        for pattern, repl in rules:
            key = re.sub(pattern, repl, key)
        out[re.sub(r"\.residual\.(\d\.\w+)$", lambda m: "." + _RESNET[m[1]], key)] = value
    return out


def diffusers_vae(path: str, config: WanVAEConfig, tmp_path):
    from diffusers import AutoencoderKLWan

    common = dict(base_dim=config.dim, decoder_base_dim=config.dec_dim, z_dim=config.z_dim, dim_mult=list(config.dim_mult),
                  num_res_blocks=config.num_res_blocks, temperal_downsample=list(config.temporal_down),
                  latents_mean=list(config.latent_mean), latents_std=list(config.latent_std))
    if config.version == "2.1":
        # diffusers' own single-file path: its converter from the original layout, offline, with a local config
        AutoencoderKLWan(**common).save_config(str(tmp_path / "config"))
        return AutoencoderKLWan.from_single_file(path, config=str(tmp_path / "config"), local_files_only=True).eval()
    ref = AutoencoderKLWan(**common, is_residual=True, in_channels=12, out_channels=12, patch_size=2,
                           scale_factor_spatial=16).eval()
    ref.load_state_dict(wan22_to_diffusers(load_file(path)), strict=True)
    return ref


@torch.no_grad()
def test_encode_and_decode_equal_diffusers_autoencoder_kl_wan(tiny, tmp_path):
    path, vae = tiny
    ref = diffusers_vae(path, vae.config, tmp_path)
    x = video(9, *size(vae))  # frame 0, then two 4-frame chunks: the cache carries across both
    z = vae.encode(x)
    mean = torch.tensor(vae.config.latent_mean).view(1, -1, 1, 1, 1)
    std = torch.tensor(vae.config.latent_std).view(1, -1, 1, 1, 1)
    z_ref = (ref.encode(x).latent_dist.mean - mean) * (1.0 / std)  # diffusers pipelines' normalisation
    assert z.shape == (1, vae.config.z_dim, 3, 2, 3) and z.dtype == torch.float32
    assert rel(z, z_ref) < 1e-5

    y = vae.decode(z)
    y_ref = ref.decode(z / (1.0 / std) + mean).sample
    assert y.shape == x.shape
    assert (y_ref.abs() < 1).float().mean() > 0.95  # the comparison is not hidden by the clamp
    assert rel(y, y_ref) < 1e-5


# -- streaming --------------------------------------------------------------------------------
@torch.no_grad()
def test_chunked_decode_and_encode_equal_whole_clip_calls(tiny):
    _, vae = tiny
    x = video(13, *size(vae))
    z = vae.encode(x)
    assert rel(vae.encode(x, chunk=3), z) < 1e-5  # all three 4-frame chunks in one call
    one = vae.decode(z, chunk=1)  # Wan's own schedule: one latent frame per call
    whole = vae.decode(z, chunk=z.shape[2])  # frame 0, then the rest of the clip in one call
    assert one.shape == (1, 3, 13, *size(vae))
    assert rel(whole, one) < 1e-5


@torch.no_grad()
def test_progress_is_reported_once_per_chunk_and_tile(tiny):
    _, vae = tiny
    z = torch.randn(1, vae.config.z_dim, 3, 4, 4)
    calls = []
    vae.decode(z, tile=2, overlap=0, progress=lambda done, total: calls.append((done, total)))
    assert calls == [(i, 12) for i in range(1, 13)]  # 4 tiles x (frame 0 + 2 latent frames)


# -- tiling -----------------------------------------------------------------------------------
@torch.no_grad()
def test_tiled_decode_is_each_tile_decoded_alone_blended_in_the_overlaps(tiny):
    _, vae = tiny
    s = vae.spatial_factor
    z = vae.encode(video(5, 6 * s, 6 * s))
    tiled = vae.decode(z, tile=4, overlap=2)  # 6x6 latent cells: 2x2 tiles at 0 and 2, overlapping by 2
    full = vae.decode(z)
    # where only one tile reaches, the output is exactly that tile's own decode
    corners = {(0, 0): (slice(0, 2 * s), slice(0, 2 * s)), (2, 2): (slice(4 * s, 6 * s), slice(4 * s, 6 * s))}
    for (y, x), (py, px) in corners.items():
        alone = vae.decode(z[..., y : y + 4, x : x + 4])
        assert torch.allclose(tiled[..., py, px], alone[..., py.start - y * s : py.stop - y * s, px.start - x * s : px.stop - x * s], atol=1e-6)
    # against the untiled decode: random weights and the per-frame global attention in the middle
    # block make tile seams large here (measured rel ~0.25 for both versions; real weights are far
    # smoother); misplaced or unnormalised tiles would give rel >= 1
    assert rel(tiled, full) < 0.5
    assert torch.equal(vae.decode(z, tile=8), full)  # a tile bigger than the grid is no tiling
    assert torch.equal(vae.decode(z, tile=0), full)  # 0 is no tiling, as for our VAE (Pipeline's decode_tile=0)


@torch.no_grad()
def test_tiled_encode_blends_latents_of_overlapping_tiles(tiny):
    _, vae = tiny
    s = vae.spatial_factor
    x = video(5, 6 * s, 6 * s)
    full = vae.encode(x)
    tiled = vae.encode(x, tile=4, overlap=2)
    assert tiled.shape == full.shape
    alone = vae.encode(x[..., : 4 * s, : 4 * s])
    assert torch.allclose(tiled[..., :2, :2], alone[..., :2, :2], atol=1e-6)
    assert rel(tiled, full) < 0.6  # measured ~0.35 with random weights


# -- causality across chunks: the history primitive --------------------------------------------
@torch.no_grad()
def test_a_chunk_latent_depends_on_its_history_and_the_primitive_gives_the_in_clip_latents(tiny):
    _, vae = tiny
    x = video(17, *size(vae))
    clip = vae.encode(x)  # (1, C, 5, h, w)
    last8 = clip[:, :, -2:]
    # the last 8 frames encoded on their own (after just the one frame before them) differ a lot:
    alone = vae.encode(x[:, :, -9:])[:, :, 1:]
    assert rel(alone, last8) > 0.1  # measured ~1.1 with random weights (2.1 and 2.2)
    # with the true history they are exactly the latents they have inside the whole clip
    assert torch.equal(vae.encode(x[:, :, -8:], history=x[:, :, :-8]), last8)
    assert torch.equal(vae.encode(x[:, :, 5:13], history=x[:, :, :5]), clip[:, :, 2:4])
    # and the same under spatial tiling (each tile streams its own history)
    s = vae.spatial_factor
    wide = video(9, 2 * s, 6 * s)
    assert torch.equal(vae.encode(wide[:, :, 1:], history=wide[:, :, :1], tile=4, overlap=2),
                       vae.encode(wide, tile=4, overlap=2)[:, :, 1:])


def test_history_and_inputs_are_checked_before_any_work(tiny):
    _, vae = tiny
    h, w = size(vae)
    with pytest.raises(ValueError, match=r"frames=8 is not allowed.*1 \+ 4\*k"):
        vae.encode(video(8, h, w))
    with pytest.raises(ValueError, match="multiple of 4"):
        vae.encode(video(6, h, w), history=video(5, h, w))
    with pytest.raises(ValueError, match=r"frames=4 is not allowed"):
        vae.encode(video(4, h, w), history=video(4, h, w))
    bad = w + vae.spatial_factor // 2
    with pytest.raises(ValueError, match=f"width={bad} is not allowed: it must be a positive multiple of {vae.spatial_factor}"):
        vae.encode(video(5, h, bad))
    with pytest.raises(ValueError, match=r"overlap=2 is not allowed with tile=2"):
        vae.decode(torch.zeros(1, vae.config.z_dim, 2, 2, 3), tile=2, overlap=2)
    with pytest.raises(ValueError, match=f"latents must be \\(batch, {vae.config.z_dim}"):
        vae.decode(torch.zeros(1, 4, 2, 2, 3))


# -- dtypes -----------------------------------------------------------------------------------
@torch.no_grad()
def test_bf16_weights_run_in_bf16_and_stay_close_to_fp32(tiny):
    path, vae = tiny
    half = load(path).to(torch.bfloat16)
    seen = set()
    hook = half.decoder.conv1.register_forward_hook(lambda m, i, o: seen.add(o.dtype))
    x = video(5, *size(vae))
    z, z16 = vae.encode(x), half.encode(x)
    y, y16 = vae.decode(z), half.decode(z)
    hook.remove()
    assert seen == {torch.bfloat16} and z16.dtype == y16.dtype == torch.float32
    assert rel(z16, z) < 0.05 and rel(y16, y) < 0.05


# -- loading ------------------------------------------------------------------------------------
def test_full_size_layouts_are_detected_and_count_as_many_parameters_as_diffusers():
    from diffusers import AutoencoderKLWan

    reference = {
        WAN21_VAE: dict(base_dim=96, z_dim=16),
        WAN22_VAE: dict(base_dim=160, decoder_base_dim=256, z_dim=48, is_residual=True, in_channels=12,
                        out_channels=12, patch_size=2, scale_factor_spatial=16),
    }
    counts = {}
    for config, kwargs in reference.items():
        shapes = expected_shapes(config)
        assert config_from_shapes(shapes) == config
        with torch.device("meta"):
            ref = AutoencoderKLWan(temperal_downsample=[False, True, True], **kwargs)
        counts[config.version] = sum(torch.Size(s).numel() for s in shapes.values())
        assert counts[config.version] == sum(p.numel() for p in ref.parameters())
    assert 126e6 < counts["2.1"] < 128e6  # the published 127M Wan-VAE
    assert 700e6 < counts["2.2"] < 710e6  # wan2.2_vae.safetensors: 1.41 GB in fp16
    assert (WAN21_VAE.spatial_factor, WAN21_VAE.temporal_factor) == (8, 4)
    assert (WAN22_VAE.spatial_factor, WAN22_VAE.temporal_factor) == (16, 4)


def test_wrong_shape_names_the_key_and_both_shapes():
    shapes = dict(expected_shapes(TINY["2.1"]))
    key = "decoder.middle.0.residual.2.weight"
    good = shapes[key]
    shapes[key] = (good[0], good[1] + 1, *good[2:])
    with pytest.raises(ValueError) as err:
        config_from_shapes(shapes)
    message = str(err.value)
    assert key in message and str(shapes[key]) in message and str(good) in message


def test_other_files_are_refused_by_name():
    with pytest.raises(ValueError, match="not a Wan VAE"):
        config_from_shapes({"encoder.down.0.block.0.conv1.weight": (128, 128, 3, 3)})
    shapes = dict(expected_shapes(TINY["2.1"]))
    shapes.pop("decoder.head.2.bias")
    shapes["decoder.extra.weight"] = (1,)
    with pytest.raises(ValueError, match=r"decoder\.head\.2\.bias .* is missing.*decoder\.extra\.weight is not a key"):
        config_from_shapes(shapes)
    with pytest.raises(ValueError, match="z_dim=4 is not allowed for a Wan 2.1 VAE: it has 16 latent channels"):
        WanVAE(WanVAEConfig("2.1", 8, 8, 4))


# -- memory -------------------------------------------------------------------------------------
def test_decode_memory_grows_with_frames_only_through_the_output_and_tiling_bounds_the_rest():
    short = decode_memory(TINY["2.1"], 256, 256, 17)
    long = decode_memory(TINY["2.1"], 256, 256, 81)
    assert long["working"] == short["working"]
    assert long["output"] == (3 * 81 + 1) * 256 * 256 * 4  # fp32 video + its blend-weight map
    tiled = decode_memory(TINY["2.1"], 256, 256, 81, tile=8, overlap=2)
    assert tiled["working"] < short["working"] / 4  # a 64x64 tile instead of 256x256 pixels
    assert tiled["weights"] == sum(torch.Size(s).numel() for s in expected_shapes(TINY["2.1"]).values()) * 2  # bf16
    assert long["total"] == long["weights"] + long["working"] + long["output"]
