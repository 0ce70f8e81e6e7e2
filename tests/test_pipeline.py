"""The Python API end to end on a micro model: determinism, preserved frames, SDEdit, errors, the budget."""

import pytest
import torch

from sora_core import conditioning as cond
from sora_core.budget import Budget, BudgetError
from sora_core.engine import sample_window
from sora_core.pipeline import Pipeline


@pytest.fixture(scope="module")
def pipe(micro_checkpoint):
    return Pipeline.load(micro_checkpoint)


KW = dict(steps=3, cfg=3.0)


def test_the_same_seed_gives_the_same_video_bit_for_bit(pipe):
    a = pipe.generate("a red circle moving left", 32, 16, 9, seed=7, **KW)
    b = pipe.generate("a red circle moving left", 32, 16, 9, seed=7, **KW)
    assert a.shape == (9, 16, 32, 3) and torch.equal(a, b)


def test_a_different_seed_gives_a_different_video(pipe):
    a = pipe.generate("a red circle", 16, 16, 5, seed=1, **KW)
    b = pipe.generate("a red circle", 16, 16, 5, seed=2, **KW)
    assert not torch.equal(a, b)


def test_one_frame_is_an_image(pipe):
    assert pipe.generate("a blue square", 24, 16, 1, seed=0, **KW).shape == (1, 16, 24, 3)


@pytest.mark.parametrize("sampler", ["euler", "heun", "dpmpp_2m"])
def test_given_frames_come_out_of_sampling_exactly_as_they_went_in(pipe, sampler):
    vae = pipe.vae
    w = cond.extend_forward(vae, torch.rand(9, 16, 16, 3), new_frames=8, context_frames=4)
    text = pipe.encode_text("x")
    out = sample_window(pipe.dit, w.samples, w.strength, text, pipe.encode_text(""), sampler=sampler, **KW)
    keep = w.strength[0] == 0
    assert torch.equal(out[:, :, keep], w.samples[:, :, keep])
    assert not torch.equal(out[:, :, ~keep], w.samples[:, :, ~keep])


def test_sdedit_strength_zero_returns_the_input_latents(pipe):
    z = torch.randn(1, 4, 3, 4, 4)
    w = cond.sdedit(z, 0.0)
    out = sample_window(pipe.dit, w.samples, w.strength, pipe.encode_text("x"), None, **KW)
    assert torch.equal(out, z)


def test_sdedit_changes_more_with_more_strength(pipe):
    video = torch.rand(5, 16, 16, 3, generator=torch.Generator().manual_seed(0))
    z = cond.encode_frames(pipe.vae, video)
    change = []
    for s in (0.2, 0.9):
        w = cond.sdedit(z, s)
        out = sample_window(pipe.dit, w.samples, w.strength, pipe.encode_text("x"), None, seed=3, **KW)
        change.append((out - z).abs().mean().item())
    assert change[0] < change[1]


def test_extend_loop_connect_keep_the_source_frames(pipe):
    video = torch.rand(9, 16, 16, 3, generator=torch.Generator().manual_seed(1))
    fwd = pipe.extend(video, "x", new_frames=4, context_frames=4, **KW)
    back = pipe.extend(video, "x", new_frames=4, context_frames=4, direction="backward", **KW)
    looped = pipe.loop(video, "x", transition_frames=4, context_frames=4, **KW)
    joined = pipe.connect(video, video.flip(0), "x", transition_frames=4, context_frames=4, **KW)
    # untouched except the 4 frames next to each join, which crossfade (tested in test_conditioning)
    assert torch.equal(fwd[:5], video[:5]) and fwd.shape[0] == 13
    assert torch.equal(back[8:], video[4:]) and back.shape[0] == 13
    assert torch.equal(looped[4:5], video[4:5]) and looped.shape[0] == 13
    assert torch.equal(joined[:5], video[:5]) and torch.equal(joined[-5:], video.flip(0)[4:]) and joined.shape[0] == 22


@pytest.mark.parametrize("at,index", [("first", 0), ("last", -1)])
def test_animate_gives_back_the_image_exactly(pipe, at, index):
    image = torch.rand(1, 16, 16, 3, generator=torch.Generator().manual_seed(2))
    video = pipe.animate(image, "x", 9, at=at, **KW)
    assert video.shape == (9, 16, 16, 3) and torch.equal(video[index], image[0])


def test_an_empty_prompt_is_refused(pipe):
    with pytest.raises(ValueError, match="prompt is empty"):
        pipe.generate("  ", 16, 16, 5, **KW)


def test_invalid_sizes_name_the_value_and_nearest_valid(pipe):
    with pytest.raises(ValueError, match=r"width=30 .*multiple of 8.*\[24, 32\]"):
        pipe.generate("x", 30, 16, 5, **KW)
    with pytest.raises(ValueError, match=r"frames=8 .*\[5, 9\]"):
        pipe.generate("x", 16, 16, 8, **KW)


def test_unknown_direction_is_refused(pipe):
    with pytest.raises(ValueError, match="direction='sideways' is not allowed"):
        pipe.extend(torch.rand(9, 16, 16, 3), "x", direction="sideways", **KW)


# -- frames as users have them -----------------------------------------------------------------------

def test_uint8_frames_from_read_video_are_scaled_not_taken_as_0_to_255(pipe):
    video = torch.randint(0, 256, (9, 16, 16, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(4))
    as_uint8 = pipe.extend(video.numpy(), "x", new_frames=4, context_frames=4, blend_frames=0, **KW)
    as_float = pipe.extend(video.float() / 255, "x", new_frames=4, context_frames=4, blend_frames=0, **KW)
    assert torch.equal(as_uint8, as_float) and as_uint8.max() <= 1 and as_uint8.dtype == torch.float32


@pytest.mark.parametrize("frames,message", [
    (torch.rand(9, 16, 16, 3) * 255, r"video holds values from .* to .*; frames are floats in 0..1 .*not 0..255"),
    (torch.rand(9, 16, 16, 3) * 2 - 1, r"video holds values from -.*; frames are floats in 0..1 .*not -1..1"),
    (torch.rand(9, 16, 16, 3).index_fill_(0, torch.tensor([3]), float("nan")),
     r"video holds 768 NaN or inf values \(the first in frame 3\)"),
    (torch.zeros(9, 16, 16, 3, dtype=torch.int64), r"video has dtype torch.int64; use float frames in 0..1 or uint8"),
])
def test_frames_on_another_scale_or_with_nan_are_named_before_any_work(pipe, frames, message, monkeypatch):
    monkeypatch.setattr(cond, "encode_frames", lambda *a: pytest.fail("encoded"))
    with pytest.raises(ValueError, match=message):
        pipe.edit(frames, "x", 0.5, **KW)


def test_pixel_sizes_are_named_by_the_input_not_in_latent_cells(pipe):
    with pytest.raises(ValueError, match=r"video is 36x32 px \(width x height\): width=36 is not allowed: it must "
                                         r"be a positive multiple of 8; nearest valid: \[32, 40\]"):
        pipe.extend(torch.rand(9, 32, 36, 3), "x", new_frames=4, context_frames=4, **KW)


def test_a_loop_names_its_only_clip(pipe):
    with pytest.raises(ValueError, match=r"^video has 5 frames; looping with context_frames=8 needs at least 9$"):
        pipe.loop(torch.rand(5, 16, 16, 3), "x", transition_frames=4, context_frames=8, **KW)


@pytest.mark.parametrize("bad", [1.5, -0.2, float("nan")])
def test_an_edit_strength_is_named_as_strength(pipe, bad):
    with pytest.raises(ValueError, match=r"^strength=.* is not allowed: use a number from 0 \(keep the input\) to 1"):
        pipe.edit(torch.rand(5, 16, 16, 3), "x", bad, **KW)


def test_numpy_integers_are_sizes_and_counts_like_ints(pipe):
    import numpy as np

    i = np.int64
    assert torch.equal(pipe.generate("x", i(16), i(8), i(5), seed=3, **KW), pipe.generate("x", 16, 8, 5, seed=3, **KW))
    clip = torch.rand(9, 16, 16, 3, generator=torch.Generator().manual_seed(5))
    assert torch.equal(pipe.extend(clip, "x", i(4), i(4), blend_frames=i(2), seed=3, **KW),
                       pipe.extend(clip, "x", 4, 4, blend_frames=2, seed=3, **KW))
    assert torch.equal(pipe.generate("x", 16, 8, 5, seed=3, decode_chunk=i(1), decode_tile=i(0), **KW),
                       pipe.generate("x", 16, 8, 5, seed=3, decode_chunk=1, decode_tile=0, **KW))


@pytest.mark.parametrize("call,message", [
    (lambda p: p.generate("x", 16.0, 16, 5), r"^width=16\.0 is not allowed: use a whole number of pixels, a positive "
                                              r"multiple of 8$"),
    (lambda p: p.generate("x", 16, 16, True), r"^frames=True is not allowed: use a whole number of frames, 1 \+ 4\*k"),
    (lambda p: p.extend(torch.rand(9, 16, 16, 3), "x", 4.0, 4), r"^new_frames=4\.0 is not allowed: use a whole "
                                                                 r"number of frames, a multiple of 4$"),
])
def test_a_size_or_count_that_is_not_a_whole_number_is_refused_as_such(pipe, call, message):
    with pytest.raises(ValueError, match=message):
        call(pipe)


# -- prompts and settings -------------------------------------------------------------------------------

def test_none_prompts_are_refused_clearly(pipe):
    with pytest.raises(TypeError, match="prompt must be a string; got NoneType"):
        pipe.generate(None, 16, 16, 5, **KW)
    with pytest.raises(TypeError, match=r"negative must be a string; got NoneType \(use '' for no negative prompt\)"):
        pipe.generate("x", 16, 16, 5, negative=None, **KW)


@pytest.mark.parametrize("settings,message", [
    ({"seed": -1}, r"seed=-1 is not allowed: use an integer from 0 to 2\*\*64 - 1"),
    ({"seed": 2**64}, r"seed=18446744073709551616 is not allowed"),
    ({"seed": 1.5}, r"seed=1.5 is not allowed"),
    ({"shift": 0}, r"shift=0 is not allowed: use a number > 0"),
    ({"shift": -2.0}, r"shift=-2.0 is not allowed"),
    ({"steps": 0}, r"steps=0 is not allowed"),
    ({"cfg": -1.0}, r"cfg=-1.0 is not allowed"),
    ({"sampler": "ddim"}, r"sampler='ddim' is not available"),
])
def test_sampling_settings_are_refused_by_name(pipe, settings, message):
    with pytest.raises(ValueError, match=message):
        pipe.generate("x", 16, 16, 5, **(KW | settings))


def test_a_misspelt_setting_is_named_as_the_callers_argument(pipe):
    with pytest.raises(TypeError, match=r"^unknown option stepz; allowed: seed, steps"):
        pipe.generate("x", 16, 16, 5, stepz=2)


def test_every_comfyui_seed_works_and_numpy_seeds_too(pipe):
    import numpy as np

    top = pipe.generate("a red circle", 16, 16, 1, seed=2**64 - 1, **KW)
    assert torch.isfinite(top).all() and not torch.equal(top, pipe.generate("a red circle", 16, 16, 1, seed=0, **KW))
    assert torch.equal(pipe.generate("a red circle", 16, 16, 1, seed=np.uint64(7), **KW),
                       pipe.generate("a red circle", 16, 16, 1, seed=7, **KW))


# -- the budget ---------------------------------------------------------------------------------------

def test_an_absurd_size_is_refused_before_allocating(pipe, monkeypatch):
    monkeypatch.delenv("SORA_MAX_TOKENS", raising=False)
    monkeypatch.setattr(cond, "empty_window", lambda *a: pytest.fail("allocated the latent"))
    with pytest.raises(BudgetError, match=r"^generate: 65536x65536 px x 17 frames is 335,544,320 DiT tokens; the "
                                          r"limit is 65,536 \(the default; set SORA_MAX_TOKENS, --max-tokens or "
                                          r"Budget\(max_tokens=...\)\)"):
        pipe.generate("x", 65536, 65536, 17, **KW)
    with pytest.raises(BudgetError, match=r"32x32 px x 40001 frames is 160,016 DiT tokens"):
        pipe.generate("x", 32, 32, 40001, **KW)


def test_limits_come_from_the_pipeline_or_the_environment(pipe, monkeypatch):
    monkeypatch.setenv("SORA_MAX_TOKENS", "20")
    with pytest.raises(BudgetError, match=r"32x32 px x 5 frames is 32 DiT tokens; the limit is 20 \(SORA_MAX_TOKENS"):
        pipe.generate("x", 32, 32, 5, **KW)
    monkeypatch.setattr(pipe, "budget", Budget(max_tokens=40, max_memory=1 << 19))  # the pipeline's own wins
    with pytest.raises(BudgetError, match=r"32x32 px x 5 frames needs about .* of memory \(latents .*\); the limit "
                                          r"is 512.0 KiB \(as asked"):
        pipe.generate("x", 32, 32, 5, **KW)


def test_an_edit_is_checked_before_its_clip_is_encoded(pipe, monkeypatch):
    monkeypatch.setattr(pipe, "budget", Budget(max_memory=4 << 20))
    monkeypatch.setattr(cond, "encode_frames", lambda *a: pytest.fail("encoded"))
    with pytest.raises(BudgetError, match=r"edit: 64x64 px x 33 frames needs about .* VAE encode"):
        pipe.edit(torch.rand(33, 64, 64, 3), "x", 0.5, **KW)


def test_a_vae_that_overflows_is_named_instead_of_returning_nan_frames(micro_checkpoint):
    broken = Pipeline.load(micro_checkpoint)
    with torch.no_grad():
        for layer in (0, 2):  # finite weights whose activations overflow float32
            broken.vae.decoder.net[layer].conv.weight.mul_(1e38)
    with pytest.raises(FloatingPointError, match="the VAE decoded NaN/inf from finite latents"):
        broken.generate("x", 16, 16, 5, **KW)
