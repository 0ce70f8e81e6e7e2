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

from . import conditioning as cond
from .checkpoint import SoraModel, load_checkpoint
from .dit import DiT
from .flow import get_sampler, noise_to_start, resolution_shift, sigmas_for
from .patch import check_frame_count, check_pixel_size, latent_frames
from .text import pad_text

DEFAULT_MODEL = Path(__file__).resolve().parent / "models" / "sora-tiny.safetensors"

Progress = Callable[[int, int], None]

# Frames wider or taller than this many latent cells are decoded in tiles of it (bounded memory
# for large images: 512 px with the default model's VAE).
AUTO_TILE = 128


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
    denoise: float = 1.0,
    noised: bool = False,
    callback: Callable[[dict], None] | None = None,
) -> torch.Tensor:
    """Fill a latent window: frames with strength 0 come back exactly as given.

    `denoise` < 1 caps every frame's strength (plain SDEdit on any latent). `noised` says the
    samples are already at their starting noise (an SDEdit Noise node did it with its own seed).
    """
    if not 0.0 <= denoise <= 1.0:
        raise ValueError(f"denoise={denoise} must be between 0 and 1")
    if cfg < 0:
        raise ValueError(f"cfg={cfg} must be >= 0")
    device = next(dit.parameters()).device
    x0 = samples.to(device, torch.float32)
    strength = strength.to(device, torch.float32).clamp(max=denoise)
    start = float(strength.max())
    if start == 0.0:
        return x0.clone()
    sigmas = sigmas_for(steps, shift if shift is not None else resolution_shift(num_tokens(dit, x0)), start)
    x = x0 if noised else noise_to_start(x0, seeded_noise(x0.shape, seed, device), start, strength)
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
    """A loaded model plus the capabilities of the report as methods."""

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
        if not prompt.strip():
            raise ValueError("prompt is empty; describe the video to generate")
        steps = sampling.get("steps", 20)
        callback = (lambda d: progress(d["i"] + 1, steps)) if progress else None
        latents = sample_window(self.model.dit, window.samples, window.strength, self.encode_text(prompt),
                                self.encode_text(negative), callback=callback, **sampling)
        if on_latents is not None:
            latents = on_latents(latents)
        if decode_tile is None and max(latents.shape[-2:]) > AUTO_TILE:
            decode_tile = AUTO_TILE
        param = next(self.model.vae.parameters())
        video = self.model.vae.decode(latents.to(param.device, param.dtype), chunk=decode_chunk, tile=decode_tile)
        frames = cond.video_to_frames(video.float()).cpu()
        return window.splice.apply(frames) if window.splice else frames

    def _check_size(self, width: int, height: int, frames: int) -> None:
        check_pixel_size(width, height, self.config.pixel_multiple)
        check_frame_count(frames, self.config.vae.temporal_factor)

    def empty_window(self, width: int, height: int, frames: int, batch: int = 1) -> cond.Window:
        self._check_size(width, height, frames)
        s = self.config.vae.spatial_factor
        t = latent_frames(frames, self.config.vae.temporal_factor)
        return cond.empty_window(batch, self.config.vae.latent_channels, t, height // s, width // s)

    def generate(self, prompt: str, width: int = 64, height: int = 64, frames: int = 17, **kw) -> torch.Tensor:
        """Text to video (frames=1: text to image)."""
        return self.run(self.empty_window(width, height, frames), prompt, **kw)

    def animate(self, image: torch.Tensor, prompt: str, frames: int = 17, **kw) -> torch.Tensor:
        """Image to video: `image` (1, H, W, 3) becomes the first frame."""
        self._check_size(image.shape[2], image.shape[1], frames)
        return self.run(cond.animate_image(self.model.vae, image.to(self.device), frames), prompt, **kw)

    def extend(self, video: torch.Tensor, prompt: str, new_frames: int = 16, context_frames: int = 8,
               direction: str = "forward", blend_frames: int = cond.SEAM_BLEND, **kw) -> torch.Tensor:
        """Extend a clip forward (what happens next) or backward (what led up to it) in time;
        `blend_frames` of the clip crossfade at the join (0: the clip comes back bit-identical)."""
        builders = {"forward": cond.extend_forward, "backward": cond.extend_backward}
        if direction not in builders:
            raise ValueError(f"direction={direction!r} is not allowed; use 'forward' or 'backward'")
        return self.run(builders[direction](self.model.vae, video.to(self.device), new_frames, context_frames,
                                            blend_frames), prompt, **kw)

    def loop(self, video: torch.Tensor, prompt: str, transition_frames: int = 8, context_frames: int = 8,
             blend_frames: int = cond.SEAM_BLEND, **kw) -> torch.Tensor:
        """Append a generated transition back to the start: the result plays as a seamless infinite loop."""
        window = cond.loop(self.model.vae, video.to(self.device), transition_frames, context_frames, blend_frames)
        return self.run(window, prompt, **kw)

    def connect(self, first: torch.Tensor, second: torch.Tensor, prompt: str, transition_frames: int = 16,
                context_frames: int = 8, blend_frames: int = cond.SEAM_BLEND, **kw) -> torch.Tensor:
        """first + a generated transition + second."""
        window = cond.connect(self.model.vae, first.to(self.device), second.to(self.device), transition_frames,
                              context_frames, blend_frames)
        return self.run(window, prompt, **kw)

    def edit(self, video: torch.Tensor, prompt: str, strength: float = 0.6, **kw) -> torch.Tensor:
        """Video-to-video editing with SDEdit: strength 0 keeps the input, 1 ignores it."""
        self._check_size(video.shape[2], video.shape[1], video.shape[0])
        latent = cond.encode_frames(self.model.vae, video.to(self.device))
        return self.run(cond.sdedit(latent, strength), prompt, **kw)
