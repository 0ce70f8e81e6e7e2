"""One conditioning mechanism: the window layouts, the splice plans, and their errors."""

import pytest
import torch

from sora_core import conditioning as cond
from sora_core.config import preset
from sora_core.vae import VideoVAE


@pytest.fixture(scope="module")
def vae():
    torch.manual_seed(0)
    return VideoVAE(preset("micro").vae).eval()


def clip(frames, seed=0, h=16, w=24):
    return torch.rand(frames, h, w, 3, generator=torch.Generator().manual_seed(seed))


def given(window):
    return (window.strength[0] == 0).tolist()


@torch.no_grad()
def test_animate_image_gives_the_first_latent_frame(vae):
    w = cond.animate_image(vae, clip(1), 17)
    assert given(w) == [True, False, False, False, False]
    assert torch.allclose(w.samples[:, :, :1], cond.encode_frames(vae, clip(1)))


@torch.no_grad()
def test_an_image_can_be_the_last_frame_instead(vae):
    assert given(cond.animate_image(vae, clip(1), 9, at="last")) == [False, False, True]


@pytest.mark.parametrize("at", ["first", "last"])
@torch.no_grad()
def test_animate_splices_the_image_back_exactly_and_crossfades_after_it(vae, at):
    image, decoded = clip(1), clip(9, seed=1)
    out = cond.animate_image(vae, image, 9, at=at, blend_frames=3).splice.apply(decoded)
    if at == "last":  # the same plan, mirrored in time
        out, decoded = out.flip(0), decoded.flip(0)
    assert out.shape == decoded.shape and torch.equal(out[0], image[0])
    for j, w in ((1, 1 / 4), (2, 2 / 4), (3, 3 / 4)):  # from the still into the generated frames
        assert torch.allclose(out[j], image[0] * (1 - w) + decoded[j] * w)
    assert torch.equal(out[4:], decoded[4:])
    hard = cond.animate_image(vae, image, 9, at=at, blend_frames=0).splice.apply(decoded.flip(0) if at == "last" else decoded)
    hard = hard.flip(0) if at == "last" else hard
    assert torch.equal(hard[0], image[0]) and torch.equal(hard[1:], decoded[1:])


@torch.no_grad()
def test_extend_forward_gives_the_sources_last_chunks_at_the_start(vae):
    video = clip(17)
    w = cond.extend_forward(vae, video, new_frames=8, context_frames=8)
    assert given(w) == [True, True, True, False, False]
    # the given latents are those the source's own last 9 frames have
    assert torch.allclose(w.samples[:, :, :3], cond.encode_frames(vae, video[-9:]), atol=1e-6)
    decoded = clip(1 + 4 * 4, seed=5)
    out = w.splice.apply(decoded)
    assert out.shape[0] == 17 + 8 and torch.equal(out[:13], video[:13])  # untouched up to the crossfade
    weights = torch.tensor([1, 2, 3, 4]).view(4, 1, 1, 1) / 5  # decoded[5:9] re-creates video[13:17]
    assert torch.allclose(out[13:17], video[13:] * (1 - weights) + decoded[5:9] * weights)
    assert torch.equal(out[17:], decoded[9:])
    hard = cond.extend_forward(vae, video, new_frames=8, context_frames=8, blend_frames=0).splice.apply(decoded)
    assert torch.equal(hard[:17], video) and torch.equal(hard[17:], decoded[9:])


@torch.no_grad()
def test_extend_backward_gives_the_sources_first_chunks_at_the_end(vae):
    video = clip(17)
    w = cond.extend_backward(vae, video, new_frames=8, context_frames=8)
    assert given(w) == [False, False, False, True, True]
    whole = cond.encode_frames(vae, video[:9])  # frames 1..8 are chunks 1 and 2 of the video itself
    assert torch.allclose(cond.encode_chunk_frames(vae, video[1:9]), whole[:, :, 1:], atol=1e-6)
    decoded = clip(1 + 4 * 4, seed=5)
    out = w.splice.apply(decoded)
    assert out.shape[0] == 8 + 17 and torch.equal(out[12:], video[4:]) and torch.equal(out[:8], decoded[1:9])
    weights = torch.tensor([4, 3, 2, 1]).view(4, 1, 1, 1) / 5  # strongest right after the join
    assert torch.allclose(out[8:12], video[:4] * (1 - weights) + decoded[9:13] * weights)


@torch.no_grad()
def test_connect_gives_both_ends_and_splices_a_transition_between_the_clips(vae):
    a, b = clip(9, 1), clip(13, 2)
    w = cond.connect(vae, a, b, transition_frames=12, context_frames=4)
    assert given(w) == [True, True, False, False, False, True]
    out = cond.connect(vae, a, b, 12, 4, blend_frames=0).splice.apply(torch.zeros(1 + 4 * 5, 16, 24, 3))
    assert out.shape[0] == 9 + 12 + 13
    assert torch.equal(out[:9], a) and torch.equal(out[-13:], b)
    decoded = clip(1 + 4 * 5, seed=5)
    blended = w.splice.apply(decoded)
    # the first clip's end crossfades into its decoded self; the second clip is untouched and the
    # transition's second half eases into its first frame instead (the decoder is causal: decoded
    # frames after a transition still carry it)
    assert torch.equal(blended[:5], a[:5]) and torch.equal(blended[-13:], b)
    assert not torch.equal(blended[5:9], a[5:])
    up = (torch.arange(1, 7) / 7).view(6, 1, 1, 1)
    assert torch.equal(blended[9:15], decoded[5:11])
    assert torch.allclose(blended[15:21], decoded[11:17] * (1 - up) + b[:1] * up)


@torch.no_grad()
def test_loop_leads_back_into_the_clips_own_start(vae):
    video = clip(9)
    w = cond.loop(vae, video, transition_frames=8, context_frames=4)
    assert given(w)[-1] and given(w)[0]
    assert torch.allclose(w.samples[:, :, -1:], cond.encode_chunk_frames(vae, video[:4]), atol=1e-6)
    decoded = clip(1 + 4 * 4, seed=5)
    out = w.splice.apply(decoded)
    assert out.shape[0] == 9 + 8 and torch.equal(out[4:5], video[4:5])
    # the clip's end crossfades into the transition; its start (which follows the transition on
    # repeat) is untouched, and the transition's second half eases into the clip's first frame
    up = torch.tensor([1, 2, 3, 4]).view(4, 1, 1, 1) / 5
    assert torch.allclose(out[5:9], video[5:] * (1 - up) + decoded[1:5] * up)
    assert torch.equal(out[:5], video[:5])
    assert torch.equal(out[9:13], decoded[5:9])
    assert torch.allclose(out[13:], decoded[9:13] * (1 - up) + video[:1] * up)


@torch.no_grad()
def test_extended_frames_start_from_the_nearest_given_frame_held_and_noised_more_further_away(vae):
    video = clip(17)
    forward = cond.extend_forward(vae, video, new_frames=12, context_frames=8, strength=0.4)
    assert forward.strength[0].tolist() == pytest.approx([0, 0, 0, 0.4, 0.7, 1.0])
    for f in (3, 4, 5):  # the clip's last latent frame, held
        assert torch.equal(forward.samples[:, :, f], forward.samples[:, :, 2])
    backward = cond.extend_backward(vae, video, new_frames=8, context_frames=8, strength=0.4)
    assert backward.strength[0].tolist() == pytest.approx([1.0, 0.7, 0.4, 0, 0])  # mirrored: nearest the clip last
    for f in (0, 1, 2):  # the clip's first latent frame, held
        assert torch.equal(backward.samples[:, :, f], backward.samples[:, :, 3])
    noise = cond.extend_forward(vae, video, new_frames=12, context_frames=8, strength=1.0)
    assert noise.strength[0].tolist() == [0, 0, 0, 1, 1, 1] and not noise.samples[:, :, 3:].any()
    assert cond.extend(vae, video, 12, 8).strength[0, 3] == cond.EXTEND_STRENGTH  # the default


@torch.no_grad()
def test_a_transition_starts_from_a_dissolve_noised_most_in_its_middle(vae):
    a, b = clip(9, 1), clip(13, 2)
    w = cond.connect(vae, a, b, transition_frames=12, context_frames=4, strength=0.5)
    s = w.strength[0].tolist()
    assert s[:2] == [0, 0] and s[-1] == 0
    assert s[2] == pytest.approx(s[4]) and s[3] == pytest.approx(0.5) and 0 < s[2] < s[3]  # a bump, peak 0.5
    first, last = w.samples[:, :, 1], w.samples[:, :, 5]  # the ends the dissolve runs between
    steps = [float((w.samples[:, :, f] - first).norm() / (last - first).norm()) for f in (2, 3, 4)]
    assert steps[0] < 0.5 and steps[1] == pytest.approx(0.5, abs=1e-5) and steps[2] > 0.5  # from a to b
    assert cond.connect(vae, a, b, 12, 4, strength=1.0).strength[0].tolist() == [0, 0, 1, 1, 1, 0]
    loop = cond.loop(vae, a, transition_frames=8, context_frames=4)
    assert max(loop.strength[0].tolist()) == pytest.approx(cond.TRANSITION_STRENGTH)  # the default


@pytest.mark.parametrize("bad", [-0.1, 1.5, "x"])
def test_a_bad_start_strength_is_refused_before_encoding(vae, bad):
    for build in (lambda: cond.extend(vae, clip(17), 8, 8, strength=bad),
                  lambda: cond.connect(vae, clip(9), clip(9), 8, 4, strength=bad),
                  lambda: cond.loop(vae, clip(9), 8, 4, strength=bad)):
        with pytest.raises(ValueError, match=f"strength={bad!r} is not allowed"):
            build()


@pytest.mark.parametrize("bad", [-1, 2.5, True])
def test_a_bad_blend_is_refused(vae, bad):
    with pytest.raises(ValueError, match=f"blend_frames={bad!r}"):
        cond.extend_forward(vae, clip(17), new_frames=8, context_frames=8, blend_frames=bad)


def test_sdedit_sets_every_frame_to_the_strength():
    w = cond.sdedit(torch.zeros(1, 4, 3, 4, 4), 0.4)
    assert torch.allclose(w.strength, torch.full((1, 3), 0.4))


@pytest.mark.parametrize("bad", [-0.1, 1.5])
def test_sdedit_strength_outside_zero_one_is_refused(bad):
    with pytest.raises(ValueError, match=f"strength={bad}"):
        cond.sdedit(torch.zeros(1, 4, 3, 4, 4), bad)


def test_timings_must_be_whole_chunks_of_four_frames(vae):
    with pytest.raises(ValueError, match=r"new_frames=6 .*multiple of 4"):
        cond.extend_forward(vae, clip(17), new_frames=6, context_frames=8)
    with pytest.raises(ValueError, match=r"context_frames=0"):
        cond.extend_backward(vae, clip(17), new_frames=8, context_frames=0)


def test_a_clip_too_short_for_its_context_is_refused(vae):
    with pytest.raises(ValueError, match=r"video has 5 frames.*needs at least 9"):
        cond.extend_forward(vae, clip(5), new_frames=4, context_frames=8)


def test_connect_refuses_clips_of_different_sizes(vae):
    with pytest.raises(ValueError, match=r"same frame size.*\(16, 24\).*\(24, 16\)"):
        cond.connect(vae, clip(9), clip(9, h=24, w=16), transition_frames=4, context_frames=4)


def test_frames_must_be_height_width_channels(vae):
    with pytest.raises(ValueError, match="video must be frames of shape"):
        cond.extend_forward(vae, torch.zeros(9, 3, 16, 24), 4, 4)
