"""One attention dispatch for the whole package.

torch's scaled_dot_product_attention everywhere; xformers' memory-efficient kernel on CUDA
when it is importable (it is faster on some older GPUs and ComfyUI installs often have it).
Set SORA_ATTENTION=sdpa or =xformers to force a backend.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F

try:  # optional fast path
    import xformers.ops as _xops
except Exception:  # noqa: BLE001 - any import failure just means "not available"
    _xops = None

BACKENDS = ("auto", "sdpa", "xformers")


def backend_for(device: torch.device) -> str:
    """The backend that `attention` will use for tensors on `device`."""
    choice = os.environ.get("SORA_ATTENTION", "auto").lower()
    if choice not in BACKENDS:
        raise ValueError(f"SORA_ATTENTION={choice!r} is not allowed; use one of {BACKENDS}")
    if choice == "xformers" and _xops is None:
        raise RuntimeError("SORA_ATTENTION=xformers but xformers is not importable")
    if choice == "auto":
        return "xformers" if _xops is not None and device.type == "cuda" else "sdpa"
    return choice


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Multi-head attention. q: (B, H, N, D); k, v: (B, H, M, D); key_mask: (B, M) bool, True = attend.

    Returns (B, H, N, D).
    """
    if backend_for(q.device) == "xformers":
        bias = None
        if key_mask is not None:
            # xformers wants a materialised (B, H, N, M) bias whose last dim is 8-aligned in memory.
            m = k.shape[2]
            pad = (-m) % 8
            bias = torch.zeros(q.shape[0], q.shape[1], q.shape[2], m + pad, dtype=q.dtype, device=q.device)
            bias = bias[..., :m]
            bias.masked_fill_(~key_mask[:, None, None, :], float("-inf"))
        out = _xops.memory_efficient_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_bias=bias
        )
        return out.transpose(1, 2)
    mask = None if key_mask is None else key_mask[:, None, None, :]
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
