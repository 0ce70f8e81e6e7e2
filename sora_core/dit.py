"""Diffusion transformer over spacetime latent patches (Peebles & Xie's DiT, made for video).

Per block: self-attention over all spacetime tokens with 3D RoPE and qk-norm, cross-attention
to the caption's token embeddings, and an MLP, modulated by the timestep through adaLN.
Timesteps are per latent frame, so given frames sit at t=0 (clean) while the rest is noisy:
that one mechanism gives image-to-video, extension, looping, connecting and SDEdit.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from .attention import attention
from .config import DiTConfig
from .patch import grid_positions, interleaved_tables, patchify, rope_tables, rotate_pairs, unpatchify


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal features of t in [0, 1] (scaled by 1000 like DDPM's integer steps), (..., dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = (t.float() * 1000.0)[..., None] * freqs
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def position_features(grid: tuple[int, int, int], device=None, bands: int = 8) -> torch.Tensor:
    """(N, 6 * bands) sinusoidal features of each token's latent frame index and its height / width
    position as a fraction of the frame (token centres), in `patchify` order."""
    t, h, w = grid
    pos = grid_positions(grid, device).double()  # (N, 3)
    frac = (pos[:, 1:] + 0.5) / torch.tensor([h, w], device=device, dtype=torch.float64)  # (N, 2) in (0, 1)
    k = torch.arange(bands, device=device, dtype=torch.float64)
    time_freqs = 1.0 / (64.0 ** (k / bands))  # periods from 2*pi to ~400 latent frames
    space_freqs = math.pi * 2.0 ** (k / 2)  # periods from 2 frames down to ~1/6 of a frame
    angles = torch.cat([pos[:, :1] * time_freqs, frac[:, :1] * space_freqs, frac[:, 1:] * space_freqs], dim=1)
    return torch.cat([angles.sin(), angles.cos()], dim=1).float()


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return F.rms_norm(x.float(), x.shape[-1:], self.weight.float(), self.eps).type_as(x)


def modulate(x, shift, scale):
    return torch.addcmul(shift, x, 1 + scale)


class SelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int, qk_norm: bool):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.q_norm = RMSNorm(dim // heads) if qk_norm else nn.Identity()
        self.k_norm = RMSNorm(dim // heads) if qk_norm else nn.Identity()
        self.proj = nn.Linear(dim, dim)

    def forward(self, x, cos, sin):
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)  # (B, H, N, Dh)
        q, k = rotate_pairs(self.q_norm(q), cos, sin), rotate_pairs(self.k_norm(k), cos, sin)
        return self.proj(attention(q, k, v).transpose(1, 2).reshape(b, n, d))  # (B, N, D)


class CrossAttention(nn.Module):
    def __init__(self, dim: int, heads: int, qk_norm: bool):
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.q_norm = RMSNorm(dim // heads) if qk_norm else nn.Identity()
        self.k_norm = RMSNorm(dim // heads) if qk_norm else nn.Identity()
        self.proj = nn.Linear(dim, dim)

    def forward(self, x, ctx, ctx_mask):
        b, n, d = x.shape
        h, dh = self.heads, d // self.heads
        q = self.q_norm(self.q(x).view(b, n, h, dh).transpose(1, 2))  # (B, H, N, Dh)
        k, v = self.kv(ctx).view(b, ctx.shape[1], 2, h, dh).permute(2, 0, 3, 1, 4)  # (B, H, L, Dh)
        out = attention(q, self.k_norm(k), v, ctx_mask)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class DiTBlock(nn.Module):
    """adaLN-single modulation (PixArt-alpha): one shared timestep MLP, plus a learned per-block table."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, qk_norm: bool):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = SelfAttention(dim, heads, qk_norm)
        self.norm_cross = nn.LayerNorm(dim, eps=1e-6)
        self.cross = CrossAttention(dim, heads, qk_norm)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, dim))
        self.table = nn.Parameter(torch.zeros(6, dim))

    def forward(self, x, mod, cos, sin, ctx, ctx_mask):
        # x: (B, T, S, D) tokens grouped by latent frame; mod: (B, T, 6, D) from that frame's timestep.
        b, t, s, d = x.shape
        shift1, scale1, gate1, shift2, scale2, gate2 = (mod + self.table).unsqueeze(2).unbind(3)  # each (B, T, 1, D)
        h = modulate(self.norm1(x), shift1, scale1).reshape(b, t * s, d)
        x = x + gate1 * self.attn(h, cos, sin).view(b, t, s, d)
        x = x + self.cross(self.norm_cross(x).reshape(b, t * s, d), ctx, ctx_mask).view(b, t, s, d)
        return x + gate2 * self.mlp(modulate(self.norm2(x), shift2, scale2))


class DiT(nn.Module):
    """Predicts the flow-matching velocity for (B, C, T, H, W) latents at per-frame times t (B, T)."""

    def __init__(self, config: DiTConfig):
        super().__init__()
        config.validate()
        self.config = config
        d = config.dim
        pt, ph, pw = config.patch
        self.patch_dim = config.latent_channels * pt * ph * pw
        self.x_embed = nn.Linear(self.patch_dim, d)
        self.pos_embed = nn.Linear(6 * 8, d) if config.abs_pos else None
        self.ground = nn.Linear(config.text_dim, d) if config.grounding else None
        self.silhouette = nn.Linear(config.silhouette ** 2, d) if config.silhouette else None
        self.t_embed = nn.Sequential(nn.Linear(256, d), nn.SiLU(), nn.Linear(d, d))
        self.t_mod = nn.Sequential(nn.SiLU(), nn.Linear(d, 6 * d))
        self.text_proj = nn.Sequential(nn.Linear(config.text_dim, d), nn.GELU(approximate="tanh"), nn.Linear(d, d))
        self.blocks = nn.ModuleList(DiTBlock(d, config.heads, config.mlp_ratio, config.qk_norm) for _ in range(config.depth))
        self.norm_out = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.out_mod = nn.Linear(d, 2 * d)
        self.out = nn.Linear(d, self.patch_dim)
        self.gradient_checkpointing = False
        self._init_weights()

    def _init_weights(self):
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.normal_(self.t_embed[0].weight, std=0.02)
        nn.init.normal_(self.t_embed[2].weight, std=0.02)
        # adaLN-Zero: zero modulation makes every block start as the identity (gates = 0) ...
        nn.init.zeros_(self.t_mod[1].weight)
        nn.init.zeros_(self.out_mod.weight)
        # ... the cross-attention residual has no gate, so zero its output projection instead ...
        for block in self.blocks:
            nn.init.zeros_(block.cross.proj.weight)
        # ... a layout adds nothing until training teaches the model to read it ...
        for layer in (self.ground, self.silhouette):
            if layer is not None:
                nn.init.zeros_(layer.weight)
        # ... and the network starts by predicting zero velocity.
        nn.init.zeros_(self.out.weight)

    def forward(self, x: torch.Tensor, t: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor,
                grounding: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, C, T, H, W); t (B, T) in [0, 1]; text (B, L, text_dim); text_mask (B, L) bool -> velocity like x.
        grounding (B, N, text_dim [+ silhouette^2]): a planned layout per token (`sora_core.grounding`), with the
        outlines for a model that reads them; ignored by a model trained without one."""
        b, _, frames, height, width = x.shape
        pt, ph, pw = self.config.patch
        grid = (frames // pt, height // ph, width // pw)
        tokens = self.x_embed(patchify(x, self.config.patch))  # (B, N, D)
        if self.pos_embed is not None:
            tokens = tokens + self.pos_embed(position_features(grid, x.device).to(tokens.dtype))  # (B, N, D)
        if grounding is not None and self.ground is not None:
            text_dim = self.config.text_dim
            features = text_dim + self.config.silhouette ** 2
            if grounding.shape[-1] != features:
                raise ValueError(f"grounding has {grounding.shape[-1]} features per token; this DiT reads {features} "
                                 f"(text_dim {text_dim} + silhouette {self.config.silhouette}^2)")
            g = grounding.to(tokens.dtype)
            tokens = tokens + self.ground(g[..., :text_dim])  # (B, N, D)
            if self.silhouette is not None:
                tokens = tokens + self.silhouette(g[..., text_dim:])  # the outlines inside each token
        d = tokens.shape[-1]
        if t.shape != (b, frames):
            raise ValueError(f"timesteps must be per latent frame, shape {(b, frames)}; got {tuple(t.shape)}")
        t_patch = t.view(b, grid[0], pt).amax(-1)  # a token spanning several frames takes the noisiest
        temb = self.t_embed(timestep_embedding(t_patch, 256).to(tokens.dtype))  # (B, Tp, D)
        mod = self.t_mod(temb).view(b, grid[0], 6, d)  # (B, Tp, 6, D)
        cos, sin = interleaved_tables(*rope_tables(grid_positions(grid, x.device), d // self.config.heads,
                                                   self.config.rope_theta))
        ctx = self.text_proj(text.to(tokens.dtype))  # (B, L, D)
        h = tokens.view(b, grid[0], grid[1] * grid[2], d)  # (B, Tp, S, D)
        for block in self.blocks:
            if self.gradient_checkpointing and self.training:
                h = checkpoint(block, h, mod, cos, sin, ctx, text_mask, use_reentrant=False)
            else:
                h = block(h, mod, cos, sin, ctx, text_mask)
        shift, scale = self.out_mod(F.silu(temb)).unsqueeze(2).chunk(2, dim=-1)  # (B, Tp, 1, D) each
        h = self.out(modulate(self.norm_out(h), shift, scale))  # (B, Tp, S, patch_dim)
        return unpatchify(h.reshape(b, -1, self.patch_dim), grid, self.config.patch)


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def forward_flops(config: DiTConfig, tokens: int, text_tokens: int) -> float:
    """FLOPs of one forward pass: 2 per multiply-add of every matmul, attention included.

    Training costs ~3x this (the usual 6*P per token for the weights, plus attention).
    """
    d, L = config.dim, text_tokens
    hidden = int(d * config.mlp_ratio)
    per_token_block = 2 * (3 * d * d + d * d) + 2 * (2 * d * d) + 2 * (2 * d * hidden)  # qkv+proj, q+proj, mlp
    attn = 2 * 2 * tokens * d + 2 * 2 * L * d  # QK^T and AV, self and cross
    kv_text = 2 * L * 2 * d * d  # projecting the caption to keys and values, per block
    per_block = tokens * (per_token_block + attn) + kv_text
    embed = 2 * tokens * (2 * d * (config.latent_channels * math.prod(config.patch)))
    return float(config.depth * per_block + embed)
