"""Cheap latent previews: a linear map from latent channels to RGB.

A sampler shows its progress by turning the current denoised latent into a small picture
without running the VAE decoder. For that, each latent channel gets an (R, G, B) weight and
the three colours a bias, fitted by least squares so that `latent @ factors + bias` matches
the decoder's own colours (in [-1, 1]) averaged over each latent cell.

The fit needs one encoder/decoder pass over a few small images (about a second on a CPU
for the default model). A trainer can store the result in the checkpoint's `extra` metadata under
`METADATA_KEY` so loading skips it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .vae import VideoVAE

METADATA_KEY = "latent_rgb"


@dataclass
class LatentRGB:
    factors: list[list[float]]  # (C, 3): one (R, G, B) row per latent channel
    bias: list[float]  # (3,)

    def to_json(self) -> dict:
        return {"factors": self.factors, "bias": self.bias}

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
def fit_latent_rgb(vae: VideoVAE, *, images: int = 8, size: int | None = None, seed: int = 0) -> LatentRGB:
    """Fit the latent -> RGB map on `images` random colour fields, encoded and decoded by `vae`."""
    s = vae.spatial_factor
    size = size or 8 * s  # 8x8 latent cells per image: 512 rows for a fit of C+1 unknowns
    param = next(vae.parameters())
    g = torch.Generator("cpu").manual_seed(seed)
    video = _colour_fields(images, size, g)[:, :, None].to(param.device, param.dtype)  # (N, 3, 1, H, W)
    z = vae.encode(video).float()  # (N, C, 1, h, w)
    rgb = F.avg_pool2d(vae.decode(z.to(param.dtype)).float()[:, :, 0], s)  # (N, 3, h, w)
    x = z[:, :, 0].permute(0, 2, 3, 1).reshape(-1, z.shape[1])  # (N*h*w, C)
    x = torch.cat([x, torch.ones(x.shape[0], 1, device=x.device)], dim=1)
    y = rgb.permute(0, 2, 3, 1).reshape(-1, 3)
    solution = torch.linalg.lstsq(x.cpu().double(), y.cpu().double()).solution  # (C+1, 3)
    if not torch.isfinite(solution).all():
        solution = torch.zeros_like(solution)
    return LatentRGB(factors=solution[:-1].tolist(), bias=solution[-1].tolist())


def latent_rgb_from_metadata(metadata: dict, latent_channels: int) -> LatentRGB | None:
    """The map stored in a checkpoint's `extra` metadata, if there is one of the right size."""
    try:
        stored = json.loads(metadata.get("extra", "{}")).get(METADATA_KEY)
    except (ValueError, AttributeError):
        return None
    if not stored or len(stored.get("factors", [])) != latent_channels or len(stored.get("bias", [])) != 3:
        return None
    return LatentRGB(factors=stored["factors"], bias=stored["bias"])
