"""Cheap latent previews: a linear map from latent channels to RGB.

A sampler shows its progress by turning the current denoised latent into a small picture
without running the VAE decoder. For that, each latent channel gets an (R, G, B) weight and
the three colours a bias, fitted by least squares so that `latent @ factors + bias` matches
the decoder's own colours (in [-1, 1], as ComfyUI's Latent2RGB previewer shows them) averaged
over each latent cell.

The fit sees the two kinds of latent a sampler shows: encoded colour fields (finished frames) and
draws from the latent prior (the starting noise, early predictions, and where an imperfect model
strays). Fitted on encoded images alone, the map extrapolated so badly to generated latents that
the default model's previews came out dark and without their blue (colour cast 0.16 on a
generated clip, 0.09 with the prior draws; 0.03 -> 0.05 on held-out encoded images).
It needs one encoder/decoder pass over a few small images (about a second on a CPU
for the default model). A trainer stores the result in the checkpoint's `extra` metadata under
`METADATA_KEY` so loading skips it; a map from an older fit (`FIT_VERSION`) is fitted again.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .vae import VideoVAE

METADATA_KEY = "latent_rgb"
FIT_VERSION = 2  # 1: encoded colour fields only


@dataclass
class LatentRGB:
    factors: list[list[float]]  # (C, 3): one (R, G, B) row per latent channel
    bias: list[float]  # (3,)

    def to_json(self) -> dict:
        return {"factors": self.factors, "bias": self.bias, "version": FIT_VERSION}

    def apply(self, z: torch.Tensor) -> torch.Tensor:
        """Latents (B, C, T, h, w) -> rough RGB (B, 3, T, h, w) in about [-1, 1]."""
        w = torch.tensor(self.factors, dtype=z.dtype, device=z.device)
        b = torch.tensor(self.bias, dtype=z.dtype, device=z.device)
        return torch.einsum("bcthw,cr->brthw", z, w) + b[None, :, None, None, None]


def _colour_fields(count: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """(count, 3, size, size) smooth random colour fields in [-1, 1]: blobs of colour like a real frame."""
    coarse = torch.rand(count, 3, 4, 4, generator=generator) * 2 - 1
    return F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False).clamp(-1, 1)


@torch.no_grad()
def fit_latent_rgb(vae: VideoVAE, *, images: int = 16, size: int | None = None, seed: int = 0) -> LatentRGB:
    """Fit the latent -> RGB map on `images` random colour fields and half as many prior draws."""
    s = vae.spatial_factor
    size = size or 8 * s  # 8x8 latent cells per image: 1536 rows for a fit of C+1 unknowns
    param = next(vae.parameters())
    g = torch.Generator("cpu").manual_seed(seed)
    video = _colour_fields(images, size, g)[:, :, None].to(param.device, param.dtype)  # (N, 3, 1, H, W)
    z = vae.encode(video).float()  # (N, C, 1, h, w)
    z = torch.cat([z, torch.randn(z[: max(1, images // 2)].shape, generator=g).to(z)])
    return _least_squares(z, average_colours(vae, z))


def average_colours(vae: VideoVAE, z: torch.Tensor) -> torch.Tensor:
    """The decoder's first frame of latents (N, C, T, h, w), clamped as shown, averaged per latent cell: (N, 3, h, w)."""
    param = next(vae.parameters())
    frames = vae.decode(z[:, :, :1].to(param.dtype)).float()[:, :, 0].clamp(-1, 1)
    return F.avg_pool2d(frames, vae.spatial_factor)


def _least_squares(z: torch.Tensor, rgb: torch.Tensor) -> LatentRGB:
    x = z[:, :, 0].permute(0, 2, 3, 1).reshape(-1, z.shape[1])  # (N*h*w, C)
    x = torch.cat([x, torch.ones(x.shape[0], 1, device=x.device)], dim=1)
    y = rgb.permute(0, 2, 3, 1).reshape(-1, 3)
    solution = torch.linalg.lstsq(x.cpu().double(), y.cpu().double()).solution  # (C+1, 3)
    if not torch.isfinite(solution).all():
        solution = torch.zeros_like(solution)
    return LatentRGB(factors=solution[:-1].tolist(), bias=solution[-1].tolist())


def latent_rgb_from_metadata(metadata: dict, latent_channels: int) -> LatentRGB | None:
    """The map stored in a checkpoint's `extra` metadata, if there is one of the right size and fit."""
    try:
        stored = json.loads(metadata.get("extra", "{}")).get(METADATA_KEY)
    except (ValueError, AttributeError):
        return None
    if not stored or len(stored.get("factors", [])) != latent_channels or len(stored.get("bias", [])) != 3:
        return None
    if stored.get("version", 1) != FIT_VERSION:
        return None  # an older fit: the loader fits again
    return LatentRGB(factors=stored["factors"], bias=stored["bias"])
