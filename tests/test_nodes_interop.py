"""Our nodes and ComfyUI core on one wire: Wan latents in the VAE's raw space, per-frame conditioning as
core's noise_mask, core's CONDITIONING into our sampler. Headless, on tiny random Wan 2.1 (16 channels,
one t per sample) and Wan 2.2 TI2V (48 channels, a t per latent frame) files; the last test runs core's
own KSampler (skipped without COMFYUI_PATH)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import unicodedata
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from nodes import host, wires
from nodes import sampler as sampler_node
from nodes.latent import SoraPatchifyGrid, SoraVAEDecode, SoraVAEEncode
from nodes.long import SoraLongVideo
from nodes.sampler import SoraDiTSampler
from nodes.temporal import SoraAnimateImage, SoraConnect, SoraExtend, SoraLoop, SoraSDEditNoise
from nodes.text import SoraRecaption, SoraTextEncode
from sora_core.conditioning import TRANSITION_STRENGTH, frames_to_video
from sora_core.recaption import plain_text
from sora_core.wan.dit import WanConfig, WanDiTConfig, load_wan_dit
from sora_core.wan.umt5 import load_umt5
from sora_core.wan.vae import load_wan_vae

from .test_wan_dit import random_state, write
from .test_wan_pipeline import FAMILIES
from .wan_files import TEXT_DIM, spiece_model, tiny_dit, tiny_umt5, umt5_state
from .test_wan_vae import write_random_file

SIZE, FRAMES = 32, 9  # a multiple of both families' pixel multiple (16, 32); 3 latent frames
COMFYUI = os.environ.get("COMFYUI_PATH")
REPO = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest


@pytest.fixture(scope="module")
def text_encoder_file(tmp_path_factory):
    state = umt5_state(tiny_umt5()) | {"spiece_model": torch.frombuffer(bytearray(spiece_model()), dtype=torch.uint8)}
    return write(tmp_path_factory.mktemp("te") / "umt5_tiny.safetensors", state)


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def wan(request, tmp_path_factory, text_encoder_file):
    """One tiny Wan family as the loader nodes hand it on: hosted parts sharing one WanConfig."""
    channels, vae_config, _ = FAMILIES[request.param]
    folder = tmp_path_factory.mktemp(f"wan{request.param}")
    dit = load_wan_dit(write(folder / "dit.safetensors", random_state(tiny_dit(channels), seed=channels)))
    vae = load_wan_vae(write_random_file(folder / "vae.safetensors", vae_config))
    config = WanConfig(dit.config, vae.config, dit.variant)  # as Pipeline._load_wan builds it
    parts = SimpleNamespace(family=request.param, config=config, dit=host.host_part(dit, config, "dit"),
                            vae=host.host_part(vae, config, "vae"),
                            text=host.host_part(load_umt5(text_encoder_file), config, "text"))
    encode = SoraTextEncode().encode
    parts.prompts = encode(parts.text, "a red ball moving left")[0], encode(parts.text, "")[0]
    return parts


@pytest.fixture(scope="module")
def sora(micro_checkpoint):
    from nodes.loader import SoraModelLoader

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SORA_MODEL", micro_checkpoint)
        return SoraModelLoader().load(host.DEFAULT_MODEL_NAME, "auto", "default")


def video(frames: int = FRAMES, seed: int = 0) -> torch.Tensor:
    """A smooth clip (a colour ramp moving right) with a little noise."""
    x = torch.linspace(0, 1, SIZE)
    ramp = torch.stack([torch.stack([(x + t / frames) % 1, x.flip(0), torch.full_like(x, 0.3)], -1) for t in range(frames)])
    noise = torch.rand(frames, SIZE, SIZE, 3, generator=torch.Generator().manual_seed(seed))
    return (0.9 * ramp[:, None] + 0.1 * noise).clamp(0, 1)


def sample(parts, latent, positive=None, negative=None, seed=0, steps=2, cfg=3.0):
    positive = parts.prompts[0] if positive is None else positive
    negative = parts.prompts[1] if negative is None else negative
    return SoraDiTSampler().sample(parts.dit, positive, negative, latent, seed, steps, cfg, 0.0, "euler")[0]


def decode(parts, latent):
    return SoraVAEDecode().decode(parts.vae, latent, 4, 0)[0]


def per_frame(latent) -> list[float]:
    return latent["noise_mask"][0, 0, :, 0, 0].tolist()


def core_conditioning(states: torch.Tensor) -> list:
    """What core's CLIPLoader(type=wan) + CLIPTextEncode return: umt5 states padded to 512 tokens with the
    padding zeroed (min_length=512, zero_out_masked), no attention mask, a pooled_output of None."""
    return [[states, {"pooled_output": None}]]


def core_wan22_image_to_video_latent(vae_part, image: torch.Tensor, length: int, batch: int = 1) -> dict:
    """Core's Wan22ImageToVideoLatent, step by step (comfy_extras/nodes_wan.py): zeros, the image's raw latent
    (core's VAE encodes to raw latents) in the first latent frames, a mask of 0 there, and the generated frames
    set to Wan22's process_out(0); samples and mask repeated over the batch."""
    vae = vae_part.module
    t, h, w = (length - 1) // 4 + 1, SIZE // 16, SIZE // 16
    latent = torch.zeros(1, 48, t, h, w)
    mask = torch.ones(1, 1, t, h, w)
    raw = vae.denormalize(vae.encode(frames_to_video(image[:length])))  # core's VAE.encode: raw latents
    latent[:, :, : raw.shape[2]] = raw
    mask[:, :, : raw.shape[2]] *= 0.0
    mean = torch.tensor(vae.config.latent_mean).view(1, 48, 1, 1, 1)
    std = torch.tensor(vae.config.latent_std).view(1, 48, 1, 1, 1)
    latent = (latent * std / 1.0 + mean) * mask + latent * (1.0 - mask)  # Wan22().process_out(latent) * mask + ...
    return {"samples": latent.repeat(batch, 1, 1, 1, 1), "noise_mask": mask.repeat(batch, 1, 1, 1, 1)}


# -- the latent space on the wire --------------------------------------------------------------------

def test_wire_conversion_is_the_vaes_own_normalisation_both_ways(wan):
    vae = wan.vae.module
    raw = torch.randn(2, wan.config.vae.latent_channels, 3, 4, 4) * 3 + 1
    z = wires.to_model(raw, wan.config)
    assert torch.allclose(z, vae.normalize(raw), atol=1e-6) and torch.allclose(wires.to_wire(z, wan.config), raw, atol=1e-5)
    assert torch.allclose(wires.to_wire(z, wan.config), vae.denormalize(z), atol=1e-5)
    assert (z - raw).abs().mean() > 0.1  # the two spaces really differ


def test_our_own_models_latents_travel_as_they_are(sora):
    z = torch.randn(1, 4, 3, 8, 8)
    config = sora[0].config
    assert torch.equal(wires.to_wire(z, config), z) and torch.equal(wires.to_model(z, config), z)
    assert torch.equal(SoraPatchifyGrid().make(sora[2], "custom", 64, 32, 32, 9, 1)["result"][0]["samples"],
                       torch.zeros(1, 4, 3, 8, 8))


def test_vae_encode_gives_raw_latents_that_vae_decode_reads_back(wan):
    clip = video()
    (latent,) = SoraVAEEncode().encode(wan.vae, clip, 8)
    z = wan.vae.module.encode(frames_to_video(clip))
    assert torch.allclose(latent["samples"], wan.vae.module.denormalize(z), atol=1e-5) and "noise_mask" not in latent
    frames = decode(wan, latent)
    direct = wan.vae.module.decode(z)
    assert frames.shape == clip.shape and torch.allclose(frames, (direct[0].permute(1, 2, 3, 0) + 1) / 2, atol=1e-4)


def test_patchify_grid_gives_raw_zeros_of_the_normalised_space_and_samples(wan):
    latent = SoraPatchifyGrid().make(wan.vae, "custom", 64, SIZE, SIZE, FRAMES, 2)["result"][0]
    mean = torch.tensor(wan.config.vae.latent_mean).view(1, -1, 1, 1, 1)
    s = wan.config.vae.spatial_factor
    assert latent["samples"].shape == (2, wan.config.vae.latent_channels, 3, SIZE // s, SIZE // s)
    assert torch.allclose(latent["samples"], mean.expand_as(latent["samples"])) and "noise_mask" not in latent
    frames = decode(wan, sample(wan, latent))
    assert frames.shape == (2 * FRAMES, SIZE, SIZE, 3) and frames.std() > 0.01


# -- our temporal nodes on Wan, end to end ------------------------------------------------------------

def given_frames_kept(latent, out):
    given = latent["noise_mask"][0, 0, :, 0, 0] == 0
    assert given.any() and (~given).any()
    assert torch.equal(out["samples"][:, :, given], latent["samples"][:, :, given])  # bit for bit, in raw space
    assert not torch.equal(out["samples"][:, :, ~given], latent["samples"][:, :, ~given])


@pytest.mark.parametrize("position", ["first", "last"])
def test_animate_image_keeps_the_image_on_wan(wan, position):
    image = video(1, seed=3)
    (latent,) = SoraAnimateImage().build(wan.vae, image, 9, position, blend_frames=2)
    assert per_frame(latent) == ([0, 1, 1] if position == "first" else [1, 1, 0])
    out = sample(wan, latent)
    given_frames_kept(latent, out)
    frames = decode(wan, out)
    assert frames.shape == (9, SIZE, SIZE, 3) and torch.equal(frames[0 if position == "first" else -1], image[0])


@pytest.mark.parametrize("direction", ["forward", "backward"])
def test_extend_keeps_the_source_on_wan(wan, direction):
    clip = video()
    (latent,) = SoraExtend().build(wan.vae, clip, direction, 4, 4, blend_frames=0)
    out = sample(wan, latent)
    given_frames_kept(latent, out)
    frames = decode(wan, out)
    assert frames.shape == (FRAMES + 4, SIZE, SIZE, 3)
    assert torch.equal(frames[:FRAMES], clip) if direction == "forward" else torch.equal(frames[4:], clip)


def test_loop_and_connect_keep_the_sources_on_wan(wan):
    clip, other = video(), video(seed=1).flip(0)
    (looped,) = SoraLoop().build(wan.vae, clip, 4, 4, blend_frames=0)
    out = sample(wan, looped)
    given_frames_kept(looped, out)
    frames = decode(wan, out)
    assert frames.shape == (FRAMES + 4, SIZE, SIZE, 3) and torch.equal(frames[:FRAMES], clip)
    (joined,) = SoraConnect().build(wan.vae, clip, other, 4, 4, blend_frames=2)
    assert per_frame(joined) == pytest.approx([0, 0, TRANSITION_STRENGTH, 0])  # the transition from a dissolve
    out = sample(wan, joined)
    given_frames_kept(joined, out)
    frames = decode(wan, out)
    assert frames.shape == (2 * FRAMES + 4, SIZE, SIZE, 3)
    assert torch.equal(frames[: FRAMES - 2], clip[:-2]) and torch.equal(frames[-FRAMES + 2 :], other[2:])


def test_decode_settles_the_tail_of_a_causal_vae_as_the_pipeline_does(wan, monkeypatch):
    from sora_core import conditioning as cond

    clip = video()
    (latent,) = SoraExtend().build(wan.vae, clip, "backward", 4, 4, blend_frames=2)  # the clip is the tail
    out = sample(wan, latent)
    calls = []
    encode = cond.encode_chunk_frames
    monkeypatch.setattr(cond, "encode_chunk_frames", lambda v, f, history=None: calls.append(history) or encode(
        v, f, history=history))
    frames = decode(wan, out)
    assert len(calls) == 1 and calls[0].shape == (1, 3, 5, SIZE, SIZE)  # re-encoded after the 5 frames before it
    window = cond.Window(wires.to_model(out["samples"], wan.config), torch.zeros(1, 3), out["sora_splice"],
                         out["sora_tail"])
    assert torch.allclose(frames, cond.decode(wan.vae.module, window, window.samples, chunk=4), atol=1e-5)


def test_decode_reads_a_latent_whatever_its_noise_mask(wan):
    """Core's KSampler keeps the noise_mask on its output, e.g. a regional inpainting mask: decoding ignores it."""
    (encoded,) = SoraVAEEncode().encode(wan.vae, video(), 8)
    regional = dict(encoded, noise_mask=torch.rand(1, 1, 3, 4, 4))
    assert torch.equal(decode(wan, regional), decode(wan, encoded))


def test_sdedit_on_wan_redraws_by_strength_and_keeps_given_frames(wan):
    (encoded,) = SoraVAEEncode().encode(wan.vae, video(), 8)
    (kept,) = SoraSDEditNoise().set_strength(encoded, 0.0)
    assert torch.equal(sample(wan, kept)["samples"], encoded["samples"])
    change = [(sample(wan, SoraSDEditNoise().set_strength(encoded, s)[0], seed=3)["samples"]
               - encoded["samples"]).abs().mean() for s in (0.2, 0.9)]
    assert 0 < change[0] < change[1]
    (window,) = SoraExtend().build(wan.vae, video(), "forward", 4, 4)
    (marked,) = SoraSDEditNoise().set_strength(window, 0.6)
    assert per_frame(marked) == pytest.approx([0, 0, 0.6])
    given_frames_kept(marked, sample(wan, marked))


# -- core-made latents and conditioning into our sampler --------------------------------------------

def test_core_wan22_image_to_video_latent_keeps_its_image_bit_exact(wan):
    if wan.family != "2.2":
        pytest.skip("Wan22ImageToVideoLatent makes Wan 2.2 (48-channel) latents")
    image = video(1, seed=5)
    latent = core_wan22_image_to_video_latent(wan.vae, image, 9, batch=2)
    out = sample(wan, latent)
    assert torch.equal(out["samples"][:, :, 0], latent["samples"][:, :, 0])  # the image's raw latent, bit for bit
    assert not torch.equal(out["samples"][:, :, 1:], latent["samples"][:, :, 1:])
    assert out["noise_mask"] is latent["noise_mask"]  # kept, as core's KSampler keeps it
    frames = decode(wan, out)
    assert frames.shape == (2 * 9, SIZE, SIZE, 3) and torch.isfinite(frames).all()


def test_core_conditioning_samples_exactly_like_ours(wan):
    states, mask = wan.text.module.encode(["a red ball moving left"])  # umt5 states, zero past the prompt
    assert states.shape == (1, 512, TEXT_DIM) and not mask.all()
    empty = wan.text.module.encode([""])[0]
    latent = SoraExtend().build(wan.vae, video(), "forward", 4, 4)[0]
    ours = sample(wan, latent)
    core = sample(wan, latent, core_conditioning(states), core_conditioning(empty))
    mixed = sample(wan, latent, core_conditioning(states), wan.prompts[1])
    assert torch.equal(core["samples"], ours["samples"]) and torch.equal(mixed["samples"], ours["samples"])


def test_conditioning_of_the_wrong_width_names_both_widths(wan, sora):
    latent = SoraPatchifyGrid().make(wan.vae, "custom", 64, SIZE, SIZE, 5, 1)["result"][0]
    umt5_xxl = core_conditioning(torch.zeros(1, 512, 4096))
    with pytest.raises(ValueError, match=rf"^positive has 4096-wide embeddings but this Wan model \(custom\) reads "
                                         rf"{TEXT_DIM}-wide umt5 states"):
        sample(wan, latent, umt5_xxl)
    theirs = SoraTextEncode().encode(sora[1], "a red ball")[0]  # our Sora model's text encoder
    with pytest.raises(ValueError, match=rf"^negative has {sora[1].config.text.dim}-wide embeddings but this Wan "
                                         rf"model \(custom\) reads {TEXT_DIM}-wide"):
        sample(wan, latent, None, theirs)
    with pytest.raises(ValueError, match=r"^positive holds 2 prompts \(combined conditioning\)"):
        sample(wan, latent, wan.prompts[0] + wan.prompts[0])
    with pytest.raises(ValueError, match=r"^positive has 600 tokens; Wan reads at most 512"):
        sample(wan, latent, core_conditioning(torch.zeros(1, 600, TEXT_DIM)))


def test_long_video_takes_core_conditioning_on_wan(wan):
    states = wan.text.module.encode(["a red ball moving left"])[0]
    frames = SoraLongVideo().generate(wan.dit, wan.vae, core_conditioning(states), wan.prompts[1], width=SIZE,
                                      height=SIZE, seconds=21 / 8, fps=8.0, new_frames=4, context_frames=4,
                                      drift="none", loop=False, seed=0, steps=1, cfg=1.0, sampler="euler")[0]
    assert frames.shape == (21, SIZE, SIZE, 3) and torch.isfinite(frames).all()  # a 17-frame opening, one window


# -- noise_mask: the shapes core reads, old graphs, refusals ---------------------------------------

def masked(latent: dict, mask) -> dict:
    out = {k: v for k, v in latent.items() if k != "noise_mask"}
    out["noise_mask"] = mask
    return out


def test_noise_mask_is_read_in_the_shapes_core_reads(wan):
    (latent,) = SoraExtend().build(wan.vae, video(), "forward", 4, 4, strength=1.0)  # frames 0, 1 given, 2 noise
    samples = latent["samples"]
    want = torch.tensor([[0.0, 0.0, 1.0]])
    levels = torch.tensor([0.0, 0.0, 1.0])
    for mask in (levels.view(1, 1, 3, 1, 1).expand(1, 1, 3, 4, 4),  # core's own shape, another spatial size
                 levels.view(1, 1, 3, 1, 1).expand(1, 7, 3, 2, 2),  # per channel (core repeats channels)
                 levels.view(3, 1, 1).expand(3, 8, 8),  # (frames, h, w), as core reshapes fewer dims
                 levels.view(3, 1, 1, 1).expand(3, 1, 8, 8) > 0.5):  # a boolean MASK per frame
        assert torch.equal(wires.strength_of(masked(latent, mask), samples), want)
    assert torch.equal(wires.strength_of(masked(latent, torch.full((1, 1, 1, 4, 4), 0.25)), samples),
                       torch.full((1, 3), 0.25))  # one frame's mask: every frame, as core repeats it


def test_old_graphs_sora_strength_is_read_and_noise_mask_wins(wan):
    (latent,) = SoraExtend().build(wan.vae, video(), "forward", 4, 4, strength=1.0)
    old = {k: v for k, v in latent.items() if k != "noise_mask"} | {"sora_strength": torch.tensor([[0.0, 0.0, 1.0]])}
    assert torch.equal(sample(wan, old)["samples"], sample(wan, latent)["samples"])
    both = dict(latent, sora_strength=torch.ones(1, 3))
    assert torch.equal(wires.strength_of(both, latent["samples"]), torch.tensor([[0.0, 0.0, 1.0]]))
    (marked,) = SoraSDEditNoise().set_strength(old, 0.5)
    assert "sora_strength" not in marked and per_frame(marked) == [0, 0, 0.5]


def test_sdedit_takes_the_minimum_with_a_core_mask(wan):
    if wan.family != "2.2":
        pytest.skip("Wan22ImageToVideoLatent makes Wan 2.2 latents")
    latent = core_wan22_image_to_video_latent(wan.vae, video(1), 9)
    (marked,) = SoraSDEditNoise().set_strength(latent, 0.4)
    assert marked["noise_mask"].shape == (1, 1, 3, 2, 2) and per_frame(marked) == pytest.approx([0, 0.4, 0.4])


@pytest.mark.parametrize("mask,message", [
    (lambda m: m.index_fill(4, torch.tensor([0]), 0.0), r"noise_mask varies inside latent frame 2 \(from 0 to 1\).*"
                                                        r"whole latent frames.*core's KSampler"),
    (lambda m: m[:, :, :2], r"noise_mask covers 2 latent frames but the latent has 3"),
    (lambda m: m.repeat(3, 1, 1, 1, 1), r"noise_mask is for a batch of 3 but the latent holds 1 videos"),
    (lambda m: m * 2, r"noise_mask holds values outside 0\.\.1 \(e\.g\. \[2\.0"),
    (lambda m: m.masked_fill(m == 1, float("nan")), r"noise_mask holds values outside 0\.\.1 \(e\.g\. \[nan"),
    (lambda m: m.flatten(), r"noise_mask must be a tensor of shape \(batch, 1, latent frames, height, width\); got \(\d+,\)"),
    (lambda m: m.tolist(), r"noise_mask must be a tensor .*; got list"),
])
def test_a_mask_that_does_not_fit_is_refused_by_name_before_sampling(wan, monkeypatch, mask, message):
    (latent,) = SoraExtend().build(wan.vae, video(), "forward", 4, 4, strength=1.0)
    monkeypatch.setattr(sampler_node, "sample_window", lambda *a, **k: pytest.fail("sampled"))
    with pytest.raises(ValueError, match=message):
        sample(wan, masked(latent, mask(latent["noise_mask"])))


def test_a_latent_of_the_other_family_is_refused_by_name(wan):
    other = 48 if wan.config.vae.latent_channels == 16 else 16
    with pytest.raises(ValueError, match=rf"latent must be a video latent of shape \(batch, "
                                         rf"{wan.config.vae.latent_channels}, frames, height, width\).*core's Wan "
                                         rf"latent nodes.*got samples of shape \(1, {other}, 3, 2, 2\)"):
        sample(wan, {"samples": torch.zeros(1, other, 3, 2, 2)})


# -- Recaption's STRING into core's CLIPTextEncode ------------------------------------------------

def test_recaption_strings_are_plain_text_for_cores_tokenizer():
    """Core's tokenizer reads "(...)" as emphasis weights and "\\0\\1" / "\\0\\2" as its escapes, so a caption holds
    neither brackets nor control characters (other than line breaks and tabs), whatever the prompt had."""
    for prompt in ("a red ball bouncing", "a cat (orange) runs over the hill", "a \x00weird\x07 prompt\twith (x:1.5)",
                   "two circles: one red, one green\nslowly"):
        for seed in range(3):
            caption = SoraRecaption().run(prompt, seed, "offline", "", "", 5.0)["result"][0]
            assert isinstance(caption, str) and caption.strip() and not set(caption) & set("()")
            assert not [c for c in caption if unicodedata.category(c) == "Cc" and c not in "\n\t"], caption
    assert "orange" in SoraRecaption().run("a cat (orange) runs", 0, "offline", "", "", 5.0)["result"][0]
    reply = "A woman (in her 30s) walks\x00\x01 past (a red door:1.3).\r\nThe camera pans\tleft."  # an LLM's
    assert plain_text(reply) == "A woman in her 30s walks past a red door:1.3.\nThe camera pans\tleft."


# -- core's KSampler on our latents, in a real ComfyUI ---------------------------------------------

HOST_SCRIPT = r'''
import asyncio, json, os, sys
comfy, repo, base, out = sys.argv[1:5]
sys.argv = ["main.py", "--cpu", "--base-directory", base]
os.chdir(comfy)
sys.path.insert(0, comfy)
import comfy.options
comfy.options.enable_args_parsing()
import torch
import nodes  # core's
torch.set_num_threads(1)
asyncio.run(nodes.load_custom_node(repo))
from sora_core.wan.vae import load_wan_vae
from sora_core.wan.dit import WanConfig, WanDiTConfig
ours = nodes.NODE_CLASS_MAPPINGS  # our nodes registered as ComfyUI registers them
host = sys.modules[ours["SoraExtend"].__module__].host
assert host.IN_COMFYUI
(model,) = nodes.UNETLoader().load_unet("tiny_wan21.safetensors", "default")
vae = load_wan_vae(os.path.join(base, "models", "vae", "tiny_wan21_vae.safetensors"))
config = WanConfig(WanDiTConfig(dim=256, layers=2, heads=2, ffn_dim=512), vae.config)
vae_part = host.host_part(vae, config, "vae")
g = torch.Generator().manual_seed(0)
clip = torch.rand(9, 32, 32, 3, generator=g)
(latent,) = ours["SoraExtend"]().build(vae_part, clip, "forward", 8, 4, blend_frames=0)
text = [[torch.randn(1, 512, 4096, generator=g) * 0.1, {"pooled_output": None}]]
empty = [[torch.zeros(1, 512, 4096), {"pooled_output": None}]]
(sampled,) = nodes.KSampler().sample(model, 3, 4, 5.0, "euler", "simple", text, empty, latent, denoise=1.0)
given = latent["noise_mask"][0, 0, :, 0, 0] == 0
before, after = latent["samples"], sampled["samples"]
frames = ours["SoraVAEDecode"]().decode(vae_part, sampled, 4, 0)[0]
wires = sys.modules[ours["SoraExtend"].__module__].wires
(core_vae,) = nodes.VAELoader().load_vae("tiny_wan21_vae.safetensors")
(core_encoded,) = nodes.VAEEncode().encode(core_vae, clip)
(our_encoded,) = ours["SoraVAEEncode"]().encode(vae_part, clip, 8)
(core_decoded,) = nodes.VAEDecode().decode(core_vae, our_encoded)
our_decoded = ours["SoraVAEDecode"]().decode(vae_part, our_encoded, 4, 0)[0]
raw = our_encoded["samples"]
from comfy.text_encoders.wan import WanT5Tokenizer  # what CLIPTextEncode runs for CLIPLoader type=wan
tokenizer = WanT5Tokenizer(tokenizer_data={"spiece_model": open(os.path.join(base, "spiece.model"), "rb").read()})
def read_as_given(text):  # no weights and the same tokens as the text taken literally
    weighted = tokenizer.tokenize_with_weights(text)["umt5xxl"]
    literal = tokenizer.tokenize_with_weights(text, disable_weights=True)["umt5xxl"]
    return weighted == literal and all(w == 1.0 for batch in weighted for _, w in batch)
texts = json.load(open(os.path.join(base, "texts.json")))
json.dump({"captions_as_given": [read_as_given(t) for t in texts["captions"]],
           "prompts_as_given": [read_as_given(t) for t in texts["prompts"]],
           "format": type(model.model.latent_format).__name__, "given": given.tolist(),
           "normalise_error": float((model.model.process_latent_in(raw) - wires.to_model(raw, config)).abs().max()),
           "encode_error": float((core_encoded["samples"] - raw).abs().max()), "raw_scale": float(raw.abs().max()),
           "decode_error": float((core_decoded.reshape(our_decoded.shape) - our_decoded).abs().max()),
           "given_error": float((after[:, :, given] - before[:, :, given]).abs().max()),
           "given_scale": float(before[:, :, given].abs().max()),
           "new_change": float((after[:, :, ~given] - before[:, :, ~given]).abs().mean()),
           "frames": list(frames.shape), "source_kept": bool(torch.equal(frames[:9], clip))}, open(out, "w"))
'''


@pytest.mark.skipif(not COMFYUI, reason="set COMFYUI_PATH to a ComfyUI checkout to run core's KSampler")
def test_cores_ksampler_honours_our_extend_latent_and_latent_space(tmp_path):
    """Core's UNETLoader detects a tiny random Wan 2.1 file (real key layout, 4096-wide text states as core's
    Wan model expects); core's KSampler samples our Extend latent: the given latent frames come back (up to
    core's normalise / denormalise rounding), the new ones change, and our VAE Decode splices the source.
    Core's VAELoader reads the same tiny VAE file: its VAEEncode / VAEDecode agree with ours on the wire.
    Core's umt5 tokenizer reads our Recaption captions without emphasis weights or escapes."""
    models = tmp_path / "models"
    (models / "diffusion_models").mkdir(parents=True)
    (models / "vae").mkdir()
    write(models / "diffusion_models" / "tiny_wan21.safetensors",
          random_state(WanDiTConfig(dim=256, layers=2, heads=2, ffn_dim=512), seed=1))
    write_random_file(models / "vae" / "tiny_wan21_vae.safetensors", FAMILIES["2.1"][1])
    prompts = ["a cat (orange) runs over the hill", "a red ball (bouncing:1.4)", "a \x07 ((very)) bright sky"]
    captions = [SoraRecaption().run(p, 0, "offline", "", "", 5.0)["result"][0] for p in prompts]
    (tmp_path / "texts.json").write_text(json.dumps({"prompts": prompts, "captions": captions}))
    (tmp_path / "spiece.model").write_bytes(spiece_model())
    script, out = tmp_path / "host.py", tmp_path / "out.json"
    script.write_text(HOST_SCRIPT)
    env = dict(os.environ, OMP_NUM_THREADS="1", DO_NOT_TRACK="1", HF_HUB_OFFLINE="1")
    run = subprocess.run([sys.executable, str(script), COMFYUI, str(REPO), str(tmp_path), str(out)], env=env,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-4000:]
    result = json.loads(out.read_text())
    assert result["format"] == "Wan21" and result["given"] == [True, True, False, False]
    assert result["given_error"] <= 1e-5 * result["given_scale"]  # kept: core's rounding only
    assert result["new_change"] > 0.01 and result["frames"] == [17, 32, 32, 3] and result["source_kept"]
    # one latent space: core's VAE encodes to what our VAE Encode puts on the wire, decodes what ours decodes,
    # and core's Wan21 format normalises it as we do
    assert result["encode_error"] <= 1e-4 * result["raw_scale"] and result["decode_error"] <= 1e-3
    assert result["normalise_error"] <= 1e-5
    # Recaption's STRING goes through core's CLIPTextEncode tokenizer as plain text; the raw prompts would not
    assert result["captions_as_given"] == [True] * 3 and result["prompts_as_given"] == [False] * 3
