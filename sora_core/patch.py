"""Spacetime latent patches: the transformer's tokens, for any (T, H, W) grid.

The report arranges noise patches "in a grid of any width, height and duration"; nothing here
assumes a square or a fixed size. Positions feed 3D RoPE, so one model serves every shape.
"""

from __future__ import annotations

import numbers

import torch
from einops import rearrange


def nearest_multiples(value: int, multiple: int) -> list[int]:
    """The valid values closest to `value` (one below, one above)."""
    below = max(multiple, value // multiple * multiple)
    above = below if below >= value else below + multiple
    return sorted({below, above})


def is_whole(value) -> bool:
    """An integer as users pass them (numpy's too), not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_pixel_size(width: int, height: int, multiple: int) -> None:
    """Raise a ValueError naming the bad size, its value and the nearest valid ones."""
    for name, value in (("width", width), ("height", height)):
        if not is_whole(value):
            raise ValueError(f"{name}={value!r} is not allowed: use a whole number of pixels, a positive multiple "
                             f"of {multiple}")
        if value < multiple or value % multiple:
            raise ValueError(
                f"{name}={value} is not allowed: it must be a positive multiple of {multiple}; "
                f"nearest valid: {nearest_multiples(int(value), multiple)}"
            )


def check_frame_count(frames: int, temporal_factor: int) -> None:
    """Frame counts must be 1 + k * temporal_factor (frame 0 is encoded on its own)."""
    if not is_whole(frames):
        raise ValueError(f"frames={frames!r} is not allowed: use a whole number of frames, 1 + {temporal_factor}*k "
                         f"(1, {1 + temporal_factor}, {1 + 2 * temporal_factor}, ...)")
    if frames < 1 or (frames - 1) % temporal_factor:
        k = max(0, (int(frames) - 1) // temporal_factor)
        options = sorted({1 + k * temporal_factor, 1 + (k + 1) * temporal_factor})
        raise ValueError(
            f"frames={frames} is not allowed: the count must be 1 + {temporal_factor}*k "
            f"(1, {1 + temporal_factor}, {1 + 2 * temporal_factor}, ...); nearest valid: {options}"
        )


def latent_frames(frames: int, temporal_factor: int) -> int:
    check_frame_count(frames, temporal_factor)
    return 1 + (frames - 1) // temporal_factor


def check_latent_grid(t: int, h: int, w: int, patch: tuple[int, int, int]) -> None:
    for name, value, p in (("latent frames", t, patch[0]), ("latent height", h, patch[1]), ("latent width", w, patch[2])):
        if value < p or value % p:
            raise ValueError(
                f"{name}={value} is not divisible by the patch size {p}; "
                f"nearest valid: {nearest_multiples(value, p)}"
            )


def patchify(x: torch.Tensor, patch: tuple[int, int, int]) -> torch.Tensor:
    """(B, C, T, H, W) latents -> (B, N, C*pt*ph*pw) tokens in (t, h, w) raster order."""
    pt, ph, pw = patch
    check_latent_grid(*x.shape[2:], patch)
    return rearrange(x, "b c (t pt) (h ph) (w pw) -> b (t h w) (c pt ph pw)", pt=pt, ph=ph, pw=pw)


def unpatchify(tokens: torch.Tensor, grid: tuple[int, int, int], patch: tuple[int, int, int]) -> torch.Tensor:
    """Inverse of `patchify`; `grid` is the token grid (T/pt, H/ph, W/pw)."""
    pt, ph, pw = patch
    t, h, w = grid
    return rearrange(tokens, "b (t h w) (c pt ph pw) -> b c (t pt) (h ph) (w pw)", t=t, h=h, w=w, pt=pt, ph=ph, pw=pw)


def grid_positions(grid: tuple[int, int, int], device=None) -> torch.Tensor:
    """(N, 3) integer (t, h, w) coordinates of each token, same order as `patchify`."""
    t, h, w = grid
    axes = [torch.arange(n, device=device) for n in (t, h, w)]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, 3)


def rope_split(head_dim: int) -> tuple[int, int, int]:
    """How many of a head's channels rotate with time, height and width (all even)."""
    hw = 2 * (head_dim // 6)
    return head_dim - 2 * hw, hw, hw


def rope_tables(positions: torch.Tensor, head_dim: int, theta: float = 10000.0) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin tables (N, head_dim/2) for 3D rotary embeddings.

    Each axis gets its own band of frequencies, so a shift in time and a shift in space rotate
    different channel pairs and the model can tell them apart.
    """
    angles = []
    for axis, size in enumerate(rope_split(head_dim)):
        freqs = theta ** (-torch.arange(0, size, 2, device=positions.device, dtype=torch.float64) / size)
        angles.append(positions[:, axis, None].double() * freqs[None])
    angle = torch.cat(angles, dim=-1)
    return angle.cos().float(), angle.sin().float()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate channel pairs of x (B, H, N, D) by the tables (N, D/2)."""
    x2 = x.float().reshape(*x.shape[:-1], -1, 2)
    a, b = x2[..., 0], x2[..., 1]
    out = torch.stack((a * cos - b * sin, a * sin + b * cos), dim=-1)
    return out.flatten(-2).type_as(x)


def interleaved_tables(cos: torch.Tensor, sin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The (N, D/2) tables spread over all D channels for `rotate_pairs`: (cos, cos, ...), (-sin, sin, ...)."""
    return cos.repeat_interleave(2, dim=-1), torch.stack((-sin, sin), dim=-1).flatten(-2)


def rotate_pairs(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """`apply_rope` with tables from `interleaved_tables`, in x's dtype: three elementwise kernels
    instead of a dozen, which matters on CPUs where the model is small."""
    swapped = x.unflatten(-1, (-1, 2)).flip(-1).flatten(-2)  # (x1, x0, x3, x2, ...)
    return torch.addcmul(x * cos.to(x.dtype), swapped, sin.to(x.dtype))
