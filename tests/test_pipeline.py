"""The Python API end to end on a micro model: determinism, preserved frames, SDEdit, errors."""

import pytest
import torch

from sora_core import conditioning as cond
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


def test_an_empty_prompt_is_refused(pipe):
    with pytest.raises(ValueError, match="prompt is empty"):
        pipe.generate("  ", 16, 16, 5, **KW)


def test_invalid_sizes_name_the_value_and_nearest_valid(pipe):
    with pytest.raises(ValueError, match=r"width=30 .*multiple of 8.*\[24, 32\]"):
        pipe.generate("x", 30, 16, 5, **KW)
    with pytest.raises(ValueError, match=r"frames=8 .*\[5, 9\]"):
        pipe.generate("x", 16, 16, 8, **KW)


def test_unknown_direction_is_refused(pipe):
    with pytest.raises(ValueError, match="direction='sideways'"):
        pipe.extend(torch.rand(9, 16, 16, 3), "x", direction="sideways", **KW)
