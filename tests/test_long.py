"""Long video by chained extension (sora_core.long), with the random-weight micro model."""

from __future__ import annotations

import gc

import pytest
import torch

from sora_core.conditioning import video_to_frames
from sora_core.long import (DECODE_CONTEXT, MAX_TILT, PLANE_FIT, RETRY_SEED_STRIDE, LongVideo, backdrop,
                            backdrop_correction, join_seam, latent_stats, match_stats, opening_backdrop, seam_ratio)
from sora_core.pipeline import Pipeline

FAST = dict(steps=1, cfg=1.0)
SIZE = 32


@pytest.fixture(scope="module")
def pipe(micro_model):
    return Pipeline.from_model(micro_model)


def ramp_clip(frames: int) -> torch.Tensor:
    """A colour ramp drifting right: smooth, and every frame different."""
    x = torch.linspace(0, 1, SIZE)
    rows = [torch.stack([(x + t / 40) % 1, x.flip(0), torch.full_like(x, 0.3)], -1) for t in range(frames)]
    return torch.stack(rows)[:, None].expand(frames, SIZE, SIZE, 3).contiguous()


def test_the_plan_fills_the_length_in_whole_chunks_and_a_loop_keeps_a_full_transition(pipe):
    job = LongVideo(pipe, "x", 60, width=SIZE, height=SIZE)
    assert (job.opening, job.pieces, job.frames, job.windows) == (17, [16, 16, 12], 60, 4)
    assert job.joins == [16, 32, 48]
    loop = LongVideo(pipe, "x", 60, width=SIZE, height=SIZE, loop=True)
    assert (loop.pieces, loop.frames) == ([12, 16, 16], 61)  # the transition is last and whole
    clip = LongVideo(pipe, "x", 45, start=ramp_clip(13), new_frames=8, context_frames=4)
    assert (clip.opening, clip.pieces, clip.windows, clip.joins) == (13, [8, 8, 8, 8], 4, [12, 20, 28, 36])


@pytest.mark.parametrize("kwargs,message", [
    (dict(drift="context"), "drift='context' is not allowed"),
    (dict(new_frames=6), "new_frames=6 is not allowed: use a multiple of 4"),
    (dict(context_frames=0), "context_frames=0 is not allowed"),
    (dict(blend_frames=-1), "blend_frames=-1"),
    (dict(width=30), "width=30 is not allowed"),
    (dict(window_frames=16), "frames=16 is not allowed"),
    (dict(frames=17), "frames=17 is not allowed: a long video is longer than its opening"),
    (dict(start=ramp_clip(5)), "the opening has 5 frames; context_frames=8 need at least 9"),
    (dict(start=ramp_clip(9), loop=True), "the opening has 9 frames.*loop with blend_frames=4 need at least 12"),
    (dict(prompt=" "), "prompt is empty"),
])
def test_bad_settings_are_named_before_any_work(pipe, kwargs, message):
    args = dict(prompt="a ball", frames=40, width=SIZE, height=SIZE) | kwargs
    with pytest.raises(ValueError, match=message):
        LongVideo(pipe, args.pop("prompt"), args.pop("frames"), **args)


def test_progress_counts_the_model_s_own_steps_when_none_are_given(pipe):
    events = []
    job = LongVideo(pipe, "a ball", 21, width=SIZE, height=SIZE, new_frames=4, context_frames=4, cfg=1.0,
                    steps=None, progress=lambda w, n, s, t: events.append((w, n, s, t)))
    assert sum(len(chunk) for chunk in job) == 21
    steps = pipe.defaults.steps
    assert events == [(w, 2, s, steps) for w in (1, 2) for s in range(steps + 1)]


def test_frames_stream_out_as_each_window_finishes_and_the_start_clip_is_kept(pipe):
    clip = ramp_clip(13)
    events, chunks = [], []
    job = LongVideo(pipe, "a ball", 45, start=clip, new_frames=8, context_frames=4, seed=3,
                    progress=lambda w, n, s, t: events.append((w, s)), **FAST)
    for chunk in job:
        chunks.append((events[-1][0] if events else 0, chunk))
    video = torch.cat([c for _, c in chunks])
    assert video.shape == (45, SIZE, SIZE, 3)
    # each chunk leaves before the next window starts: the clip's settled frames before window 1,
    # then window k's frames (less the 5 the next window sees) before window k + 1
    assert [w for w, _ in chunks] == [0, 1, 2, 3, 4] and [len(c) for _, c in chunks] == [8, 8, 8, 8, 13]
    assert events == [(w, s) for w in range(1, 5) for s in (0, 1)]
    assert torch.equal(video[:9], clip[:9])  # untouched but for the 4 frames crossfaded at the first join
    assert not torch.equal(video[9:13], clip[9:13])


def live_tensor_bytes() -> int:
    """Bytes of every tensor storage alive in the process but the model's weights (counted once each)."""
    storages = {}
    for obj in gc.get_objects():
        if type(obj) is torch.Tensor and obj.layout == torch.strided:
            s = obj.untyped_storage()
            storages[s.data_ptr()] = s.nbytes()
    return sum(storages.values())


def test_memory_stays_flat_in_the_length(pipe):
    def peak(windows: int) -> int:
        before = live_tensor_bytes()
        seen = []
        job = LongVideo(pipe, "a ball", 17 + 16 * windows, width=SIZE, height=SIZE,
                        progress=lambda *_: seen.append(live_tensor_bytes()), **FAST)
        total = sum(len(chunk) for chunk in job)  # a consumer that writes each chunk away
        assert total == 17 + 16 * windows
        return max(seen) - before

    short, long = peak(2), peak(8)
    frame = SIZE * SIZE * 3 * 4
    # four times the length, the same memory (holding the video would add its 96 more frames)
    assert long <= short + 2 * frame, (short, long)


def test_one_latent_stream_context_and_decode_and_anchor_matches_new_latents_to_the_opening(pipe, monkeypatch):
    decoded, windows = [], []
    decode, latents = pipe.vae.decode, pipe.latents
    monkeypatch.setattr(pipe.vae, "decode", lambda z, **kw: decoded.append(z.clone()) or decode(z, **kw))
    monkeypatch.setattr(pipe, "latents", lambda w, *a, **kw: windows.append(w.samples.clone()) or latents(w, *a, **kw))

    def run(drift: str) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        decoded.clear()
        windows.clear()
        list(LongVideo(pipe, "a ball", 49, width=SIZE, height=SIZE, drift=drift, seed=5, overlap_frames=0, **FAST))
        return list(decoded), list(windows)

    k = DECODE_CONTEXT
    none, anchor = run("none"), run("anchor")
    for decodes, contexts in (none, anchor):
        # the opening (a lone frame + 4 chunks), then per window: the video's last k latents + 4 new ones
        assert [z.shape[2] for z in decodes] == [5] + [k + 4] * 2
        for before, after, seen in zip(decodes, decodes[1:], contexts[1:]):  # contexts[0]: the opening
            assert torch.equal(after[:, :, :k], before[:, :, -k:])  # the decoder carries on from the video's latents
            assert torch.equal(seen[:, :, 1:3], before[:, :, -2:])  # the DiT's context: the same latents
    reference = latent_stats(anchor[0][0][:, :, 1:])  # the opening's chunks
    for z in anchor[0][1:]:
        for got, want in zip(latent_stats(z[:, :, k:]), reference):
            torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(none[0][0], anchor[0][0])  # the opening is never moved
    gap = [(latent_stats(z[:, :, k:])[0] - reference[0]).abs().max() for z in none[0][1:]]
    assert min(gap) > 1e-2  # left alone, the windows do not match the opening on their own


def test_stream_decode_matches_decoding_the_whole_video_at_once(pipe):
    """Decoding each window after the video's last DECODE_CONTEXT latents gives (nearly) the frames one
    decode of the whole latent video gives: the joins are the decoder's, not a cut between two decodes."""
    captured = []
    job = LongVideo(pipe, "a ball", 49, width=SIZE, height=SIZE, drift="none", seed=2, blend_frames=0,
                    overlap_frames=0, **FAST)
    decode = pipe.vae.decode
    pipe.vae.decode = lambda z, **kw: captured.append(z.clone()) or decode(z, **kw)
    try:
        frames = torch.cat(list(job))
    finally:
        del pipe.vae.decode
    whole = torch.cat([captured[0]] + [z[:, :, DECODE_CONTEXT:] for z in captured[1:]], dim=2)
    with torch.no_grad():
        reference = video_to_frames(decode(whole)).float()
    assert frames.shape == reference.shape
    err = (frames - reference).abs().mean(dim=(1, 2, 3))
    assert float(err.max()) < 0.02, err
    cut = (frames[:17] - reference[:17]).abs().max()
    assert float(cut) < 1e-5  # the opening is decoded alone in both


def test_match_stats_moves_every_channel_to_the_target():
    z = torch.randn(1, 4, 3, 5, 5) * torch.tensor([1.0, 2.0, 0.5, 3.0]).view(1, 4, 1, 1, 1) + 7
    mean, std = torch.arange(4.0).view(1, 4, 1, 1, 1), torch.full((1, 4, 1, 1, 1), 0.25)
    for got, want in zip(latent_stats(match_stats(z, mean, std)), (mean, std)):
        torch.testing.assert_close(got, want)


def test_cancel_stops_between_steps_and_keeps_the_finished_chunks(pipe):
    class Cancelled(Exception):
        pass

    def progress(window, windows, step, steps):
        if window == 3 and step == 1:
            raise Cancelled

    got = []
    with pytest.raises(Cancelled):
        for chunk in LongVideo(pipe, "a ball", 81, width=SIZE, height=SIZE, progress=progress, **FAST):
            got.append(chunk)
    assert [len(c) for c in got] == [8, 16]  # windows 1 and 2, less the frames window 3 was to see


def test_a_loop_ends_on_a_transition_into_its_own_unchanged_opening(pipe):
    clip = ramp_clip(21)
    frames = torch.cat(list(LongVideo(pipe, "a ball", 41, start=clip, loop=True, seed=1, **FAST)))
    assert frames.shape[0] == 21 + 20 and torch.equal(frames[:17], clip[:17])
    assert torch.isfinite(frames).all() and 0 <= frames.min() and frames.max() <= 1


def test_eval_measures_drift_and_every_join_of_a_chain(pipe):
    from sora_core.eval.run import long_chain

    clip = ramp_clip(17)
    drift, seams, frames = long_chain(pipe, clip, "a ball", windows=3, new_frames=8, context_frames=4, **FAST)
    assert frames.shape[0] == 17 + 3 * 8 and len(seams) == 3
    assert all(s > 0 for s in seams) and 0 <= drift <= 255


def test_the_backdrop_plane_is_the_rings_median_colour_on_a_flat_backdrop():
    frames = torch.full((3, 16, 16, 3), 0.25)
    frames[:, 2:14, 2:14] = 0.9  # a subject filling all but the outer eighth of each side
    frames[0, 0, :6] = 1.0  # a few odd ring pixels do not move a median
    assert torch.equal(backdrop(frames)[0], torch.full((16, 16, 3), 0.25))
    frames[:, :, :, 1] = 0.5
    assert torch.equal(backdrop(frames)[0][..., 1], torch.full((16, 16), 0.5))


def test_the_backdrop_plane_holds_a_backdrop_that_fades_across_the_frame():
    """A backdrop darker toward the bottom and redder toward the right, a subject in the middle: the field is
    the backdrop itself, to within two grey levels, under the subject too (a median of an even count is
    its lower middle value: half a row's step off here)."""
    y = torch.linspace(0.9, 0.5, 32).view(32, 1)
    x = torch.linspace(-0.1, 0.1, 48).view(1, 48)
    truth = torch.stack([y + x, y.expand(32, 48), y.expand(32, 48) - 0.05], dim=-1)
    frames = truth.expand(4, 32, 48, 3).clone()
    frames[:, 10:22, 14:34] = torch.tensor([0.1, 0.8, 0.1])
    assert (backdrop(frames)[0] - truth).abs().max() < 2 / 255


def test_a_subject_over_one_side_does_not_tilt_the_correction():
    """A window whose subject covers most of the bottom band moves that side's median: the planes' difference
    would tint the frame by a third of the range. It tilts by more than MAX_TILT, so the ring's median
    colour, which one side cannot move, gives the correction instead: none here."""
    still = torch.full((4, 64, 64, 3), 0.5)
    window = still.clone()
    window[:, 40:, 6:45] = torch.tensor([1.0, 0.0, 0.0])
    tilt = backdrop(still)[0] - backdrop(window)[0]
    assert float((tilt - tilt.mean(dim=(0, 1))).abs().max()) > MAX_TILT
    assert torch.equal(backdrop_correction(backdrop(still), window), torch.zeros(3))
    faded = still * torch.linspace(1.0, 0.9, 64).view(1, 64, 1, 1)  # a slow fade: the plane's difference
    torch.testing.assert_close(backdrop_correction(backdrop(still), faded), still[0] - faded[0], atol=1 / 255, rtol=0)


def test_the_opening_keeps_its_plane_only_where_its_backdrop_fades():
    """A backdrop that fades across the frame is a plane: the opening keeps it. A black backdrop with a grid
    of thin grey lines is not, though its sides' medians differ (one band catches more line pixels than
    another) and the plane through them tilts: the opening holds the ring's one median colour instead, and
    the correction is that colour's difference, whatever the planes say."""
    y = torch.linspace(0.9, 0.5, 64).view(64, 1, 1)
    faded = y.expand(4, 64, 64, 3).clone()
    plane, ring = opening_backdrop(faded)
    assert plane is not None and (plane - faded[0]).abs().max() < 2 / 255

    grid = torch.full((4, 64, 64, 3), 0.07)
    for k in range(0, 64, 6):
        grid[:, k : k + 2] = 0.2
        grid[:, :, k : k + 2] = 0.2
    field, ring = backdrop(grid)
    assert float(field.max() - field.min()) > 8 / 255  # the tilt that is not there
    plane, ring = opening_backdrop(grid)
    assert plane is None
    brighter = grid.clone()
    brighter[:, :, :32] += 0.02  # the redraw: lines brighter on the left half only
    torch.testing.assert_close(backdrop_correction((plane, ring), brighter), ring - backdrop(brighter)[1])
    assert backdrop_correction((plane, ring), brighter).shape == (3,)


def test_colour_drift_control_pulls_each_window_to_the_openings_backdrop(pipe):
    """drift="colour" leaves the latents alone (the same frames as "none" before correction) and shifts
    each window's new frames, ramping from the correction at the join to the one that gives the window's
    frames the opening's backdrop: a colour plane through the median colours of the four sides of the
    outer eighth of the frame, where that plane fits the opening's ring better than its one median colour."""
    kw = dict(width=SIZE, height=SIZE, seed=4, blend_frames=0, overlap_frames=0, retries=0, **FAST)  # hard cuts
    plain = torch.cat(list(LongVideo(pipe, "a ball", 49, drift="none", **kw)))
    fixed = torch.cat(list(LongVideo(pipe, "a ball", 49, drift="colour", **kw)))
    assert torch.equal(fixed[:17], plain[:17])  # the opening is the reference, untouched

    def plane(frames):  # written out by hand: 4 px of each side of a 32 px frame
        side = lambda band: band.reshape(-1, 3).median(dim=0).values
        top, bottom = side(frames[:, :4]), side(frames[:, -4:])
        left, right = side(frames[:, 4:-4, :4]), side(frames[:, 4:-4, -4:])
        at = (torch.arange(SIZE) - 15.5) / 28  # band centres 1.5 and 29.5: 28 px apart
        return ((top + bottom + left + right) / 4 + (bottom - top) * at.view(-1, 1, 1)
                + (right - left) * at.view(1, -1, 1))

    def ring(f):
        return torch.cat([f[:, :4].reshape(-1, 3), f[:, -4:].reshape(-1, 3), f[:, 4:-4, :4].reshape(-1, 3),
                          f[:, 4:-4, -4:].reshape(-1, 3)]).median(dim=0).values

    reference = plane(plain[:17])
    outer = torch.ones(SIZE, SIZE, dtype=torch.bool)
    outer[4:-4, 4:-4] = False
    pixels = plain[:17][:, outer]
    fits = (pixels - reference[outer]).abs().mean() <= PLANE_FIT * (pixels - ring(plain[:17])).abs().mean()
    offset = torch.zeros(3)
    for start in (17, 33):  # two windows of 16 new frames
        new = plain[start : start + 16]
        target = reference - plane(new)
        if not fits or float((target - target.mean(dim=(0, 1))).abs().max()) > MAX_TILT:  # the ring's median instead
            target = ring(plain[:17]) - ring(new)
        ramp = (torch.arange(1, 17) / 16).view(-1, 1, 1, 1)
        want = (new + offset + ramp * (target - offset)).clamp(0, 1)
        torch.testing.assert_close(fixed[start : start + 16], want, atol=1e-5, rtol=0)
        offset = target
    assert float(target.abs().max()) > 1e-3  # the micro model does drift: the check is not vacuous


def test_a_jumpy_join_is_drawn_again_and_the_smoothest_draw_is_kept(pipe, monkeypatch):
    import sora_core.long as long

    kw = dict(start=ramp_clip(13), new_frames=8, context_frames=4, **FAST)

    def draw(seed, **options):
        job = LongVideo(pipe, "a ball", 13 + 8, seed=seed, **kw, **options)
        return job, torch.cat(list(job))

    # attempt a of a window is the draw a plain job makes with its seed moved by a * RETRY_SEED_STRIDE
    draws = [draw(2 + a * RETRY_SEED_STRIDE)[1] for a in range(3)]
    assert not torch.equal(draws[0], draws[1]) and not torch.equal(draws[1], draws[2])
    measured = []
    real = long.seam_ratio

    def seams(values):  # the job's seam measure reports these, attempt by attempt
        measured.clear()

        def fake(frames, before):
            measured.append(real(frames, before))
            return values[len(measured) - 1]
        monkeypatch.setattr(long, "seam_ratio", fake)

    seams([5.0, 3.0, 4.0])
    strict, frames = draw(2, retries=2, seam_limit=2.0)  # no draw within the limit: all three, the smoothest kept
    assert strict.redraws == 2 and torch.equal(frames, draws[1])
    assert measured[0] == real(draws[0][-13:], 4)  # it measures the held frames + the new ones, at the join
    seams([5.0, 3.0, 4.0])
    job, frames = draw(2, retries=2, seam_limit=3.5)  # the first draw within the limit ends the search
    assert job.redraws == 1 and torch.equal(frames, draws[1])
    seams([5.0, 3.0, 4.0])
    job, frames = draw(2, retries=2, seam_limit=9.0)  # the first draw is within: nothing drawn again
    assert job.redraws == 0 and torch.equal(frames, draws[0])
    seams([5.0, 3.0, 4.0])
    events = []
    job, frames = draw(2, retries=1, seam_limit=2.0, progress=lambda w, n, i, s: events.append((w, n)))
    assert job.redraws == 1 and torch.equal(frames, draws[1])
    assert set(events) == {(1, 1)}  # a redraw shows as the same window


def test_overlapping_windows_draw_the_last_held_chunk_again_and_crossfade_into_it(pipe, monkeypatch):
    clip = ramp_clip(17)
    windows, decoded = [], []
    latents, decode = pipe.latents, pipe.decode
    monkeypatch.setattr(pipe, "latents", lambda w, *a, **kw: windows.append(w.strength.clone()) or latents(w, *a, **kw))
    monkeypatch.setattr(pipe, "decode", lambda *a, **kw: decoded.append(decode(*a, **kw)) or decoded[-1])
    job = LongVideo(pipe, "a ball", 17 + 8, start=clip, new_frames=8, context_frames=8, overlap_frames=4,
                    drift="none", seed=1, **FAST)
    video = torch.cat(list(job))
    assert video.shape == (25, SIZE, SIZE, 3)
    # the DiT sees the anchor frame and one chunk as given, and draws the last held chunk with the new two
    assert windows[0][0].tolist() == [0.0, 0.0, 1.0, 1.0, 1.0]
    assert torch.equal(video[:13], clip[:13])  # frames before the overlap are untouched
    redrawn = decoded[0][-12:-8].float()  # the new draw of the 4 held frames, then the 8 new ones
    fade = (torch.arange(1, 5) / 5).view(-1, 1, 1, 1)
    torch.testing.assert_close(video[13:17], clip[13:17] * (1 - fade) + redrawn * fade)
    torch.testing.assert_close(video[17:], decoded[0][-8:].float())
    assert job.joins == [16]


def test_join_seam_is_the_worst_step_of_a_joins_crossfade():
    frames = torch.zeros(12, 4, 4, 3)
    for i in range(12):
        frames[i] += i * 0.01  # a steady step of 0.01 ...
    frames[6:] += 0.03  # ... and one jump of 4 steps after frame 5
    assert seam_ratio(frames, 5) == pytest.approx(4.0)
    assert join_seam(frames, 8, overlap=0) == pytest.approx(1.0)  # a join measured after the jump misses it
    assert join_seam(frames, 8, overlap=3) == pytest.approx(4.0)  # its crossfade span includes it


@pytest.mark.parametrize("kwargs,message", [
    (dict(retries=-1), "retries=-1 is not allowed: use an integer from 0 to 8"),
    (dict(retries=1.5), "retries=1.5 is not allowed"),
    (dict(seam_limit=0.5), "seam_limit=0.5 is not allowed: use a number >= 1"),
    (dict(seam_limit=float("nan")), "seam_limit=nan is not allowed"),
    (dict(overlap_frames=2), "overlap_frames=2 is not allowed: use a multiple of 4"),
    (dict(overlap_frames=8), "overlap_frames=8 is not allowed: .* less than context_frames=8"),
])
def test_bad_redraw_settings_are_named(pipe, kwargs, message):
    with pytest.raises(ValueError, match=message):
        LongVideo(pipe, "a ball", 40, width=SIZE, height=SIZE, **kwargs)


def test_border_colour_reads_the_backdrop_not_a_thin_line_along_the_edge():
    from sora_core.eval.run import border_colour

    frame = torch.full((64, 64, 3), 0.07)
    frame[::8] = 0.19  # a grid of thin lines, one of them along the top edge and one along the left
    frame[:, ::8] = 0.19
    outermost = torch.cat([frame[0], frame[-1], frame[:, 0], frame[:, -1]]).median(dim=0).values
    assert torch.allclose(outermost, torch.full((3,), 0.19))  # what the 1-px ring reads: the line
    assert torch.allclose(border_colour(frame), torch.full((3,), 0.07))  # the backdrop
    frame[30:34, 30:34] = 1.0  # what is inside the frame does not count
    assert torch.allclose(border_colour(frame), torch.full((3,), 0.07))
