"""The ComfyUI nodes, called directly (no ComfyUI), with a random-weight micro checkpoint."""

from __future__ import annotations

import re

import pytest
import torch

from nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS, host, wires
from nodes import latent as latent_nodes
from nodes import sampler as sampler_node
from nodes.latent import SoraPatchifyGrid, SoraTrimFrames, SoraVAEDecode, SoraVAEEncode
from nodes.loader import SoraModelLoader
from nodes.long import SoraLongVideo
from nodes.sampler import SoraDiTSampler
from nodes.save import SoraSaveVideo
from nodes.temporal import SoraAnimateImage, SoraConnect, SoraExtend, SoraLoop, SoraSDEditNoise
from nodes.text import SoraApplyLayout, SoraRecaption, SoraTextEncode
from sora_core.budget import BudgetError
from sora_core.checkpoint import save_checkpoint
from sora_core.pipeline import Defaults, Pipeline
from sora_core.preview import METADATA_KEY, LatentRGB

SIZE, FRAMES = 32, 9  # micro: 8 px per token side, so 4x4 tokens a frame, 3 latent frames


@pytest.fixture(scope="module")
def parts(micro_checkpoint):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SORA_MODEL", micro_checkpoint)
        return SoraModelLoader().load(host.DEFAULT_MODEL_NAME, "auto", "default")


@pytest.fixture(scope="module")
def dit(parts):
    return parts[0]


@pytest.fixture(scope="module")
def vae(parts):
    return parts[2]


@pytest.fixture(scope="module")
def prompts(parts):
    encode = SoraTextEncode().encode
    return encode(parts[1], "a red circle moves to the right")[0], encode(parts[1], "")[0]


@pytest.fixture(scope="module")
def clip(vae):
    """A smooth 9-frame clip (a colour ramp moving right), 32x32."""
    x = torch.linspace(0, 1, SIZE)
    frames = torch.stack([torch.stack([(x + t / FRAMES) % 1, x.flip(0), torch.full_like(x, 0.3)], -1) for t in range(FRAMES)])
    return frames[:, None].expand(FRAMES, SIZE, SIZE, 3).contiguous()


def grid(vae, frames=FRAMES, width=SIZE, height=SIZE, batch=1):
    return SoraPatchifyGrid().make(vae, "custom", 64, width, height, frames, batch)


def sample(dit, prompts, latent, seed=0, steps=2, **kw):
    settings = dict(cfg=3.0, shift=0.0, sampler="euler") | kw
    return SoraDiTSampler().sample(dit, *prompts, latent, seed, steps, **settings)[0]


def decode(vae, latent):
    return SoraVAEDecode().decode(vae, latent, 4, 0)[0]


# -- registration ------------------------------------------------------------------------------

def test_every_node_is_registered_with_a_sora_id_display_name_category_and_description():
    for node_id, cls in NODE_CLASS_MAPPINGS.items():
        assert node_id.startswith("Sora") and node_id in NODE_DISPLAY_NAME_MAPPINGS
        assert cls.CATEGORY.startswith("Sora/") and cls.DESCRIPTION
        assert callable(getattr(cls, cls.FUNCTION))


def test_every_constrained_input_has_a_tooltip():
    for node_id, cls in NODE_CLASS_MAPPINGS.items():
        for section in cls.INPUT_TYPES().values():
            for name, spec in section.items():
                opts = spec[1] if len(spec) > 1 else {}
                constrained = isinstance(spec[0], list) or "min" in opts or "max" in opts
                assert not constrained or opts.get("tooltip"), f"{node_id}.{name} needs a tooltip"


# -- loader --------------------------------------------------------------------------------------

def test_loader_gives_dit_text_encoder_and_vae_of_one_model(parts):
    dit, text, vae = parts
    assert (dit.kind, text.kind, vae.kind) == ("dit", "text", "vae")
    assert dit.config is vae.config and dit.config.name == "micro"


def test_loader_error_for_a_missing_file_names_the_folder_to_put_it_in(monkeypatch):
    monkeypatch.delenv("SORA_MODEL", raising=False)
    with pytest.raises(FileNotFoundError, match="put the .safetensors file in .*models"):
        SoraModelLoader().load("not-there.safetensors", "auto", "default")


@pytest.mark.parametrize("name", ["../../etc/passwd", "../sora-tiny.safetensors", "/etc/passwd", "sub/../../x.safetensors"])
def test_loader_refuses_paths_out_of_the_models_folder(name, monkeypatch):
    monkeypatch.delenv("SORA_MODEL", raising=False)
    with pytest.raises(ValueError, match=r"ckpt_name=.* is not allowed: give a file name inside the folder"):
        SoraModelLoader().load(name, "auto", "default")


def test_loader_refuses_an_absolute_path_even_to_a_real_checkpoint(micro_checkpoint, monkeypatch):
    monkeypatch.delenv("SORA_MODEL", raising=False)
    with pytest.raises(ValueError, match="is not allowed"):
        SoraModelLoader().load(micro_checkpoint, "auto", "default")


def test_loader_dtype_applies_to_the_dit_only(micro_checkpoint, monkeypatch):
    monkeypatch.setenv("SORA_MODEL", micro_checkpoint)
    dit, text, vae = SoraModelLoader().load(host.DEFAULT_MODEL_NAME, "bfloat16", "cpu")
    assert next(dit.module.parameters()).dtype == torch.bfloat16
    assert next(vae.module.parameters()).dtype == torch.float32 == next(text.module.parameters()).dtype


def test_loader_uses_preview_factors_stored_in_the_checkpoint(micro_model, tmp_path, monkeypatch):
    stored = LatentRGB(factors=[[0.1, 0.2, 0.3]] * 4, bias=[0.0, 0.5, 1.0])
    path = tmp_path / "with_factors.safetensors"
    save_checkpoint(micro_model, path, extra={METADATA_KEY: stored.to_json()})
    monkeypatch.setenv("SORA_MODEL", str(path))
    dit, _, _ = SoraModelLoader().load(host.DEFAULT_MODEL_NAME, "auto", "default")
    assert dit.latent_rgb == stored


def test_preview_factors_map_every_latent_channel_to_rgb(dit, vae):
    rgb = dit.latent_rgb
    assert len(rgb.factors) == vae.config.vae.latent_channels and all(len(row) == 3 for row in rgb.factors)
    assert len(rgb.bias) == 3
    assert rgb.apply(torch.zeros(1, 4, 2, 3, 3)).shape == (1, 3, 2, 3, 3)


# -- text ------------------------------------------------------------------------------------------

def test_text_encode_gives_core_conditioning_with_a_mask(parts):
    (cond,) = SoraTextEncode().encode(parts[1], "a red circle")
    emb, extra = cond[0]
    assert emb.shape == (1, 4, parts[1].config.text.dim)  # BOS + 3 words
    assert extra["sora_mask"].shape == (1, 4) and extra["sora_mask"].all()


def test_text_encode_refuses_a_prompt_that_is_not_a_string(parts):
    with pytest.raises(TypeError, match=r"^text must be a string \(the prompt, '' for none\); got NoneType$"):
        SoraTextEncode().encode(parts[1], None)


def test_an_empty_negative_prompt_is_fine(dit, vae, prompts):
    assert prompts[1][0][0].shape[1] == 1
    sample(dit, prompts, grid(vae)["result"][0])


def test_an_empty_positive_prompt_is_refused(dit, vae, prompts):
    with pytest.raises(ValueError, match="positive prompt is empty"):
        sample(dit, (prompts[1], prompts[1]), grid(vae)["result"][0])


def test_conditioning_from_another_text_encoder_is_refused(dit, vae, prompts):
    foreign = [[torch.zeros(1, 77, 768), {"pooled_output": torch.zeros(1, 768)}]]
    width = dit.config.text.dim
    with pytest.raises(ValueError, match=rf"^positive is 768-wide conditioning from another text encoder; this Sora "
                                         rf"model reads {width}-wide embeddings from its own text encoder"):
        sample(dit, (foreign, prompts[1]), grid(vae)["result"][0])


# -- patchify grid ---------------------------------------------------------------------------------

def test_patchify_grid_makes_an_empty_latent_and_shows_its_token_grid(vae):
    out = grid(vae, frames=9, width=48, height=32, batch=2)
    latent = out["result"][0]
    assert latent["samples"].shape == (2, 4, 3, 8, 12) and "noise_mask" not in latent  # all generated, like core's
    assert "3x4x6 = 72 tokens" in out["ui"]["text"][0]


@pytest.mark.parametrize("ratio,long_side,size", [("16:9", 88, (88, 48)), ("9:16", 88, (48, 88)), ("1:1", 64, (64, 64)),
                                                  ("4:3", 64, (64, 48)), ("21:9", 112, (112, 48))])
def test_aspect_presets_pick_width_and_height_from_the_long_side(vae, ratio, long_side, size):
    latent = SoraPatchifyGrid().make(vae, ratio, long_side, 8, 8, 1, 1)["result"][0]
    assert latent["samples"].shape[-1] * 4 == size[0] and latent["samples"].shape[-2] * 4 == size[1]


@pytest.mark.parametrize("width,height,frames,message", [
    (36, 32, 9, r"width=36 is not allowed.*multiple of 8.*\[32, 40\]"),
    (32, 30, 9, r"height=30 is not allowed"),
    (32, 32, 8, r"frames=8 is not allowed.*1 \+ 4\*k.*\[5, 9\]"),
])
def test_patchify_grid_refuses_invalid_sizes_clearly(vae, width, height, frames, message):
    with pytest.raises(ValueError, match=message):
        grid(vae, frames=frames, width=width, height=height)


def test_patchify_grid_refuses_its_own_declared_maximums_before_allocating(vae, monkeypatch):
    limits = {name: spec[1]["max"] for name, spec in SoraPatchifyGrid.INPUT_TYPES()["required"].items()
              if len(spec) > 1 and isinstance(spec[1], dict) and "max" in spec[1]}
    monkeypatch.delenv("SORA_MAX_TOKENS", raising=False)
    monkeypatch.setattr(latent_nodes, "empty_window", lambda *a: pytest.fail("allocated the latent"))
    with pytest.raises(BudgetError, match=r"Sora Patchify Grid: 64 videos of 4096x4096 px x 4097 frames is "
                                          r"17,196,646,400 DiT tokens; the limit is 65,536 \(the default"):
        SoraPatchifyGrid().make(vae, "custom", 64, limits["width"], limits["height"], limits["frames"],
                                limits["batch_size"])


def test_the_token_limit_is_configurable(vae, monkeypatch):
    monkeypatch.setenv("SORA_MAX_TOKENS", "100")
    with pytest.raises(BudgetError, match=r"48x48 px x 9 frames is 108 DiT tokens; the limit is 100 \(SORA_MAX_TOKENS"):
        grid(vae, width=48, height=48)
    grid(vae, width=40, height=40)  # 75 tokens


def test_decode_refuses_what_does_not_fit_in_memory_before_decoding(vae, monkeypatch):
    latent = grid(vae)["result"][0]
    monkeypatch.setenv("SORA_MAX_MEMORY", "1MB")
    with pytest.raises(BudgetError, match=r"Sora VAE Decode: 32x32 px x 9 frames needs about .* MiB of memory .*"
                                          r"the limit is 1.0 MiB \(SORA_MAX_MEMORY"):
        decode(vae, latent)


def test_an_invalid_long_side_is_refused(vae):
    with pytest.raises(ValueError, match="long_side=60 is not allowed"):
        SoraPatchifyGrid().make(vae, "16:9", 60, 8, 8, 1, 1)


def test_an_unknown_aspect_ratio_is_named(vae):
    with pytest.raises(ValueError, match=r"^aspect_ratio='5:1' is not allowed; use one of \['custom', '1:1'"):
        SoraPatchifyGrid().make(vae, "5:1", 64, 8, 8, 1, 1)


# -- sampler ---------------------------------------------------------------------------------------

def test_sampler_fills_the_latent_and_keeps_the_dict(dit, vae, prompts, clip):
    (latent,) = SoraExtend().build(vae, clip, "forward", 4, 4)
    out = sample(dit, prompts, latent)
    assert out["samples"].shape == latent["samples"].shape and torch.isfinite(out["samples"]).all()
    assert set(out) == {"samples", "noise_mask", "sora_splice"} and out["samples"].abs().sum() > 0
    assert out["noise_mask"] is latent["noise_mask"] and out["sora_splice"] is latent["sora_splice"]


def test_same_seed_same_video_other_seed_other_video(dit, vae, prompts):
    latent = grid(vae)["result"][0]
    a, b, c = (sample(dit, prompts, latent, seed=s)["samples"] for s in (1, 1, 2))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_sampler_reports_progress_every_step(dit, vae, prompts, monkeypatch):
    updates = []

    class Recording:
        def __init__(self, total):
            pass

        def update(self, value, total=None, preview=None):
            updates.append((value, total))

    monkeypatch.setattr(host, "Progress", Recording)
    sample(dit, prompts, grid(vae)["result"][0], steps=3)
    assert updates == [(1, 3), (2, 3), (3, 3)]


def test_sampler_checks_for_cancel_every_step(dit, vae, prompts, monkeypatch):
    class Cancelled(BaseException):
        pass

    def cancel():
        raise Cancelled

    monkeypatch.setattr(host, "check_interrupted", cancel)
    with pytest.raises(Cancelled):
        sample(dit, prompts, grid(vae)["result"][0])


def test_nan_output_is_reported_clearly(parts, vae, prompts):
    dit = parts[0]
    broken = host.SoraPart(dit.module, dit.config, "dit")
    weight = dit.module.out.bias
    saved = weight.detach().clone()
    with torch.no_grad():
        weight.fill_(float("nan"))
    try:
        with pytest.raises(FloatingPointError, match="NaN"):
            sample(broken, prompts, grid(vae)["result"][0])
    finally:
        with torch.no_grad():
            weight.copy_(saved)


def test_a_nan_in_the_latent_is_named_before_sampling(dit, vae, prompts, monkeypatch):
    latent = grid(vae)["result"][0]
    latent["samples"][0, 1, 2, 3, 3] = float("nan")
    monkeypatch.setattr(sampler_node, "sample_window", lambda *a, **k: pytest.fail("sampled"))
    with pytest.raises(ValueError, match=r"latent holds 1 NaN or inf values \(in latent frames \[2\]\)"):
        sample(dit, prompts, latent)


@pytest.mark.parametrize("settings,message", [
    ({"seed": -1}, r"seed=-1 is not allowed: use an integer from 0 to 2\*\*64 - 1"),
    ({"seed": 2**64}, r"seed=18446744073709551616 is not allowed"),
    ({"shift": -1.0}, r"shift=-1.0 is not allowed: use a number > 0"),
    ({"cfg": float("nan")}, r"cfg=nan is not allowed"),
    ({"steps": 0}, r"steps=0 is not allowed"),
])
def test_sampler_settings_are_checked_by_name(dit, vae, prompts, settings, message):
    with pytest.raises(ValueError, match=message):
        sample(dit, prompts, grid(vae)["result"][0], **settings)


def test_the_largest_comfyui_seed_samples(dit, vae, prompts):
    latent = grid(vae)["result"][0]
    top, zero = (sample(dit, prompts, latent, seed=s)["samples"] for s in (2**64 - 1, 0))
    assert torch.isfinite(top).all() and not torch.equal(top, zero)


def test_sampler_refuses_a_latent_that_is_not_a_sora_video_latent(dit, prompts):
    with pytest.raises(ValueError, match=r"latent must be a video latent of shape \(batch, 4, frames, height, width\)"):
        sample(dit, prompts, {"samples": torch.zeros(1, 4, 8, 8)})


# -- VAE encode / decode -----------------------------------------------------------------------

def test_encode_then_decode_keeps_the_frame_count_and_size(vae, clip):
    (latent,) = SoraVAEEncode().encode(vae, clip, 8)
    assert latent["samples"].shape == (1, 4, 3, 8, 8) and "noise_mask" not in latent
    frames = decode(vae, latent)
    assert frames.shape == clip.shape and frames.min() >= 0 and frames.max() <= 1


def test_encode_names_nan_frames_before_encoding(vae, clip):
    broken = clip.clone()
    broken[4, 0, 0, 1] = float("inf")
    with pytest.raises(ValueError, match=r"images holds 1 NaN or inf values \(the first in frame 4\)"):
        SoraVAEEncode().encode(vae, broken, 8)


def test_encode_refuses_a_frame_count_that_is_not_1_plus_4k(vae, clip):
    with pytest.raises(ValueError, match=r"frames=8 is not allowed.*Sora Trim Frames"):
        SoraVAEEncode().encode(vae, clip[:8], 8)


def test_encode_refuses_frames_whose_size_is_not_a_multiple_of_8(vae, clip):
    with pytest.raises(ValueError, match=r"width=30 is not allowed.*Image Scale"):
        SoraVAEEncode().encode(vae, clip[:, :, :30], 8)


def test_decode_puts_a_batch_of_videos_one_after_another(vae):
    latent = grid(vae, batch=2)["result"][0]
    assert decode(vae, latent).shape == (2 * FRAMES, SIZE, SIZE, 3)


def test_decode_refuses_tiles_smaller_than_8(vae):
    with pytest.raises(ValueError, match="tile=4 is not allowed"):
        SoraVAEDecode().decode(vae, grid(vae)["result"][0], 4, 4)


# -- temporal conditioning ----------------------------------------------------------------------------

@pytest.mark.parametrize("position,given", [("first", 0), ("last", -1)])
def test_animate_image_gives_the_image_as_first_or_last_frame(dit, vae, prompts, clip, position, given):
    (latent,) = SoraAnimateImage().build(vae, clip[:1], 9, position)
    mask = latent["noise_mask"]
    assert mask.shape == (1, 1, 3, 8, 8) and mask[0, 0, given].eq(0).all() and mask[0, 0, :, 0, 0].sum() == 2
    out = sample(dit, prompts, latent)
    assert torch.equal(out["samples"][:, :, given], latent["samples"][:, :, given])
    frames = decode(vae, out)
    assert frames.shape == (9, SIZE, SIZE, 3)
    assert torch.equal(frames[given], clip[0])  # the image itself, not the VAE's version of it


def test_extend_forward_output_is_the_source_then_the_new_frames(dit, vae, prompts, clip):
    (latent,) = SoraExtend().build(vae, clip, "forward", 8, 4, blend_frames=0)  # hard cut: the source exactly
    frames = decode(vae, sample(dit, prompts, latent))
    assert frames.shape[0] == FRAMES + 8 and torch.equal(frames[:FRAMES], clip)
    (latent,) = SoraExtend().build(vae, clip, "forward", 8, 4)  # default: 4 frames crossfade at the join
    blended = decode(vae, sample(dit, prompts, latent))
    assert torch.equal(blended[:FRAMES - 4], clip[:-4]) and not torch.equal(blended[FRAMES - 4 : FRAMES], clip[-4:])


def test_where_new_frames_start_travels_in_the_noise_mask(vae, clip):
    (latent,) = SoraExtend().build(vae, clip, "forward", 8, 4, strength=0.5)
    assert latent["noise_mask"][0, 0, :, 0, 0].tolist() == pytest.approx([0, 0, 0.5, 1.0])
    (latent,) = SoraConnect().build(vae, clip, clip.flip(0), 4, 4, strength=0.3)
    assert latent["noise_mask"][0, 0, :, 0, 0].tolist() == pytest.approx([0, 0, 0.3, 0])
    with pytest.raises(ValueError, match="strength=1.5 is not allowed"):
        SoraLoop().build(vae, clip, 4, 4, strength=1.5)


def test_extend_backward_output_is_the_new_frames_then_the_source(dit, vae, prompts, clip):
    (latent,) = SoraExtend().build(vae, clip, "backward", 8, 4)
    frames = decode(vae, sample(dit, prompts, latent))
    assert frames.shape[0] == 8 + FRAMES and torch.equal(frames[12:], clip[4:])


def test_loop_output_is_the_source_then_the_transition(dit, vae, prompts, clip):
    (latent,) = SoraLoop().build(vae, clip, 4, 4, blend_frames=0)
    frames = decode(vae, sample(dit, prompts, latent))
    assert frames.shape[0] == FRAMES + 4 and torch.equal(frames[:FRAMES], clip)


def test_connect_output_is_first_transition_second(dit, vae, prompts, clip):
    second = clip.flip(0)
    (latent,) = SoraConnect().build(vae, clip, second, 8, 4)
    frames = decode(vae, sample(dit, prompts, latent))
    assert frames.shape[0] == FRAMES + 8 + FRAMES
    assert torch.equal(frames[:FRAMES - 4], clip[:-4]) and torch.equal(frames[-FRAMES + 4:], second[4:])


def test_connect_refuses_clips_of_different_sizes(vae, clip):
    with pytest.raises(ValueError, match="same frame size"):
        SoraConnect().build(vae, clip, clip[:, :24], 8, 4)


def test_extend_refuses_new_frames_that_are_not_a_multiple_of_4(vae, clip):
    with pytest.raises(ValueError, match="new_frames=6 is not allowed: use a multiple of 4"):
        SoraExtend().build(vae, clip, "forward", 6, 4)


def test_extend_refuses_more_context_than_the_clip_has(vae, clip):
    with pytest.raises(ValueError, match="video has 9 frames"):
        SoraExtend().build(vae, clip, "forward", 8, 12)


# -- long video -----------------------------------------------------------------------------------

def long_video(dit, vae, prompts, seconds, **kw):
    settings = dict(width=SIZE, height=SIZE, seconds=seconds, fps=8.0, new_frames=8, context_frames=4,
                    drift="anchor", loop=False, seed=0, steps=1, cfg=1.0, sampler="euler") | kw
    return SoraLongVideo().generate(dit, vae, *prompts, **settings)[0]


def test_long_video_gives_every_frame_as_one_image_batch(dit, vae, prompts, monkeypatch):
    shown = []
    monkeypatch.setattr(host.Progress, "update", lambda self, value, total=None, preview=None: shown.append((value, total)))
    frames = long_video(dit, vae, prompts, 4.0)  # 32 frames: a 17-frame opening and 2 windows of 8
    assert frames.shape == (32, SIZE, SIZE, 3) and frames.dtype == torch.float32
    assert shown[-1] == (3, 3) and (2, 3) in shown  # windows x steps, step by step


def test_long_video_continues_start_images_and_says_when_seconds_are_too_few(dit, vae, prompts, clip):
    frames = long_video(dit, vae, prompts, 3.0, start_images=clip)  # 24 frames: the clip and 2 windows
    assert frames.shape[0] == 24 and torch.equal(frames[:FRAMES - 4], clip[:-4])
    with pytest.raises(ValueError, match=r"seconds=1.0 at fps=8.0 \(8 frames\).*longer than its opening"):
        long_video(dit, vae, prompts, 1.0, start_images=clip)


def test_long_video_overlaps_its_joins_as_far_as_the_context_allows(dit, vae, prompts):
    run = lambda overlap: long_video(dit, vae, prompts, 4.0, context_frames=8, overlap_frames=overlap)
    hard, overlapped = run(0), run(4)
    assert torch.equal(hard[:12], overlapped[:12]) and not torch.equal(hard[12:17], overlapped[12:17])
    assert torch.equal(run(8), overlapped)  # more than context_frames - 4: that many are used


def test_long_video_names_bad_inputs_before_loading_anything(dit, vae, prompts, clip, monkeypatch):
    monkeypatch.setattr(host, "load_parts", lambda *parts: pytest.fail("loaded the networks"))
    for kw, message in ((dict(new_frames=6), r"new_frames=6 is not allowed: use a multiple of 4"),
                        (dict(drift="sideways"), r"drift='sideways' is not allowed"),
                        (dict(steps=0), r"steps=0 is not allowed"),
                        (dict(width=36), r"width=36 is not allowed"),
                        (dict(start_images=clip[:, :30, :30]), r"start_images \(9 frames of 30x30\)")):
        with pytest.raises(ValueError, match=message):
            long_video(dit, vae, prompts, 4.0, **kw)


def test_long_video_refuses_an_empty_positive_prompt(parts, dit, vae, prompts):
    blank = SoraTextEncode().encode(parts[1], "  ")[0]
    with pytest.raises(ValueError, match="the positive prompt is empty"):
        long_video(dit, vae, (blank, prompts[1]), 4.0)


def test_long_video_refuses_an_image_output_past_the_memory_limit_before_any_work(dit, vae, prompts, monkeypatch):
    monkeypatch.setattr(host, "load_parts", lambda *parts: pytest.fail("loaded the networks"))
    monkeypatch.setenv("SORA_MAX_MEMORY", "200MB")  # room for one window, not for an hour of frames
    with pytest.raises(BudgetError, match=r"28800 frames of 32x32 px take 337\.5 MiB as an IMAGE; the limit is "
                                          r"200\.0 MiB \(SORA_MAX_MEMORY.*python -m sora_core long"):
        long_video(dit, vae, prompts, 3600.0)


def test_long_video_cancel_stops_between_steps(dit, vae, prompts, monkeypatch):
    class Cancelled(BaseException):  # ComfyUI's InterruptProcessingException is not an Exception either
        pass

    checks, sampled = [], []

    def cancel_in_the_second_window():
        checks.append(1)
        if len(checks) == 5:  # window 1: before steps 1 and 2 and after; window 2: before step 1, after it
            raise Cancelled

    monkeypatch.setattr(host, "check_interrupted", cancel_in_the_second_window)
    latents = Pipeline.latents  # every window samples through it (the first also decodes through run)
    monkeypatch.setattr(Pipeline, "latents", lambda self, *a, **kw: sampled.append(1) or latents(self, *a, **kw))
    with pytest.raises(Cancelled):
        long_video(dit, vae, prompts, 4.0, steps=2)  # 3 windows of 2 steps
    assert len(checks) == 5 and len(sampled) == 2  # stopped after step 1 of window 2: no step and no window more


def test_long_video_tooltip_states_the_memory_the_output_really_takes(dit, vae, prompts):
    tooltip = SoraLongVideo.OUTPUT_TOOLTIPS[0]
    per_pixel = int(re.search(r"(\d+) bytes per pixel per frame", tooltip)[1])
    frames = long_video(dit, vae, prompts, 3.0)  # 24 frames
    assert frames.numel() * frames.element_size() == per_pixel * 24 * SIZE * SIZE
    minute = re.search(r"a minute at 8 fps: ([\d.]+) MB at 64x64, ([\d.]+) GB at 832x480", tooltip)
    assert float(minute[1]) == round(480 * 64 * 64 * per_pixel / 1e6)
    assert float(minute[2]) == round(480 * 832 * 480 * per_pixel / 1e9, 1)


# -- SDEdit ----------------------------------------------------------------------------------------

def test_sdedit_strength_0_returns_the_input(dit, vae, prompts, clip):
    (latent,) = SoraVAEEncode().encode(vae, clip, 8)
    (marked,) = SoraSDEditNoise().set_strength(latent, 0.0)
    assert torch.equal(sample(dit, prompts, marked)["samples"], latent["samples"])


def test_sdedit_sets_the_strength_and_the_samplers_seed_picks_the_edit(dit, vae, prompts, clip):
    (latent,) = SoraVAEEncode().encode(vae, clip, 8)
    (marked,) = SoraSDEditNoise().set_strength(latent, 0.5)
    assert marked["noise_mask"].shape == (1, 1, 3, 8, 8) and marked["noise_mask"].eq(0.5).all()
    assert torch.equal(marked["samples"], latent["samples"])
    a, b, c = (sample(dit, prompts, marked, seed=s)["samples"] for s in (1, 1, 2))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert "denoise" not in SoraDiTSampler.INPUT_TYPES()["required"]  # one way to start part-way: this node


def test_sdedit_changes_more_with_more_strength(dit, vae, prompts, clip):
    (latent,) = SoraVAEEncode().encode(vae, clip, 8)
    change = [(sample(dit, prompts, SoraSDEditNoise().set_strength(latent, s)[0], seed=3)["samples"]
               - latent["samples"]).abs().mean() for s in (0.2, 0.9)]
    assert change[0] < change[1]


def test_sdedit_keeps_given_frames_given(vae, clip):
    (window,) = SoraExtend().build(vae, clip, "forward", 8, 4)
    (marked,) = SoraSDEditNoise().set_strength(window, 0.7)
    assert marked["noise_mask"][0, 0, :, 0, 0].tolist() == pytest.approx([0, 0, 0.7, 0.7])
    assert torch.equal(marked["samples"], window["samples"]) and "sora_splice" in marked
    (again,) = SoraSDEditNoise().set_strength(marked, 0.9)  # strengths only ever go down
    assert again["noise_mask"][0, 0, :, 0, 0].tolist() == pytest.approx([0, 0, 0.7, 0.7])


@pytest.mark.parametrize("bad", [1.5, -0.1, float("nan")])
def test_sdedit_refuses_a_strength_outside_0_1(vae, clip, bad):
    (latent,) = SoraVAEEncode().encode(vae, clip, 8)
    with pytest.raises(ValueError, match=r"strength=.* is not allowed: use a number from 0"):
        SoraSDEditNoise().set_strength(latent, bad)


# -- glue ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("count,drop_from,max_frames,kept", [(12, "end", 0, slice(0, 9)), (12, "start", 0, slice(3, 12)),
                                                             (12, "end", 6, slice(0, 5)), (1, "end", 0, slice(0, 1))])
def test_trim_frames_keeps_the_longest_valid_length(count, drop_from, max_frames, kept):
    frames = torch.rand(count, 8, 8, 3)
    images, n = SoraTrimFrames().trim(frames, drop_from, max_frames)
    assert torch.equal(images, frames[kept]) and n == images.shape[0]


@pytest.mark.parametrize("images,max_frames,message", [
    (torch.rand(0, 8, 8, 3), 0, r"images is empty .*needs at least one frame"),
    (torch.rand(5, 8, 8, 3), -1, r"max_frames=-1 is not allowed"),
])
def test_trim_frames_refuses_empty_input_and_a_negative_maximum(images, max_frames, message):
    with pytest.raises(ValueError, match=message):
        SoraTrimFrames().trim(images, "end", max_frames)


def test_save_refuses_a_prefix_that_leaves_the_output_folder(clip):
    with pytest.raises(ValueError, match=r"filename_prefix='../escape' is not allowed"):
        SoraSaveVideo().save(clip, "../escape", "gif", 8.0, 90, "off", False)


# -- recaption ------------------------------------------------------------------------------------------

def test_recaption_offline_writes_a_longer_caption_and_shows_it():
    out = SoraRecaption().run("a red ball bouncing", 0, "offline", "", "", 5.0)
    caption = out["result"][0]
    assert out["ui"]["text"] == [caption] and len(caption.split()) > 4


def test_recaption_plans_for_the_clip_length_it_is_given():
    layout = SoraRecaption().run("a red ball moving left", 0, "offline", "", "", 5.0)["result"][1]
    assert layout["frames"] == Defaults.frames
    assert SoraRecaption().run("a red ball moving left", 0, "offline", "", "", 5.0, frames=33)["result"][1]["frames"] == 33
    with pytest.raises(ValueError, match="frames=0 is not allowed"):
        SoraRecaption().run("a red ball", 0, "offline", "", "", 5.0, frames=0)


def test_recaption_reports_an_unreachable_endpoint():
    with pytest.raises(Exception, match="127.0.0.1:9"):
        SoraRecaption().run("a red ball", 0, "llm", "http://127.0.0.1:9/v1", "some-model", 2.0)


@pytest.fixture(scope="module")
def grounded(tmp_path_factory):
    """A micro model that reads layouts and outlines, as if trained: its file and the loader's (dit, text, vae)."""
    from dataclasses import replace

    from sora_core.checkpoint import SoraModel
    from sora_core.config import preset

    config = preset("micro")
    model = SoraModel(replace(config, dit=replace(config.dit, grounding=True, silhouette=4)))
    torch.manual_seed(0)
    with torch.no_grad():  # as if trained: a fresh DiT's zero output layer, gates and grounding do nothing
        for p in model.dit.parameters():
            if not p.any():
                p.normal_(std=0.05)
    path = tmp_path_factory.mktemp("grounded") / "grounded.safetensors"
    save_checkpoint(model, path)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SORA_MODEL", str(path))
        return path, *SoraModelLoader().load(host.DEFAULT_MODEL_NAME, "auto", "default")[:3]


def test_a_recaption_layout_travels_through_text_encode_to_a_sampler_that_reads_it(grounded):
    from sora_core import conditioning as cond

    path, dit, text, vae = grounded
    caption, layout = SoraRecaption().run("a red square sliding right", 1, "offline", "", "", 5.0)["result"]
    assert [o["color"] for o in layout["objects"]] == ["red"]
    encode = SoraTextEncode().encode
    plain, negative = encode(text, caption)[0], encode(text, "")[0]
    planned = SoraApplyLayout().apply(plain, text, layout)[0]
    latent = grid(vae)["result"][0]
    a, b = sample(dit, (plain, negative), latent), sample(dit, (planned, negative), latent)
    assert not torch.equal(a["samples"], b["samples"])  # the layout moved what was drawn
    pipe = Pipeline.load(path)  # the node's grounding is the Python API's
    expected = pipe.grounding(layout, cond.empty_window(pipe.config, SIZE, SIZE, FRAMES))
    assert torch.allclose(wires.read_layout(planned, dit.config, (3, 8, 8)), expected, atol=1e-4)
    # layout_cfg: the guidance toward the layout, as the Python API's
    for strength in (0.0, 3.5):
        guided = sample(dit, (SoraApplyLayout().apply(plain, text, layout, strength)[0], negative), latent)
        z = pipe.latents(cond.empty_window(pipe.config, SIZE, SIZE, FRAMES), caption, layout=layout, negative="",
                         layout_cfg=strength, steps=2, cfg=3.0, seed=0)[0]
        assert torch.allclose(guided["samples"], z, atol=1e-4)
    assert not torch.equal(guided["samples"], b["samples"])  # the default, 2, is neither 0 nor 3.5
    with pytest.raises(TypeError, match="layout must be Sora Recaption's layout output .*; got str"):
        SoraApplyLayout().apply(plain, text, "left to right")
    with pytest.raises(ValueError, match=r"layout_cfg=-1.0 is not allowed: use a number >= 0"):
        SoraApplyLayout().apply(plain, text, layout, -1.0)


def test_long_video_follows_a_layout_in_its_first_window_as_the_python_api_does(grounded):
    path, dit, text, vae = grounded
    caption, layout = SoraRecaption().run("a red square sliding right", 1, "offline", "", "", 5.0)["result"]
    plain, negative = SoraTextEncode().encode(text, caption)[0], SoraTextEncode().encode(text, "")[0]
    planned = SoraApplyLayout().apply(plain, text, layout)[0]
    kw = dict(steps=2, cfg=3.0, seed=0)
    a = long_video(dit, vae, (planned, negative), 4.0, **kw)  # 32 frames: a 17-frame opening, 12 before the join
    b = long_video(dit, vae, (plain, negative), 4.0, **kw)
    expected = Pipeline.load(path).generate(caption, SIZE, SIZE, 17, layout=layout, negative="", **kw)
    assert torch.allclose(a[:12], expected[:12], atol=1e-5)
    assert not torch.allclose(a[:12], b[:12], atol=1e-5)
    with pytest.raises(ValueError, match="positive carries a layout .* start_images are given"):
        long_video(dit, vae, (planned, negative), 4.0, start_images=a[:9])


def test_apply_layout_refuses_conditioning_that_is_not_one_sora_text_encode(parts):
    layout = SoraRecaption().run("a red square", 0, "offline", "", "", 5.0)["result"][1]
    with pytest.raises(ValueError, match=r"conditioning must be one Sora Text Encode output .*; got str"):
        SoraApplyLayout().apply("a caption", parts[1], layout)
