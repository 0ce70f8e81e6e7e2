"""What travels between the nodes, in ComfyUI's core types, and the checks on it.

LATENT is a dict:
    "samples"       (B, C, T, h, w) normalised latents (5-D, like core video latents)
    "sora_strength" (B, T) per latent frame: 0 = given and kept, 1 = generated, between = SDEdit
                    (absent = every frame generated, like a core empty latent)
    "sora_splice"   how the decoded frames join the source clips (Extend / Loop / Connect)
    "sora_noised"   True when SDEdit Noise already noised the samples with its own seed
CONDITIONING is core's [[embeddings (1, L, D), {"sora_mask": (1, L) bool, "sora_text": str}]].
IMAGE is (frames, height, width, 3) in [0, 1]; a batch is the frames of ONE video.
"""

from __future__ import annotations

import torch

from sora_core.conditioning import Splice, Window
from sora_core.config import SoraConfig
from sora_core.patch import check_frame_count, check_pixel_size

from . import host

FRAMES_TOOLTIP = "Frame count: 1 + 4k (1, 5, 9, 13, 17, ...). One frame makes an image."
CHUNK_TOOLTIP = "A multiple of 4 frames: the VAE turns every 4 frames into one latent frame."


def latent(samples: torch.Tensor, strength: torch.Tensor | None = None, splice: Splice | None = None,
           noised: bool = False) -> dict:
    out = {"samples": samples.to(host.intermediate_device())}
    if strength is not None:
        out["sora_strength"] = strength.to(host.intermediate_device())
    if splice is not None:
        out["sora_splice"] = splice
    if noised:
        out["sora_noised"] = True
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
    return samples


def strength_of(value: dict, samples: torch.Tensor) -> torch.Tensor:
    strength = value.get("sora_strength")
    if strength is None:
        return torch.ones(samples.shape[0], samples.shape[2])
    if tuple(strength.shape) != (samples.shape[0], samples.shape[2]):
        raise ValueError(f"sora_strength has shape {tuple(strength.shape)}; expected (batch, latent frames) = "
                         f"{(samples.shape[0], samples.shape[2])}")
    return strength


def check_frames(name: str, frames: torch.Tensor, config: SoraConfig, *, any_count: bool = False) -> None:
    """Frames must be (T, H, W, 3) with H, W multiples of the model's pixel multiple (and T = 1 + 4k)."""
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"{name} must be IMAGE frames (count, height, width, 3); got shape {tuple(frames.shape)}")
    try:
        check_pixel_size(frames.shape[2], frames.shape[1], config.pixel_multiple)
        if not any_count:
            check_frame_count(frames.shape[0], config.vae.temporal_factor)
    except ValueError as err:
        raise ValueError(f"{name} ({frames.shape[0]} frames of {frames.shape[2]}x{frames.shape[1]}): {err}. "
                         f"Resize with an Image Scale node or trim with Sora Trim Frames.") from None


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
