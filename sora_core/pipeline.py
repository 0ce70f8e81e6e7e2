"""Text/frames in, frames out: the Python API over the engine.

    from sora_core.pipeline import Pipeline
    pipe = Pipeline.load()                       # the shipped default model
    frames = pipe.generate("a red ball bouncing", width=64, height=64, frames=17, seed=1)

Frames are float tensors (T, H, W, 3) in [0, 1] (ComfyUI's IMAGE layout). `sample_window` is
the one sampling routine; the ComfyUI nodes call it too.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import torch

from . import budget
from . import conditioning as cond
from .budget import Budget
from .checkpoint import SoraModel, load_checkpoint
from .dit import DiT
from .flow import check_sampling, get_sampler, noise_to_start, resolution_shift, sigmas_for
from .patch import check_frame_count, check_pixel_size, is_whole
from .text import pad_text

DEFAULT_MODEL = Path(__file__).resolve().parent / "models" / "sora-tiny.safetensors"

Progress = Callable[[int, int], None]

# Frames wider or taller than this many latent cells are decoded in tiles of it (bounded memory
# for large images: 512 px with the default model's VAE).
AUTO_TILE = 128


def auto_tile(h: int, w: int, tile: int | None = None) -> int | None:
    """The decode tile (latent cells) for frames of h x w latent cells: `tile` if given, else `AUTO_TILE` when larger."""
    return tile if tile is not None or max(h, w) <= AUTO_TILE else AUTO_TILE


def default_model_path() -> Path:
    """The shipped default model, or SORA_MODEL if set."""
    return Path(os.environ.get("SORA_MODEL", DEFAULT_MODEL))


def seeded_noise(shape, seed: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """Gaussian noise from a CPU generator: the same seed gives the same noise on every device."""
    g = torch.Generator("cpu").manual_seed(int(seed))
    return torch.randn(shape, generator=g, dtype=torch.float32).to(device=device, dtype=dtype)


def num_tokens(dit: DiT, samples: torch.Tensor) -> int:
    pt, ph, pw = dit.config.patch
    t, h, w = samples.shape[2:]
    return (t // pt) * (h // ph) * (w // pw)


def guided_velocity(dit: DiT, text: tuple[torch.Tensor, torch.Tensor], negative: tuple[torch.Tensor, torch.Tensor] | None,
                    cfg: float):
    """model(x, t) for the samplers: classifier-free guidance with the negative prompt, both halves in one batch."""
    emb, mask = text
    dtype = next(dit.parameters()).dtype

    def expand(e, m, b):
        return e.expand(b, -1, -1).to(dtype), m.expand(b, -1)

    if negative is None or cfg == 1.0:
        def model(x, t):
            e, m = expand(emb, mask, x.shape[0])
            return dit(x.to(dtype), t.to(dtype), e, m).float()
        return model

    both_emb, both_mask = pad_text([emb, negative[0]], [mask, negative[1]])

    def model(x, t):
        b = x.shape[0]
        e = torch.cat([both_emb[:1].expand(b, -1, -1), both_emb[1:].expand(b, -1, -1)]).to(dtype)
        m = torch.cat([both_mask[:1].expand(b, -1), both_mask[1:].expand(b, -1)])
        v = dit(torch.cat([x, x]).to(dtype), torch.cat([t, t]).to(dtype), e, m).float()
        v_cond, v_uncond = v.chunk(2)
        return v_uncond + cfg * (v_cond - v_uncond)

    return model


@torch.no_grad()
def sample_window(
    dit: DiT,
    samples: torch.Tensor,
    strength: torch.Tensor,
    text: tuple[torch.Tensor, torch.Tensor],
    negative: tuple[torch.Tensor, torch.Tensor] | None,
    *,
    seed: int = 0,
    steps: int = 20,
    cfg: float = 5.0,
    shift: float | None = None,
    sampler: str = "euler",
    callback: Callable[[dict], None] | None = None,
) -> torch.Tensor:
    """Fill a latent window: frames with strength 0 come back exactly as given; the others start
    from the samples noised to their strength (1 = pure noise, below = SDEdit) with `seed`'s noise.
    """
    if cfg < 0:
        raise ValueError(f"cfg={cfg} must be >= 0")
    device = next(dit.parameters()).device
    x0 = samples.to(device, torch.float32)
    strength = strength.to(device, torch.float32)
    start = float(strength.max())
    if start == 0.0:
        return x0.clone()
    sigmas = sigmas_for(steps, shift if shift is not None else resolution_shift(num_tokens(dit, x0)), start)
    x = noise_to_start(x0, seeded_noise(x0.shape, seed, device), start, strength)
    out = get_sampler(sampler)(guided_velocity(dit, text, negative, cfg), x, sigmas.to(device), strength=strength,
                               callback=callback)
    given = (strength == 0)[:, None, :, None, None]
    out = torch.where(given, x0, out)  # exactly, not merely up to float rounding
    if not torch.isfinite(out).all():
        raise FloatingPointError(
            "the sampler produced NaN/inf latents; the model's dtype may be too narrow (try float32) "
            "or cfg too high"
        )
    return out


class Pipeline:
    """A loaded model plus the capabilities of the report as methods.

    Every method checks its inputs and the request's budget (`sora_core.budget`: DiT tokens and
    memory) before any work; set `pipe.budget = Budget(max_tokens=..., max_memory=...)` to change
    the limits. Frames go in as float (T, H, W, 3) in [0, 1] or uint8 in 0..255 (what
    `io.read_video` returns) and come out as float in [0, 1].
    """

    budget: Budget | None = None  # None: SORA_MAX_TOKENS / SORA_MAX_MEMORY, else the defaults

    def __init__(self, model: SoraModel):
        missing = {"vae", "text", "dit"} - set(model.parts)
        if missing:
            raise ValueError(f"a Pipeline needs a full model; this one lacks {sorted(missing)}")
        self.model = model

    @classmethod
    def load(cls, path: str | os.PathLike | None = None, *, device: str = "cpu", dtype: torch.dtype | None = None) -> "Pipeline":
        path = Path(path) if path else default_model_path()
        return cls(load_checkpoint(path, device=device, dtype=dtype))

    @property
    def config(self):
        return self.model.config

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.no_grad()
    def encode_text(self, prompt: str) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model.text.encode([prompt])

    @torch.no_grad()
    def run(self, window: cond.Window, prompt: str, negative: str = "", *, progress: Progress | None = None,
            decode_chunk: int = 4, decode_tile: int | None = None,
            on_latents: Callable[[torch.Tensor], torch.Tensor] | None = None, **sampling) -> torch.Tensor:
        """Sample a window, decode it, splice in the source frames -> (T, H, W, 3) frames.

        `on_latents` may adjust the sampled latents before decoding (long videos' drift control);
        `decode_tile` (latent cells) splits large frames for the VAE (default: `AUTO_TILE` when larger).
        """
        self._check_request(prompt, dict(sampling, negative=negative, decode_chunk=decode_chunk))
        b, _, t, h, w = window.samples.shape
        decode_tile = auto_tile(h, w, decode_tile)
        s, tf = self.config.vae.spatial_factor, self.config.vae.temporal_factor
        self._plan("run", w * s, h * s, 1 + tf * (t - 1), batch=b, decode_chunk=decode_chunk,
                   decode_tile=decode_tile, cfg=sampling.get("cfg", 5.0))
        steps = sampling.get("steps", 20)
        callback = (lambda d: progress(d["i"] + 1, steps)) if progress else None
        latents = sample_window(self.model.dit, window.samples, window.strength, self.encode_text(prompt),
                                self.encode_text(negative), callback=callback, **sampling)
        if on_latents is not None:
            latents = on_latents(latents)
        param = next(self.model.vae.parameters())
        video = self.model.vae.decode(latents.to(param.device, param.dtype), chunk=decode_chunk, tile=decode_tile)
        if not torch.isfinite(video).all():  # the latents are finite (sample_window checks), so the VAE overflowed
            raise FloatingPointError("the VAE decoded NaN/inf from finite latents; its dtype may be too narrow "
                                     "(load the model in float32)")
        frames = cond.video_to_frames(video.float()).cpu()
        return window.splice.apply(frames) if window.splice else frames

    _SETTINGS = ("negative", "seed", "steps", "cfg", "shift", "sampler", "decode_chunk", "decode_tile", "on_latents",
                 "progress")

    def _check_request(self, prompt, kw: dict) -> None:
        """The prompts and sampling settings, before any work."""
        unknown = [k for k in kw if k not in self._SETTINGS]
        if unknown:  # named here: check_sampling would name itself, not the caller's argument
            raise TypeError(f"unexpected keyword argument {unknown[0]!r}; the settings are {', '.join(self._SETTINGS)}")
        for name, text in (("prompt", prompt), ("negative", kw.get("negative", ""))):
            if not isinstance(text, str):
                raise TypeError(f"{name} must be a string; got {type(text).__name__}"
                                + (" (use '' for no negative prompt)" if name == "negative" else ""))
        if not prompt.strip():
            raise ValueError("prompt is empty; describe the video to generate")
        chunk = kw.get("decode_chunk", 4)
        if not is_whole(chunk) or chunk < 1:
            raise ValueError(f"decode_chunk={chunk!r} is not allowed: use an integer >= 1 (latent frames per step)")
        check_sampling(**{k: v for k, v in kw.items() if k not in ("negative", "decode_chunk", "decode_tile", "on_latents", "progress")})

    def _plan(self, what: str, width: int, height: int, frames: int, *, source: str | None = None,
              encode_frames: int = 0, batch: int = 1, decode_chunk: int = 4, decode_tile: int | None = None,
              cfg: float = 5.0) -> None:
        """Sizes and budget of a request, before any work; a pixel size is named by its input."""
        try:
            check_pixel_size(width, height, self.config.pixel_multiple)
        except ValueError as err:
            if source is None:
                raise
            raise ValueError(f"{source} is {width}x{height} px (width x height): {err}") from None
        check_frame_count(frames, self.config.vae.temporal_factor)
        s = self.config.vae.spatial_factor
        decode_tile = auto_tile(height // s, width // s, decode_tile)
        budget.check(self.config, what=what, width=width, height=height, frames=frames, batch=batch,
                     stages=budget.STAGES if encode_frames else ("sample", "decode"), encode_frames=encode_frames,
                     chunk=decode_chunk, tile=decode_tile, guidance=cfg != 1.0, dtype=next(self.model.dit.parameters()).dtype,
                     device=self.device, budget=self.budget)

    def _frames(self, name: str, frames) -> torch.Tensor:
        return cond.as_frames(name, frames).to(self.device)

    def _chunks(self, **values: int) -> int:
        """Check extend / loop / connect timings by name; returns their sum in frames."""
        for name, value in values.items():
            cond.check_chunks(name, value, self.config.vae.temporal_factor)
        return sum(values.values())

    def generate(self, prompt: str, width: int = 64, height: int = 64, frames: int = 17, **kw) -> torch.Tensor:
        """Text to video (frames=1: text to image)."""
        self._check_request(prompt, kw)
        self._plan("generate", width, height, frames, decode_chunk=kw.get("decode_chunk", 4), cfg=kw.get("cfg", 5.0))
        return self.run(cond.empty_window(self.config, width, height, frames), prompt, **kw)

    def animate(self, image, prompt: str, frames: int = 17, at: str = "first", blend_frames: int = cond.SEAM_BLEND,
                **kw) -> torch.Tensor:
        """Image to video: `image` (1, H, W, 3) is exactly the first (or last) frame; the next
        `blend_frames` frames crossfade from it into the generated ones."""
        self._check_request(prompt, kw)
        image = self._frames("image", image)[:1]
        self._plan("animate", image.shape[2], image.shape[1], frames, source="image", encode_frames=1,
                   decode_chunk=kw.get("decode_chunk", 4), cfg=kw.get("cfg", 5.0))
        return self.run(cond.animate_image(self.model.vae, image, frames, at=at, blend_frames=blend_frames), prompt, **kw)

    def extend(self, video, prompt: str, new_frames: int = 16, context_frames: int = 8,
               direction: str = "forward", blend_frames: int = cond.SEAM_BLEND, **kw) -> torch.Tensor:
        """Extend a clip forward (what happens next) or backward (what led up to it) in time;
        `blend_frames` of the clip crossfade at the join (0: the clip comes back bit-identical)."""
        self._check_request(prompt, kw)
        if direction not in cond.DIRECTIONS:
            raise ValueError(f"direction={direction!r} is not allowed; use 'forward' or 'backward'")
        video = self._frames("video", video)
        total = self._chunks(new_frames=new_frames, context_frames=context_frames)
        self._plan("extend", video.shape[2], video.shape[1], 1 + total, source="video",
                   encode_frames=1 + context_frames, decode_chunk=kw.get("decode_chunk", 4), cfg=kw.get("cfg", 5.0))
        window = cond.extend(self.model.vae, video, new_frames, context_frames, direction, blend_frames)
        return self.run(window, prompt, **kw)

    def loop(self, video, prompt: str, transition_frames: int = 8, context_frames: int = 8,
             blend_frames: int = cond.SEAM_BLEND, **kw) -> torch.Tensor:
        """Append a generated transition back to the start: the result plays as a seamless infinite loop."""
        self._check_request(prompt, kw)
        video = self._frames("video", video)
        self._chunks(transition_frames=transition_frames, context_frames=context_frames)
        self._plan("loop", video.shape[2], video.shape[1], 1 + transition_frames + 2 * context_frames,
                   source="video", encode_frames=1 + 2 * context_frames, decode_chunk=kw.get("decode_chunk", 4),
                   cfg=kw.get("cfg", 5.0))
        window = cond.loop(self.model.vae, video, transition_frames, context_frames, blend_frames)
        return self.run(window, prompt, **kw)

    def connect(self, first, second, prompt: str, transition_frames: int = 16,
                context_frames: int = 8, blend_frames: int = cond.SEAM_BLEND, **kw) -> torch.Tensor:
        """first + a generated transition + second."""
        self._check_request(prompt, kw)
        first, second = self._frames("first", first), self._frames("second", second)
        self._chunks(transition_frames=transition_frames, context_frames=context_frames)
        for name, clip in (("first", first), ("second", second)):
            self._plan("connect", clip.shape[2], clip.shape[1], 1 + transition_frames + 2 * context_frames,
                       source=name, encode_frames=1 + 2 * context_frames, decode_chunk=kw.get("decode_chunk", 4),
                       cfg=kw.get("cfg", 5.0))
        window = cond.connect(self.model.vae, first, second, transition_frames, context_frames, blend_frames)
        return self.run(window, prompt, **kw)

    def edit(self, video, prompt: str, strength: float = 0.6, **kw) -> torch.Tensor:
        """Video-to-video editing with SDEdit: strength 0 keeps the input, 1 ignores it."""
        self._check_request(prompt, kw)
        cond.check_strength(strength)
        video = self._frames("video", video)
        try:
            check_frame_count(video.shape[0], self.config.vae.temporal_factor)
        except ValueError as err:
            raise ValueError(f"video has {video.shape[0]} frames: {err}") from None
        self._plan("edit", video.shape[2], video.shape[1], video.shape[0], source="video",
                   encode_frames=video.shape[0], decode_chunk=kw.get("decode_chunk", 4), cfg=kw.get("cfg", 5.0))
        latent = cond.encode_frames(self.model.vae, video)
        return self.run(cond.sdedit(latent, strength), prompt, **kw)
