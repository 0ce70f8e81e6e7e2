"""What travels between the nodes, in ComfyUI's core types, and the checks on it.

LATENT is a dict:
    "samples"       (B, C, T, h, w) normalised latents (5-D, like core video latents)
    "sora_strength" (B, T) per latent frame: 0 = given and kept, 1 = generated, between = SDEdit
                    (absent = every frame generated, like a core empty latent)
    "sora_splice"   how the decoded frames join the source clips (Extend / Loop / Connect)
CONDITIONING is core's [[embeddings (1, L, D), {"sora_mask": (1, L) bool, "sora_text": str}]].
IMAGE is (frames, height, width, 3) in [0, 1]; a batch is the frames of ONE video.
"""

from __future__ import annotations

import torch

from sora_core import budget
from sora_core.conditioning import Splice, Window, as_frames
from sora_core.config import SoraConfig
from sora_core.patch import check_frame_count, check_pixel_size

from . import host

FRAMES_TOOLTIP = "Frame count: 1 + 4k (1, 5, 9, 13, 17, ...). One frame makes an image."
CHUNK_TOOLTIP = "A multiple of 4 frames: the VAE turns every 4 frames into one latent frame."


def latent(samples: torch.Tensor, strength: torch.Tensor | None = None, splice: Splice | None = None) -> dict:
    out = {"samples": samples.to(host.intermediate_device())}
    if strength is not None:
        out["sora_strength"] = strength.to(host.intermediate_device())
    if splice is not None:
        out["sora_splice"] = splice
    return out


def window_latent(window: Window) -> dict:
    return latent(window.samples, window.strength, window.splice)


def check_latent(value: dict, config: SoraConfig, name: str = "latent") -> torch.Tensor:
    samples = value.get("samples") if isinstance(value, dict) else None
    c = config.vae.latent_channels
    if samples is None or samples.ndim != 5 or samples.shape[1] != c:
        shape = None if samples is None else tuple(samples.shape)
        raise ValueError(
            f"{name} must be a Sora video latent of shape (batch, {c}, frames, height, width), made by a Sora "
            f"node (Patchify Grid, VAE Encode, Extend, ...); got samples of shape {shape}"
        )
    check_finite(name, samples)
    return samples


def check_finite(name: str, samples: torch.Tensor) -> None:
    """NaN / inf in a latent, named before any sampling or decoding (it would spread to every frame)."""
    bad = ~torch.isfinite(samples)
    if bad.any():
        frames = sorted({int(f) for f in bad.any(dim=(0, 1, 3, 4)).nonzero().flatten()})
        raise ValueError(f"{name} holds {int(bad.sum())} NaN or inf values (in latent frames {frames}); "
                         f"the node that made it is broken upstream (an image with NaN, a VAE in too narrow a dtype)")


def strength_of(value: dict, samples: torch.Tensor) -> torch.Tensor:
    strength = value.get("sora_strength")
    if strength is None:
        return torch.ones(samples.shape[0], samples.shape[2])
    if tuple(strength.shape) != (samples.shape[0], samples.shape[2]):
        raise ValueError(f"sora_strength has shape {tuple(strength.shape)}; expected (batch, latent frames) = "
                         f"{(samples.shape[0], samples.shape[2])}")
    if not bool(((strength >= 0) & (strength <= 1)).all()):  # NaN fails both
        raise ValueError(f"sora_strength holds values outside 0..1 ({strength.flatten().tolist()[:8]}); "
                         f"rebuild the latent with a Sora node")
    return strength


def check_frames(name: str, frames: torch.Tensor, config: SoraConfig, *, any_count: bool = False) -> torch.Tensor:
    """Frames must be finite (T, H, W, 3) in 0..1 with H, W multiples of the model's pixel multiple (and
    T = 1 + 4k); returns them as float."""
    if not isinstance(frames, torch.Tensor) or frames.ndim != 4 or frames.shape[-1] != 3 or 0 in frames.shape:
        shape = tuple(frames.shape) if isinstance(frames, torch.Tensor) else type(frames).__name__
        raise ValueError(f"{name} must be IMAGE frames (count, height, width, 3); got {shape}")
    frames = as_frames(name, frames)
    try:
        check_pixel_size(frames.shape[2], frames.shape[1], config.pixel_multiple)
        if not any_count:
            check_frame_count(frames.shape[0], config.vae.temporal_factor)
    except ValueError as err:
        raise ValueError(f"{name} ({frames.shape[0]} frames of {frames.shape[2]}x{frames.shape[1]}): {err}. "
                         f"Resize with an Image Scale node or trim with Sora Trim Frames.") from None
    return frames


def check_budget(config: SoraConfig, what: str, width: int, height: int, frames: int, *, batch: int = 1,
                 stages: tuple[str, ...], part=None, **kw) -> budget.Estimate:
    """`sora_core.budget.check` on the device the work runs on: `part`'s, else where ComfyUI runs DiTs."""
    if part is not None:
        device, dtype = part.compute_device, next(part.module.parameters()).dtype
    else:
        device = host.devices("dit")[0]
        dtype = host.auto_dtype(device)
    return budget.check(config, what=what, width=width, height=height, frames=frames, batch=batch, stages=stages,
                        device=device, dtype=dtype, **kw)


def conditioning(embeddings: torch.Tensor, mask: torch.Tensor, text: str) -> list:
    d = host.intermediate_device()
    return [[embeddings.to(d), {"sora_mask": mask.to(d), "sora_text": text}]]


def read_conditioning(value, config: SoraConfig, name: str) -> tuple[torch.Tensor, torch.Tensor, str]:
    """(embeddings (1, L, D), mask (1, L), text) from a Sora Text Encode output."""
    ok = isinstance(value, list) and len(value) >= 1 and isinstance(value[0], (list, tuple)) and len(value[0]) == 2
    if not ok or "sora_mask" not in value[0][1]:
        raise ValueError(f"{name} must come from a Sora Text Encode node (other text encoders' conditioning "
                         f"does not fit the Sora model)")
    if len(value) > 1:
        raise ValueError(f"{name} holds {len(value)} prompts; the Sora sampler takes one Sora Text Encode output")
    emb, extra = value[0]
    if emb.shape[-1] != config.text.dim:
        raise ValueError(f"{name} has {emb.shape[-1]}-dim embeddings but this model expects {config.text.dim}; "
                         f"encode it with the text encoder from the same Sora checkpoint")
    return emb, extra["sora_mask"], extra.get("sora_text", "")
