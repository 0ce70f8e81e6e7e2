"""One attention dispatch for the whole package.

torch's scaled_dot_product_attention everywhere; xformers' memory-efficient kernel on CUDA
when it is importable (it is faster on some older GPUs and ComfyUI installs often have it).
Set SORA_ATTENTION=sdpa or =xformers to force a backend.

On the CPU in bfloat16 / float16, small problems (the score matrix at most `MATH_SCORES_LIMIT`
elements, 64 MB in float32) take plain matmul + softmax instead: for the default model's few
hundred tokens that is twice as fast as torch's flash kernel, forward and backward (in float32 the
flash kernel is the faster one). Everything else uses SDPA, whose flash kernel never materialises
the N x M scores.
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
MATH_SCORES_LIMIT = 1 << 24
# A CPU runs one attention call without returning to Python, so Ctrl-C waits for it: at the default
# token limit (65536) a call takes about two CPU minutes. Longer calls go in blocks of queries of at
# most this many scores (about a CPU second each); every query row is computed alone, so the result
# is bit-identical.
CPU_BLOCK_SCORES = 1 << 28


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
    if q.device.type == "meta" and key_mask is None:  # memory tracing: SDPA's meta path is the unfused math
        return torch.ops.aten._scaled_dot_product_flash_attention(q, k, v)[0]  # what a fused kernel allocates
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
    if (q.device.type == "cpu" and q.dtype in (torch.bfloat16, torch.float16)
            and q.shape[0] * q.shape[1] * q.shape[2] * k.shape[2] <= MATH_SCORES_LIMIT):
        return _math_attention(q, k, v, key_mask)
    mask = None if key_mask is None else key_mask[:, None, None, :]
    b, h, n, m = q.shape[0], q.shape[1], q.shape[2], k.shape[2]
    if q.device.type == "cpu" and b * h * n * m > CPU_BLOCK_SCORES:
        step = max(1, CPU_BLOCK_SCORES // (b * h * m))
        return torch.cat([F.scaled_dot_product_attention(q[:, :, i : i + step], k, v, attn_mask=mask)
                          for i in range(0, n, step)], dim=2)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


def _math_attention(q, k, v, key_mask):
    scores = torch.matmul(q, k.transpose(-1, -2) * q.shape[-1] ** -0.5)  # (B, H, N, M)
    if key_mask is not None:
        scores = scores.masked_fill(~key_mask[:, None, None, :], float("-inf"))
    return torch.matmul(scores.float().softmax(-1).to(v.dtype), v)
