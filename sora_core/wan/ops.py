"""The layers the Wan DiT and umt5 are built from, as one injectable namespace (`ops`).

Every layer keeps its weight in the dtype it was stored in (fp8 included) and casts it, times an
optional per-tensor `weight_scale` (scaled fp8 files; `files.load_into` sets it), to the input's
dtype and device at each call. So fp8 stays fp8 in memory, norms run in fp32 over half-precision
weights, and a host may keep some layers on another device than the one they compute on: ComfyUI
passes its own `comfy.ops` classes, which behave the same and let its ModelPatcher load a model
partially (nodes/host.py). `TORCH` is the default, plain torch. Parameters outside these layers
(Wan's modulation tables) are cast to the input's device where they are used.
"""

from __future__ import annotations

from types import SimpleNamespace

import torch
import torch.nn as nn
import torch.nn.functional as F


def cast(layer: nn.Module, dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The layer's (weight * weight_scale, bias) in `dtype` on `device`."""
    w = layer.weight.to(device=device, dtype=dtype)
    scale = getattr(layer, "weight_scale", None)
    if scale is not None:
        w = w * scale.to(device=device, dtype=dtype)
    bias = getattr(layer, "bias", None)
    return w, None if bias is None else bias.to(device=device, dtype=dtype)


class Linear(nn.Linear):
    def __init__(self, in_features: int, out_features: int, bias: bool = True):
        super().__init__(in_features, out_features, bias)
        self.register_buffer("weight_scale", None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, *cast(self, x.dtype, x.device))


class Conv3d(nn.Conv3d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, *cast(self, x.dtype, x.device))


class LayerNorm(nn.LayerNorm):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, self.normalized_shape, *cast(self, x.dtype, x.device), self.eps)


class RMSNorm(nn.RMSNorm):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x, self.normalized_shape, cast(self, x.dtype, x.device)[0], self.eps)


class Embedding(nn.Embedding):
    """Rows are gathered in the stored dtype, then cast to `out_dtype` (default: the stored one) and scaled."""

    def __init__(self, num_embeddings: int, embedding_dim: int):
        super().__init__(num_embeddings, embedding_dim)
        self.register_buffer("weight_scale", None)

    def forward(self, ids: torch.Tensor, out_dtype: torch.dtype | None = None) -> torch.Tensor:
        rows = F.embedding(ids, self.weight.to(ids.device))
        dtype = out_dtype or rows.dtype
        scale = self.weight_scale
        return rows.to(dtype) if scale is None else rows.to(dtype) * scale.to(ids.device, dtype)


TORCH = SimpleNamespace(Linear=Linear, Conv3d=Conv3d, LayerNorm=LayerNorm, RMSNorm=RMSNorm, Embedding=Embedding)
