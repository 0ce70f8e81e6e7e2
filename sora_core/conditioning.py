"""One conditioning mechanism for every temporal capability.

A `Window` is the latent grid the sampler fills: `samples` (B, C, T, h, w) holds the given
latents, `strength` (B, T) says per latent frame how much is generated (0 = given and kept
exactly, 1 = generated from noise, between = SDEdit-style partial noise). A `Splice` says how
the decoded window joins the source clips' own pixels, so the output is the source frames
untouched plus only the new ones, except a short crossfade at each join that hides the VAE's
reconstruction error there (`SEAM_BLEND` frames; 0 gives a hard cut). Where a clip follows a
generated transition (connect, loop) the transition eases into it instead (`Splice.ease`).

Timing is in whole chunks of the VAE's `temporal_factor` (4) frames. With our VAE a chunk's
latent does not depend on where it sits in time (see `vae`), so the latents of "the last 8
frames of clip A" are the same whether A is encoded alone or inside the generated window. Wan's
VAE is causal across chunks (`history_dependent`): a chunk's latent depends on the frames before
it. Given frames at the start of a window are encoded as the clip the window is, so their latents
are exact either way. Given frames after generated ones (`Window.tail`) can only be estimated
before sampling (`encode_chunks` without history); `decode` re-encodes them against the frames
the window decodes to before them, their exact in-clip latents, before it decodes the window.

Frames here are float tensors (T, H, W, 3) in [0, 1], ComfyUI's IMAGE layout.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from .config import SoraConfig
from .patch import check_frame_count, check_pixel_size, is_whole, latent_frames
from .vae import VideoVAE

if TYPE_CHECKING:
    from .wan.dit import WanConfig


@dataclass
class Splice:
    """Output = before + decoded[keep_start:keep_stop] + after.

    The source clips' pixels and the decoded frames never match exactly (the VAE is lossy), so a
    hard cut between them would show a small jump at every join. With `blend` > 0 the `blend`
    source frames next to each join crossfade into their own decoded versions (linear weights
    1/(blend+1) .. blend/(blend+1) towards the join); every other source frame is untouched.
    `wrap` (a loop) also blends the clip's first frames, which follow the transition on repeat.

    A join where a source clip follows generated frames (`after`, or a loop's `wrap`) with `ease` > 0
    is made the other way round: the last `ease` kept frames crossfade into the source frame that
    follows them (weights 1/(ease+1) .. ease/(ease+1) towards the join) and that source is untouched.
    A transition needs it: the decoder is causal in time, so the given frames after a transition
    decode still carrying it, and the transition itself may reach the second clip late
    (docs/training.md section 17).
    """

    keep_start: int
    keep_stop: int | None
    before: torch.Tensor | None = None
    after: torch.Tensor | None = None
    blend: int = 0
    wrap: bool = False
    ease: int = 0

    def apply(self, decoded: torch.Tensor) -> torch.Tensor:
        stop = decoded.shape[0] if self.keep_stop is None else self.keep_stop
        kept = decoded[self.keep_start : stop]
        following = self.after if self.after is not None else self.before if self.wrap else None
        ease = min(self.ease, kept.shape[0]) if following is not None else 0
        if ease:
            target = following[:1].to(decoded)
            kept = torch.cat([kept[:-ease], _crossfade(kept[-ease:], target.expand(ease, *target.shape[1:]), True)])
        parts = [kept]
        # decoded[keep_start - j] is the source's before[-j]; decoded[stop + j] is the after clip's
        # (for a loop: the clip's own) frame j.
        ahead = decoded[stop:]
        if self.before is not None:
            b = self.before.to(decoded)
            k = min(self.blend, self.keep_start, b.shape[0])
            if k:
                b = torch.cat([b[:-k], _crossfade(b[-k:], decoded[self.keep_start - k : self.keep_start], True)])
            if self.wrap and not ease:
                k2 = min(self.blend, ahead.shape[0], b.shape[0] - k)  # never into the frames blended above
                if k2:
                    b = torch.cat([_crossfade(b[:k2], ahead[:k2], False), b[k2:]])
            parts.insert(0, b)
        if self.after is not None:
            a = self.after.to(decoded)
            k = 0 if ease else min(self.blend, ahead.shape[0], a.shape[0])
            if k:
                a = torch.cat([_crossfade(a[:k], ahead[:k], False), a[k:]])
            parts.append(a)
        return torch.cat(parts, dim=0)

    def uses_from(self, first: int) -> bool:
        """Whether `apply` reads any decoded frame from index `first` on."""
        if self.keep_stop is None:
            return True
        return self.keep_stop + (self.blend if (self.after is not None or self.wrap) and not self.ease else 0) > first


def _crossfade(source: torch.Tensor, decoded: torch.Tensor, towards_end: bool) -> torch.Tensor:
    """Blend k frames `source` into `decoded` (k frames too), most strongly at the join's side."""
    k = source.shape[0]
    w = torch.arange(1, k + 1, dtype=source.dtype, device=source.device) / (k + 1)
    w = (w if towards_end else w.flip(0)).view(-1, *([1] * (source.dim() - 1)))
    return source * (1 - w) + decoded * w


@dataclass
class Tail:
    """Given frames that follow generated ones: latent frames `start`.. of the window hold `frames`
    (tf*k, H, W, 3), encoded mid-clip."""
    start: int
    frames: torch.Tensor


@dataclass
class Window:
    samples: torch.Tensor  # (B, C, T, h, w)
    strength: torch.Tensor  # (B, T)
    splice: Splice | None = None
    tail: Tail | None = None


def frames_to_video(frames: torch.Tensor) -> torch.Tensor:
    """(T, H, W, 3) in [0, 1] -> (1, 3, T, H, W) in [-1, 1]."""
    return frames.permute(3, 0, 1, 2).unsqueeze(0) * 2 - 1


def video_to_frames(video: torch.Tensor) -> torch.Tensor:
    """(B, 3, T, H, W) in [-1, 1] -> (B*T, H, W, 3) in [0, 1]."""
    return ((video.clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 4, 1).reshape(-1, *video.shape[3:], 3)


# Source frames that crossfade into their decoded versions at each join (see `Splice`).
SEAM_BLEND = 4

# Where new frames start (docs/training.md section 13). Extending, they start from the nearest given
# latent frame held, noised to EXTEND_STRENGTH next to it and more further away (1 at the far end);
# a transition (connect, loop) starts from a latent dissolve between the clips, noised most in its
# middle (TRANSITION_STRENGTH) and less toward the clips. Strength 1 is pure noise. In eval, the first
# cut the extend seam from 4.1 to 0.8 and the second the loop seam from 2.5 to 1.5 (connect: 17.7 to
# 6.5), with the new frames still moving.
EXTEND_STRENGTH = 0.7
TRANSITION_STRENGTH = 0.6


def _start_held(window: "Window", new: list[int], given: int, strength: float) -> None:
    """New latent frames `new` (nearest the given frame first) start from given latent frame `given`
    held, at strengths rising linearly from `strength` (checked: `check_strength`; the nearest) to 1 (the
    farthest)."""
    if strength == 1.0:
        return
    for rank, f in enumerate(new):
        window.samples[:, :, f] = window.samples[:, :, given]
        window.strength[:, f] = strength + (1 - strength) * rank / max(len(new) - 1, 1)


def _start_dissolve(window: "Window", first: int, count: int, strength: float) -> None:
    """Latent frames first..first+count-1, between given frames first-1 and first+count, start from a
    smoothstep dissolve between those two, at strengths `strength` x a sine that peaks at the middle;
    strength (checked: `check_strength`) 1 leaves them pure noise."""
    if strength == 1.0:
        return
    a, b = window.samples[:, :, first - 1], window.samples[:, :, first + count]
    u = torch.arange(1, count + 1, dtype=torch.float32) / (count + 1)
    ease, bump = u * u * (3 - 2 * u), torch.sin(torch.pi * u)
    for k in range(count):
        window.samples[:, :, first + k] = torch.lerp(a, b, float(ease[k]))
        window.strength[:, first + k] = strength * float(bump[k] / bump.max())


def _check_blend(blend_frames: int) -> int:
    if not is_whole(blend_frames) or blend_frames < 0:
        raise ValueError(f"blend_frames={blend_frames!r} is not allowed: use an integer >= 0 (0 = hard cut)")
    return int(blend_frames)


def as_frames(name: str, frames) -> torch.Tensor:
    """Frames as given by a user -> float (T, H, W, 3) in [0, 1]. uint8 (what `io.read_video` returns)
    is scaled from 0..255; floats must be finite and on the 0..1 scale (a little over- or undershoot,
    as bicubic resizing makes, is kept as it is)."""
    if isinstance(frames, np.ndarray):
        frames = torch.from_numpy(frames)
    if not isinstance(frames, torch.Tensor):
        raise TypeError(f"{name} must be frames (a torch tensor or numpy array of shape (count, height, width, 3)); "
                        f"got {type(frames).__name__}")
    if frames.ndim != 4 or frames.shape[-1] != 3 or 0 in frames.shape:
        raise ValueError(f"{name} must be frames of shape (count, height, width, 3); got {tuple(frames.shape)}")
    if frames.dtype == torch.uint8:
        return frames.float() / 255
    if not frames.is_floating_point():
        raise ValueError(f"{name} has dtype {frames.dtype}; use float frames in 0..1 or uint8 frames in 0..255")
    finite = torch.isfinite(frames)
    if not finite.all():
        first = int((~finite).flatten(1).any(1).nonzero()[0])
        raise ValueError(f"{name} holds {int((~finite).sum())} NaN or inf values (the first in frame {first}); "
                         f"frames must be finite numbers in 0..1")
    low, high = float(frames.min()), float(frames.max())
    if low < -0.5 or high > 1.5:
        raise ValueError(f"{name} holds values from {low:g} to {high:g}; frames are floats in 0..1 "
                         f"(or uint8 in 0..255), not {'-1..1' if low < -0.5 and high <= 1.5 else '0..255'}")
    return frames.float()


def check_chunks(name: str, value: int, tf: int, minimum: int = 1) -> int:
    if not is_whole(value):
        raise ValueError(f"{name}={value!r} is not allowed: use a whole number of frames, a multiple of {tf}")
    if value < minimum * tf or value % tf:
        raise ValueError(
            f"{name}={value} is not allowed: use a multiple of {tf} frames, at least {minimum * tf} "
            f"(the VAE compresses {tf} frames into one latent frame)"
        )
    return int(value) // tf


def _vae_dtype(vae: VideoVAE) -> torch.dtype:
    return next(vae.parameters()).dtype


def encode_frames(vae: VideoVAE, frames: torch.Tensor) -> torch.Tensor:
    """(1+tf*k, H, W, 3) frames -> (1, C, 1+k, h, w) latents (frame 0 alone)."""
    dev = next(vae.parameters()).device
    return vae.encode(frames_to_video(frames).to(dev, _vae_dtype(vae)))


def encode_chunk_frames(vae: VideoVAE, frames: torch.Tensor, history: torch.Tensor | None = None) -> torch.Tensor:
    """(tf*k, H, W, 3) frames -> (1, C, k, h, w): the latents these frames have mid-video. For a
    history-dependent VAE exact after `history` (1+tf*j frames, or video (1, 3, 1+tf*j, H, W)), else
    estimated; other VAEs need no history."""
    dev = next(vae.parameters()).device
    video = frames_to_video(frames).to(dev, _vae_dtype(vae))
    if not vae.history_dependent:
        return vae.encode_chunks(video)
    if history is not None and history.ndim == 4:
        history = frames_to_video(history)
    if history is not None and history.shape[0] > 1:  # one clip after each of a batch of histories
        video = video.expand(history.shape[0], -1, -1, -1, -1)
    return vae.encode_chunks(video, history=None if history is None else history.to(dev, _vae_dtype(vae)))


def _window(parts: list[tuple[torch.Tensor | int, float]], like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Concatenate given latents and runs of `n` new frames along time, with their strengths."""
    samples, strength = [], []
    b, c, _, h, w = like.shape
    for part, s in parts:
        if not isinstance(part, torch.Tensor):  # a count of new latent frames
            part = torch.zeros(b, c, int(part), h, w, dtype=like.dtype, device=like.device)
        samples.append(part)
        strength.append(torch.full((b, part.shape[2]), float(s), device=like.device))
    return torch.cat(samples, dim=2), torch.cat(strength, dim=1)


def empty_window(config: SoraConfig | WanConfig, width: int, height: int, frames: int, batch: int = 1) -> Window:
    """Text-to-video: `batch` videos of width x height px x `frames` frames, every frame generated."""
    check_pixel_size(width, height, config.pixel_multiple)
    t = latent_frames(frames, config.vae.temporal_factor)
    if not is_whole(batch) or batch < 1:
        raise ValueError(f"batch={batch!r} is not allowed: use an integer >= 1")
    s = config.vae.spatial_factor
    return Window(torch.zeros(batch, config.vae.latent_channels, t, height // s, width // s), torch.ones(batch, t))


def animate_image(vae: VideoVAE, image: torch.Tensor, frames: int, *, at: str = "first",
                  blend_frames: int = SEAM_BLEND) -> Window:
    """Image-to-video: the image is the first (or last) frame of a `frames`-long video.

    The output's first (last) frame is the image exactly; the decoder's version of it differs (the
    VAE is lossy), so the next `blend_frames` frames crossfade from the still into the generated ones.
    """
    image = as_frames("image", image)
    if at not in ("first", "last"):
        raise ValueError(f"at={at!r} is not allowed; use 'first' or 'last'")
    tf = vae.temporal_factor
    check_frame_count(frames, tf)
    if frames < 1 + tf:
        raise ValueError(f"frames={frames} is not allowed: animating an image needs at least {1 + tf} frames "
                         f"(the image and {tf} new ones)")
    new = (frames - 1) // tf
    k = min(_check_blend(blend_frames), frames - 1)
    # The image held for 1 + k frames is the source clip: its k frames next to the join crossfade
    # into the generated frames there, and the frame at the far end is the image untouched.
    held = image[:1].expand(1 + k, *image.shape[1:])
    tail = None
    if at == "first" or not vae.history_dependent:
        z = encode_frames(vae, image[:1])  # our VAE: a still image's latent is also a still chunk's latent
    else:  # a causal VAE: the last latent frame is the image held for tf frames after the generated ones
        still = image[:1].expand(tf, *image.shape[1:])
        z, tail = encode_chunk_frames(vae, still), Tail(new, still)
    samples, strength = _window([(z, 0.0), (new, 1.0)] if at == "first" else [(new, 1.0), (z, 0.0)], z)
    if at == "first":
        splice = Splice(keep_start=1 + k, keep_stop=None, before=held, blend=k)
    else:
        splice = Splice(keep_start=0, keep_stop=frames - 1 - k, after=held, blend=k)
    return Window(samples, strength, splice, tail)


def extend_forward(vae: VideoVAE, video: torch.Tensor, new_frames: int, context_frames: int,
                   blend_frames: int = SEAM_BLEND, strength: float = EXTEND_STRENGTH) -> Window:
    """Continue `video` for `new_frames` frames, seeing its last `context_frames` (+1 anchor frame).
    The new frames start from its last latent frame held, noised to `strength` (1: pure noise) next
    to it and to 1 at the end."""
    video = as_frames("video", video)
    strength = check_strength(strength)
    tf = vae.temporal_factor
    n = check_chunks("new_frames", new_frames, tf)
    m = check_chunks("context_frames", context_frames, tf)
    if video.shape[0] < tf * m + 1:
        raise ValueError(
            f"video has {video.shape[0]} frames; extending with context_frames={context_frames} "
            f"needs at least {tf * m + 1}"
        )
    blend_frames = _check_blend(blend_frames)
    ctx = encode_frames(vae, video[-(tf * m + 1) :])
    window = Window(*_window([(ctx, 0.0), (n, 1.0)], ctx), Splice(keep_start=1 + tf * m, keep_stop=None,
                                                                   before=video, blend=blend_frames))
    _start_held(window, list(range(1 + m, 1 + m + n)), m, strength)
    return window


def extend_backward(vae: VideoVAE, video: torch.Tensor, new_frames: int, context_frames: int,
                    blend_frames: int = SEAM_BLEND, strength: float = EXTEND_STRENGTH) -> Window:
    """Generate `new_frames` frames that lead into `video`, seeing its first `context_frames`; they
    start from its first latent frame held, as `extend_forward`'s do from its last."""
    video = as_frames("video", video)
    strength = check_strength(strength)
    tf = vae.temporal_factor
    n = check_chunks("new_frames", new_frames, tf)
    m = check_chunks("context_frames", context_frames, tf)
    if video.shape[0] < tf * m:
        raise ValueError(f"video has {video.shape[0]} frames; context_frames={context_frames} needs at least that many")
    blend_frames = _check_blend(blend_frames)
    ctx = encode_chunk_frames(vae, video[: tf * m])
    # Latent 0 is a lone frame; it is generated and then dropped so exactly `new_frames` are new.
    window = Window(*_window([(1 + n, 1.0), (ctx, 0.0)], ctx),
                    Splice(keep_start=1, keep_stop=1 + tf * n, after=video, blend=blend_frames),
                    Tail(1 + n, video[: tf * m]))
    _start_held(window, list(range(n, -1, -1)), 1 + n, strength)
    return window


DIRECTIONS = ("forward", "backward")


def extend(vae: VideoVAE, video: torch.Tensor, new_frames: int, context_frames: int, direction: str = "forward",
           blend_frames: int = SEAM_BLEND, strength: float = EXTEND_STRENGTH) -> Window:
    """`extend_forward` or `extend_backward`, by name."""
    if direction not in DIRECTIONS:
        raise ValueError(f"direction={direction!r} is not allowed; use 'forward' or 'backward'")
    build = extend_forward if direction == "forward" else extend_backward
    return build(vae, video, new_frames, context_frames, blend_frames, strength)


def connect(vae: VideoVAE, first: torch.Tensor, second: torch.Tensor, transition_frames: int, context_frames: int,
            blend_frames: int = SEAM_BLEND, strength: float = TRANSITION_STRENGTH) -> Window:
    """A generated transition of `transition_frames` from the end of `first` into the start of `second`,
    started from a latent dissolve between them noised to `strength` in its middle, less toward the clips.
    Its second half eases into `second`'s first frame, and `second` comes back untouched (unless
    `blend_frames` is 0: hard cuts at both joins)."""
    first, second = as_frames("first", first), as_frames("second", second)
    strength, blend_frames = check_strength(strength), _check_blend(blend_frames)
    if first.shape[1:] != second.shape[1:]:
        raise ValueError(
            f"the two clips must have the same frame size; first is {tuple(first.shape[1:3])} (height, width), "
            f"second is {tuple(second.shape[1:3])}"
        )
    tf = vae.temporal_factor
    n = check_chunks("transition_frames", transition_frames, tf)
    m = check_chunks("context_frames", context_frames, tf)
    for name, clip, need in (("first", first, tf * m + 1), ("second", second, tf * m)):
        if clip.shape[0] < need:
            raise ValueError(f"{name} has {clip.shape[0]} frames; context_frames={context_frames} needs at least {need}")
    head = encode_frames(vae, first[-(tf * m + 1) :])
    tail = encode_chunk_frames(vae, second[: tf * m])
    start = 1 + tf * m
    window = Window(*_window([(head, 0.0), (n, 1.0), (tail, 0.0)], head),
                    Splice(keep_start=start, keep_stop=start + tf * n, before=first, after=second,
                           blend=blend_frames, ease=tf * n // 2 if blend_frames else 0), Tail(1 + m + n, second[: tf * m]))
    _start_dissolve(window, 1 + m, n, strength)
    return window


def loop(vae: VideoVAE, video: torch.Tensor, transition_frames: int, context_frames: int,
         blend_frames: int = SEAM_BLEND, strength: float = TRANSITION_STRENGTH) -> Window:
    """A seamless loop: `video` followed by a generated transition from its end back to its start.
    Played on repeat, the last output frame leads straight into the first."""
    video = as_frames("video", video)  # checked here so errors name the loop's one clip, not connect's two
    tf = vae.temporal_factor
    check_chunks("transition_frames", transition_frames, tf)
    m = check_chunks("context_frames", context_frames, tf)
    if video.shape[0] < tf * m + 1:
        raise ValueError(f"video has {video.shape[0]} frames; looping with context_frames={context_frames} "
                         f"needs at least {tf * m + 1}")
    window = connect(vae, video, video, transition_frames, context_frames, blend_frames, strength)
    window.splice.after = None  # the loop's next frame is the video's own first frame
    window.splice.wrap = True
    return window


def check_strength(strength: float) -> float:
    if isinstance(strength, bool) or not isinstance(strength, numbers.Real) or not 0.0 <= strength <= 1.0:
        raise ValueError(f"strength={strength!r} is not allowed: use a number from 0 (keep the input) to 1 "
                         f"(ignore it)")
    return float(strength)


def sdedit(latent: torch.Tensor, strength: float) -> Window:
    """Video-to-video editing (SDEdit, Meng et al. 2022): every frame noised to `strength` by the
    sampler (with its seed), then denoised."""
    strength = check_strength(strength)
    return Window(latent, torch.full((latent.shape[0], latent.shape[2]), strength, device=latent.device))


def settle_tail(vae: VideoVAE, tail: Tail | None, splice: Splice | None, latents: torch.Tensor,
                **decode_options) -> torch.Tensor:
    """Sampled latents with a history-dependent VAE's tail (estimated before sampling) replaced by its
    exact in-clip latents: the tail re-encoded after the frames the window decodes to before it. Skipped
    when the splice keeps none of the decoded tail frames (no crossfade at the join)."""
    if tail is None or not vae.history_dependent or (splice is not None and not splice.uses_from(
            1 + vae.temporal_factor * (tail.start - 1))):
        return latents
    options = {k: v for k, v in decode_options.items() if v is not None}
    head = vae.decode(latents[:, :, : tail.start].to(_vae_dtype(vae)), **options)  # (B, 3, 1+tf*(start-1), H, W)
    exact = encode_chunk_frames(vae, tail.frames, history=head)
    return torch.cat([latents[:, :, : tail.start], exact.to(latents)], dim=2)


def decode(vae: VideoVAE, window: Window, latents: torch.Tensor, **decode_options) -> torch.Tensor:
    """A sampled window -> (T, H, W, 3) frames in [0, 1], the source frames spliced in; a causal VAE's
    tail first settled (`settle_tail`). `decode_options` (chunk, tile) go to the VAE's decode."""
    options = {k: v for k, v in decode_options.items() if v is not None}
    latents = settle_tail(vae, window.tail, window.splice, latents, **options)
    frames = video_to_frames(vae.decode(latents.to(_vae_dtype(vae)), **options).float()).cpu()
    return window.splice.apply(frames) if window.splice else frames
