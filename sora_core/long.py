"""Long video: any length by chained extension, streamed out window by window.

    job = LongVideo(pipe, "a red ball rolling", frames=480)     # checks everything first
    with VideoStream("minute.mp4", fps=8) as out:
        for chunk in job:                                        # (T, H, W, 3) finished frames
            out.write(chunk)

The first window is generated from the prompt (or animates a start image, or is a start clip
itself); every next window continues the video forward from its last `context_frames` (+1
anchor frame) through the same per-frame conditioning as `Pipeline.extend`, and only the
frames a later window can still touch (the context, which the next join crossfades, and for
a loop the opening frames) are held back. So memory is the same for ten seconds or an hour.
`loop=True` ends on a transition into the video's own opening (see `cond.loop`).

Drift: each window sees only generated frames, so small errors compound, window after window,
into colour and contrast drift and a growing jump at every join. What is done against it was
chosen by measurement with the default model over 15 chained windows from 4 and 8 held-out clips
(benchmarks/bench_long.py; figures in the README):
- one latent stream: a window's context chunks are the previous window's own latents (never a
  re-encoding of their decoded frames: encode(decode(z)) != z, and that error fed every window),
  and its new latents are decoded after the video's last `DECODE_CONTEXT` latents, so the causal
  decoder carries on across the join instead of starting a new clip there.
- `drift="colour"` (default) shifts each window's new frames so their backdrop (read from the frame's
  outer ring, where a subject rarely is: `backdrop`) is the opening's, ramping over the window from
  the shift the video had at the join (no jump); the latents are left alone. The backdrop is a colour
  plane fitted to the median colours of the ring's four sides where that plane fits the opening's
  ring better than one colour (a backdrop that fades across the frame), else the ring's one median
  colour (a flat or textured backdrop: `opening_backdrop`). The one median let a fade wash out window
  by window (6/255 on 8 clips' worst); the plane everywhere tilted on a grid of thin lines, whose
  sides' medians depend on how many lines each band catches (3.6/255); both ways, the worst of 8
  clips is 1.7/255 (README). On 4 clips, holding the whole frame's median instead drifted more
  (1.36/255 on average, worst clip 3.51), and a 2x2 field of cell medians more again (1.66, 3.39).
- `drift="anchor"` gives every window's new latents the per-channel mean and spread of the
  opening's latents: less drift than none (2.58) but worse joins on busy scenes. Matching each
  window to its own context drifted more than no matching (it keeps every error it is handed).
- "none" leaves both alone.

Seams: a window's join is only as smooth as the model's extend, whose seams vary widely from seed to
seed (1 to 6.6 times the median frame step for the default model). A window whose join jumps more
than `seam_limit` times the median frame step of its held and new frames is drawn again with another
seed, up to `retries` times, and the smoothest draw is kept: each redraw costs one window's time.
The limit, 3, is about 1.5x the median single extend's seam (2.1) since the decoder moves things
inside its chunks (docs/training.md section 10); it was 6 when a stuttering decoder made every
chunk boundary read as a seam of several times the median step. Up to 5 redraws (2 before) bring
every join of the 8 benchmark clips within 1.5x the median single seam, for 6% more time.
Overlap (`overlap_frames`, default 4): each window also draws the last held chunk again, and those
frames crossfade from the held version into the new draw, so a join's jump is spread over them; the
join is then measured as the worst frame step of that crossfade (`join_seam`). Same cost per window.
Where the two draws differ, the crossfade shows both for a few frames. The figures for each of these
choices, on 8 held-out clips, are in the README.
"""

from __future__ import annotations

from typing import Callable, Iterator

import torch

from . import conditioning as cond
from .patch import check_frame_count, check_pixel_size, is_whole

DRIFT = ("colour", "anchor", "none")
# Latent frames of the video decoded before each window's new ones, so the causal decoder continues
# across the join (its receptive field in time is a few latent frames).
DECODE_CONTEXT = 4
DEFAULT_DRIFT = "colour"
# drift="colour" holds the backdrop measured on this share of each side of the frame (`backdrop`)
BACKDROP_RING = 1 / 8
# ... as a plane unless the correction would tilt across the frame by more than this
MAX_TILT = 8 / 255
# ... and only where the plane fits the opening's ring at least this much closer than one colour does
PLANE_FIT = 0.8
# A redraw of a window uses seed + attempt * this (window k's first draw is seed + k + 1: no overlap)
RETRY_SEED_STRIDE = 1_000_003
# Redraws of a window whose join jumps more than SEAM_LIMIT times the median frame-to-frame change
RETRIES, MAX_RETRIES, SEAM_LIMIT = 5, 8, 3.0
# Held frames each window draws again (whole VAE chunks) and crossfades into, so a join's jump is spread
# over this many frames instead of landing between two of them (at most context_frames - one chunk).
OVERLAP = 4

# progress(window, windows, step, steps): windows and steps count from 1. It may raise to cancel.
LongProgress = Callable[[int, int, int, int], None]


def seam_ratio(frames: torch.Tensor, before: int, after: int | None = None) -> float:
    """|frame[after] - frame[before]| over the median consecutive-frame difference of (T, H, W, 3) frames:
    1 means the join is as smooth as any other cut between frames; a visible jump is >> 1."""
    after = before + 1 if after is None else after
    diffs = (frames[1:] - frames[:-1]).abs().mean(dim=(1, 2, 3))
    jump = (frames[after] - frames[before]).abs().mean()
    return float(jump / diffs.median().clamp(min=1e-4))


def join_seam(frames: torch.Tensor, join: int, overlap: int = 0) -> float:
    """The worst `seam_ratio` of a join whose last `overlap` frames before it are a crossfade into the new
    window: the largest frame-to-frame jump from the frame before the crossfade to the first new frame."""
    return max(seam_ratio(frames, b) for b in range(join - overlap, join + 1))


def latent_stats(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and standard deviation over frames and space of (B, C, T, h, w) latents."""
    return z.mean(dim=(2, 3, 4), keepdim=True), z.std(dim=(2, 3, 4), keepdim=True)


def side_bands(frames: torch.Tensor, dy: int | None = None, dx: int | None = None) -> tuple[torch.Tensor, ...]:
    """The outer ring of (T, H, W, 3) frames (or of (1, H, W, 3) a field over them) as four bands: top and
    bottom, `dy` rows each, then left and right, `dx` columns of the rows between (default: BACKDROP_RING
    of each side)."""
    h, w = frames.shape[1:3]
    dy = max(1, round(h * BACKDROP_RING)) if dy is None else dy
    dx = max(1, round(w * BACKDROP_RING)) if dx is None else dx
    rows = slice(dy, h - dy) if h > 2 * dy else slice(None)
    return frames[:, :dy], frames[:, -dy:], frames[:, rows, :dx], frames[:, rows, -dx:]


def ring_pixels(frames: torch.Tensor, dy: int | None = None, dx: int | None = None) -> torch.Tensor:
    """(T, N, 3) the pixels of `side_bands`, frame by frame."""
    return torch.cat([band.reshape(band.shape[0], -1, 3) for band in side_bands(frames, dy, dx)], dim=1)


def ring_median(frames: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """(3,) the median colour of (T, H, W, 3) frames' outer ring: `dy` rows at the top and bottom, `dx`
    columns at the left and right."""
    return ring_pixels(frames, dy, dx).reshape(-1, 3).median(dim=0).values


def backdrop(frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(T, H, W, 3) frames' backdrop, read from the outer ring (BACKDROP_RING of each side), where a subject
    rarely is, so what it measures is lighting and grade, where drift shows; two ways, from the same four
    side bands: (H, W, 3) a colour plane (a colour plus a left-right and a top-bottom gradient) fitted to the
    sides' median colours, which holds a backdrop that fades across the frame; and (3,) the whole ring's
    median colour, which a subject over one side cannot move."""
    h, w = frames.shape[1:3]
    bands = side_bands(frames)
    dy, dx = bands[0].shape[1], bands[2].shape[2]
    sides = [band.reshape(-1, 3) for band in bands]
    top, bottom, left, right = (side.median(dim=0).values.float() for side in sides)
    # the bands' centres are h - dy rows (w - dx columns) apart; the sides' mean sits at the frame's centre
    y = (torch.arange(h, device=frames.device, dtype=torch.float32) - (h - 1) / 2).view(-1, 1, 1)
    x = (torch.arange(w, device=frames.device, dtype=torch.float32) - (w - 1) / 2).view(1, -1, 1)
    centre = (top + bottom + left + right) / 4
    field = centre + (bottom - top) / max(h - dy, 1) * y + (right - left) / max(w - dx, 1) * x
    return field.to(frames.dtype), torch.cat(sides).median(dim=0).values


def opening_backdrop(frames: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor]:
    """The backdrop every window is pulled back to (`backdrop` of the opening's (T, H, W, 3) frames), with the
    plane only where it fits the ring's pixels better than the ring's one median colour (mean abs error at
    most PLANE_FIT times), else None. A backdrop that fades across the frame is a plane; a texture is not: on a
    grid of thin lines each side's median depends on how many lines its band happens to catch, so the plane
    tilts where the backdrop does not, and the texture's redraw then tilts the correction (one held-out clip
    drifted 3.6/255 that way against 0.9 with the one colour; docs/training.md section 11)."""
    field, ring = backdrop(frames)
    pixels = ring_pixels(frames).float()
    off_plane = float((pixels - ring_pixels(field[None]).float()).abs().mean())
    off_colour = float((pixels - ring.float()).abs().mean())
    return (field if off_plane <= PLANE_FIT * off_colour else None), ring


def backdrop_correction(reference: tuple[torch.Tensor | None, torch.Tensor], frames: torch.Tensor) -> torch.Tensor:
    """What to add to (T, H, W, 3) `frames` to give them the `reference` backdrop (`opening_backdrop`): the
    difference of the planes, (H, W, 3); or the difference of the whole ring's median colour, (3,), where the
    reference has no plane, or where the planes' difference tilts across the frame by more than MAX_TILT (a
    subject covering much of one side moves that side's median, not the lighting; one side cannot move the
    ring's median)."""
    field, ring = backdrop(frames)
    if reference[0] is not None:
        change = reference[0] - field
        if float((change - change.mean(dim=(0, 1))).abs().max()) <= MAX_TILT:
            return change
    return reference[1] - ring


def match_stats(z: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """`z` moved and scaled, channel by channel, to the given mean and spread."""
    m, s = latent_stats(z)
    return (z - m) * (std / s.clamp(min=1e-4)) + mean


class LongVideo:
    """A long video as an iterator of finished frame chunks; the constructor checks every input."""

    def __init__(self, pipe, prompt: str, frames: int, *, width: int = 64, height: int = 64,
                 start: torch.Tensor | None = None, loop: bool = False, window_frames: int = 17,
                 new_frames: int = 16, context_frames: int = 8, blend_frames: int = cond.SEAM_BLEND,
                 drift: str = DEFAULT_DRIFT, retries: int = RETRIES, seam_limit: float = SEAM_LIMIT,
                 overlap_frames: int | None = None, negative: str = "", seed: int = 0,
                 progress: LongProgress | None = None, **sampling):
        config = pipe.config
        tf = config.vae.temporal_factor
        settings = pipe._settings(prompt, dict(sampling, negative=negative, seed=seed))
        # a planned scene (`recaption.plan`) places the objects of the opening window drawn from the prompt;
        # every later window continues the frames before it, which already hold them
        layout = sampling.pop("layout", None)
        if layout is not None and start is not None:
            raise ValueError("layout is for a video drawn from the prompt; with start frames their objects "
                             "are where they are (leave out one or the other)")
        if drift not in DRIFT:
            raise ValueError(f"drift={drift!r} is not allowed; use one of {DRIFT}")
        if not is_whole(retries) or not 0 <= retries <= MAX_RETRIES:
            raise ValueError(f"retries={retries!r} is not allowed: use an integer from 0 to {MAX_RETRIES} "
                             f"(redraws of a window whose join jumps)")
        if isinstance(seam_limit, bool) or not isinstance(seam_limit, (int, float)) or not seam_limit >= 1:
            raise ValueError(f"seam_limit={seam_limit!r} is not allowed: use a number >= 1 (how many times the "
                             f"video's median frame-to-frame change a join may jump before it is redrawn)")
        cond.check_chunks("new_frames", new_frames, tf)
        cond.check_chunks("context_frames", context_frames, tf)
        if overlap_frames is None:  # the default, as far as the context allows
            overlap_frames = min(OVERLAP, context_frames - tf)
        if not is_whole(overlap_frames) or overlap_frames % tf or not 0 <= overlap_frames < context_frames:
            raise ValueError(f"overlap_frames={overlap_frames!r} is not allowed: use a multiple of {tf} from 0 to "
                             f"less than context_frames={context_frames} (held frames each window draws again "
                             f"and crossfades into; at least one chunk of context stays given)")
        cond._check_blend(blend_frames)
        if start is not None:
            start = cond.as_frames("start", start).cpu()
            width, height = start.shape[2], start.shape[1]
        check_pixel_size(width, height, config.pixel_multiple)
        if start is None or start.shape[0] == 1:
            check_frame_count(window_frames, tf)
            first = window_frames
        else:
            first = start.shape[0]
        hold = context_frames + 1  # frames the next window sees; its join crossfades the last of them
        # a loop leads back into the opening's first context_frames, which no join may crossfade
        need = max(hold, context_frames + blend_frames if loop else 0)
        if first < need:
            raise ValueError(
                f"the opening has {first} frames; context_frames={context_frames}"
                + (f" and a loop with blend_frames={blend_frames}" if loop else "")
                + f" need at least {need} "
                + ("(window_frames)" if start is None or start.shape[0] == 1 else "(start clip frames)")
            )
        if not is_whole(frames) or frames < first + (tf if loop else 1):
            raise ValueError(f"frames={frames!r} is not allowed: a long video is longer than its opening "
                             f"({first} frames{' plus a loop transition' if loop else ''}); use at least "
                             f"{first + (tf if loop else 1)}")
        # The largest window (the opening, an extension, a loop's closing transition), before any work.
        pipe._plan("long", width, height, max(window_frames, 1 + new_frames + context_frames * (1 + loop)),
                   settings, source=None if start is None else "start", encode_frames=1 + context_frames * (1 + loop))
        # New frames per window, in whole latent chunks; a loop's transition gets a full window.
        todo = -(-(frames - first) // tf) * tf
        pieces = [new_frames] * (todo // new_frames) + ([todo % new_frames] if todo % new_frames else [])
        if loop and len(pieces) > 1 and pieces[-1] != new_frames:
            pieces = [pieces[-1]] + pieces[:-1]
        self.pipe, self.prompt, self.negative, self.seed = pipe, prompt, negative, seed
        self.width, self.height, self.start, self.loop = width, height, start, loop
        self.window_frames, self.context_frames, self.blend_frames = window_frames, context_frames, blend_frames
        self.drift, self.progress, self.sampling = drift, progress, sampling
        self.steps = settings["steps"]  # the model's own where not given (or given as None)
        self.layout = settings.get("layout")  # checked: a Scene, or None
        self.retries, self.seam_limit, self.overlap = int(retries), float(seam_limit), int(overlap_frames)
        self.redraws = 0  # windows drawn again so far (each costs one window's sampling and decoding)
        self.opening, self.pieces, self.hold = first, pieces, hold
        self.frames = first + todo if loop else frames  # a loop keeps its whole transition
        self.windows = len(pieces) + (start is None or start.shape[0] == 1)

    @property
    def joins(self) -> list[int]:
        """Index of the last frame before each window's new frames (a loop's wrap, last frame to frame 0,
        is not listed)."""
        out, at = [], self.opening
        for n in self.pieces:
            out.append(at - 1)
            at += n
        return [j for j in out if j + 1 < self.frames]

    def __iter__(self) -> Iterator[torch.Tensor]:
        pipe, vae = self.pipe, self.pipe.vae
        tf = vae.temporal_factor
        m = self.context_frames // tf
        reference = None  # latent statistics of the opening
        stream = None  # the video's last latents, as the decoder saw them (the next window's context is its tail)
        opening = None  # the opening's backdrop (`backdrop`), which every window keeps
        offset = torch.zeros(3)  # the colour correction the last frame got (then an (H, W, 3) field)
        window = 0

        def sample(w: cond.Window, seed: int, decode: bool = True, again: bool = False, layout=None):
            """Sample (and with `decode`, decode and splice) window `w`; drift control on its new latents.
            `again`: a redraw of the same window (its progress shows the same window number); `layout`: the
            plan it follows."""
            nonlocal window
            window += not again
            shown = window
            progress = (lambda i, n: self.progress(shown, self.windows, i, n)) if self.progress else None

            def adjust(z: torch.Tensor) -> torch.Tensor:
                nonlocal reference, stream
                new = (w.strength[0] > 0).to(z.device)
                if reference is None:  # the opening: the anchor every later window is matched to
                    reference = latent_stats(z[:, :, 1:])
                elif self.drift == "anchor":
                    z = z.clone()
                    z[:, :, new] = match_stats(z[:, :, new], *reference)
                if decode:
                    stream = z[:, :, -DECODE_CONTEXT:].clone()
                return z

            if progress:
                progress(0, self.steps)
            run = pipe.run if decode else pipe.latents
            return run(w, self.prompt, negative=self.negative, progress=progress, on_latents=adjust, seed=seed,
                       layout=layout, **self.sampling)

        @torch.no_grad()
        def extend(held: torch.Tensor, n: int, seed: int) -> torch.Tensor:
            """held + n frames that continue it. The new latents are decoded after the video's own last
            latents, as one stream: the causal decoder carries on across the join instead of starting a
            separate clip, so only the held frames next to it crossfade (into their decoded versions).
            A join that jumps more than `seam_limit` is drawn again with the next seed, up to `retries`
            times, and the smoothest draw is kept."""
            nonlocal stream, offset
            # strength 1: windows from pure noise; the held start `cond.extend` uses made a clip drift past
            # #11's limit here, with joins no smoother (docs/training.md section 13)
            w = cond.extend_forward(vae, held.to(pipe.device), n, self.context_frames, self.blend_frames,
                                    strength=1.0)
            if stream is None:  # after a start clip: its encoded tail is where the stream begins
                stream = w.samples[:, :, : 1 + m].clone()
            else:  # the context chunks as generated, not re-encoded from their pixels
                w.samples[:, :, 1 : 1 + m] = stream[:, :, -m:].to(w.samples)
            ov = self.overlap
            k = ov // tf  # the last k context chunks are drawn again with the new ones
            w.strength[:, 1 + m - k : 1 + m] = 1.0
            kept = stream[:, :, : stream.shape[2] - k]
            best = None
            for attempt in range(1 + self.retries):
                self.redraws += attempt > 0
                z, options = sample(w, seed + attempt * RETRY_SEED_STRIDE, decode=False, again=attempt > 0)
                both = torch.cat([kept.to(z), z[:, :, 1 + m - k :]], dim=2)
                decoded = pipe.decode(cond.Window(both, torch.ones(both.shape[:1] + both.shape[2:3])), both, **options)
                shift = offset
                if self.drift == "colour":
                    decoded, shift = correct(decoded, n + ov)
                if ov:  # the held frames' new draw fades in over them, so the join's jump is spread
                    fade = (torch.arange(1, ov + 1, dtype=decoded.dtype) / (ov + 1)).view(-1, 1, 1, 1)
                    redrawn = decoded[-(n + ov) : -n]
                    out = torch.cat([held[:-ov], held[-ov:] * (1 - fade) + redrawn * fade, decoded[-n:]])
                else:
                    splice = cond.Splice(keep_start=decoded.shape[0] - n, keep_stop=None, before=held,
                                         blend=self.blend_frames)
                    out = splice.apply(decoded)
                seam = join_seam(out, len(out) - n - 1, ov)
                if best is None or seam < best[0]:
                    best = (seam, out, both, shift)
                if seam <= self.seam_limit:
                    break
            _, out, both, offset = best
            stream = both[:, :, -DECODE_CONTEXT:]
            return out

        def correct(decoded: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
            """Pull the new frames' backdrop back to the opening's, ramping over the window from the
            correction the video had at the join (which the decoded frames before it get too). Returns the
            frames and the correction their last frame got."""
            target = backdrop_correction(opening, decoded[-n:])
            ramp = torch.zeros(decoded.shape[0], 1, 1, 1)
            ramp[-n:, 0, 0, 0] = torch.arange(1, n + 1) / n
            return (decoded + offset + ramp * (target - offset)).clamp(0, 1), target

        if self.start is None:
            held = sample(cond.empty_window(pipe.config, self.width, self.height, self.window_frames), self.seed,
                          layout=self.layout)
        elif self.start.shape[0] == 1:
            held = sample(cond.animate_image(vae, self.start.to(pipe.device), self.window_frames), self.seed)
        else:
            held = self.start.float().cpu()
            z = cond.encode_frames(vae, held[: 1 + (min(len(held), self.window_frames) - 1) // tf * tf].to(pipe.device))
            reference = latent_stats(z[:, :, 1:].float())
        opening = opening_backdrop(held)  # what every window's backdrop is pulled back to (`backdrop_correction`)
        head = held[: self.context_frames].clone()  # a loop's transition leads back into these
        written = 0
        for k, n in enumerate(self.pieces):
            closing = self.loop and k == len(self.pieces) - 1
            if len(held) > self.hold:
                yield held[: -self.hold]
                written += len(held) - self.hold
            held = held[-self.hold :]
            if closing:
                previous = None if stream is None else stream[:, :, -m:]
                held = self._close_loop(sample, held, head, n, self.seed + k + 1, previous)
            else:
                held = extend(held, n, self.seed + k + 1)
        yield held[: self.frames - written]

    def _close_loop(self, run, held: torch.Tensor, head: torch.Tensor, n: int, seed: int,
                    previous: torch.Tensor | None) -> torch.Tensor:
        """held + a transition that leads into `head`, the video's opening (already written: it cannot be
        crossfaded as `cond.loop` does, so the transition's last frames absorb the VAE's error instead)."""
        vae, device = self.pipe.vae, self.pipe.device
        w = cond.connect(vae, held.to(device), head.to(device), n, self.context_frames, self.blend_frames, strength=1.0)
        if previous is not None:
            w.samples[:, :, 1 : 1 + previous.shape[2]] = previous.to(w.samples)
        splice, w.splice = w.splice, None
        decoded = run(w, seed)
        splice.after = None
        out = splice.apply(decoded)  # held, crossfaded at its join, + the transition
        k = min(self.blend_frames, n)
        if k:
            # decoded[keep_stop] is the model's own redraw of head[0], which the transition leads into
            ramp = torch.arange(1, k + 1, dtype=out.dtype) / (k + 1)
            out[-k:] += ramp.view(-1, 1, 1, 1) * (head[0] - decoded[splice.keep_stop]).to(out)
            out = out.clamp(0, 1)
        return out
