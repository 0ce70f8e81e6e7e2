"""Text encoders: the default model's own small one, behind an interface a larger one can fill.

The default encoder needs no vocabulary file and no download: words are hashed into
`vocab_size` buckets (a stable CRC32, identical on every machine) and a small transformer
turns them into token embeddings that the DiT cross-attends to.
"""

from __future__ import annotations

import re
import zlib

import torch
import torch.nn as nn
import torch.nn.functional as F

from .attention import attention
from .config import TextConfig

_WORD = re.compile(r"[a-z0-9]+|[^\sa-z0-9]")
PAD, BOS = 0, 1  # reserved ids; hashed words land in [2, vocab_size)


def tokenize(texts: list[str], vocab_size: int, max_tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Lower-cased words and punctuation -> (ids (B, L), mask (B, L) bool). Always at least the BOS token,
    so an empty prompt (the usual negative prompt) is a valid, attendable sequence."""
    rows = []
    for text in texts:
        words = _WORD.findall(text.lower())[: max_tokens - 1]
        rows.append([BOS] + [2 + zlib.crc32(w.encode()) % (vocab_size - 2) for w in words])
    length = max(len(r) for r in rows)
    ids = torch.full((len(rows), length), PAD, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
    return ids, ids != PAD


class TextBlock(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(approximate="tanh"), nn.Linear(4 * dim, dim))

    def forward(self, x, mask):
        b, n, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        x = x + self.proj(attention(q, k, v, mask).transpose(1, 2).reshape(b, n, d))
        return x + self.mlp(self.norm2(x))


class HashTextEncoder(nn.Module):
    """Small bidirectional transformer over hashed words; trained jointly with the DiT."""

    def __init__(self, config: TextConfig):
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.dim)
        self.pos = nn.Parameter(torch.zeros(config.max_tokens, config.dim))
        nn.init.normal_(self.pos, std=0.02)
        self.blocks = nn.ModuleList(TextBlock(config.dim, config.heads) for _ in range(config.depth))
        self.norm = nn.LayerNorm(config.dim)

    @property
    def device(self) -> torch.device:
        return self.embed.weight.device

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = self.embed(ids) + self.pos[: ids.shape[1]]  # (B, L, D)
        for block in self.blocks:
            x = block(x, mask)
        return self.norm(x)

    def encode(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Texts -> (embeddings (B, L, D), mask (B, L) bool) on the encoder's device."""
        ids, mask = tokenize(texts, self.config.vocab_size, self.config.max_tokens)
        ids, mask = ids.to(self.device), mask.to(self.device)
        return self.forward(ids, mask), mask


def pad_text(embeddings: list[torch.Tensor], masks: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack (1, L_i, D) embeddings of different lengths into one (B, L, D) batch with its mask."""
    length = max(e.shape[1] for e in embeddings)
    emb = torch.cat([F.pad(e, (0, 0, 0, length - e.shape[1])) for e in embeddings])
    mask = torch.cat([F.pad(m, (0, length - m.shape[1]), value=False) for m in masks])
    return emb, mask
