"""The Wan 2.1 / 2.2 diffusion transformer, with the original Wan state_dict layout.

The same system as our own DiT: spacetime patches (1x2x2) with 3D RoPE, per block self-attention
(RMSNorm on q and k across all heads), cross-attention to the 512 umt5 text states and a GELU MLP,
modulated by one shared timestep MLP plus a learned (6, dim) table per block (adaLN-single).

Numerics follow Wan's reference (wan/modules/model.py, run under bf16 autocast with fp32 islands):
the residual stream, norms, modulation, time embedding and head in fp32; every other matmul in the
compute dtype (the weights' dtype; bf16 for fp8 weights, which are upcast per layer); RoPE in fp32.

Flow convention: Wan trains on x_s = (1 - s) x0 + s noise, predicts v = noise - x0 and is given the
timestep 1000 s. That is flow.py's convention with t = s, and the sinusoid here takes t * 1000 like
our DiT's, so `forward` takes t in [0, 1] and the engine's samplers drive it unchanged (`engine`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange

from ..attention import attention
from ..budget import Dims
from ..dit import timestep_embedding
from ..patch import apply_rope, check_latent_grid, grid_positions, rope_tables
from . import files
from .files import FP8
from .ops import TORCH

if TYPE_CHECKING:
    from .vae import WanVAEConfig

# Wan's default negative prompt (wan/configs/shared_config.py, the same in 2.1 and 2.2).
NEGATIVE_PROMPT = ("色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰，最差质量，低质量，"
                   "JPEG压缩残留，丑陋的，残缺的，多余的手指，画得不好的手部，画得不好的脸部，畸形的，毁容的，"
                   "形态畸形的肢体，手指融合，静止不动的画面，杂乱的背景，三条腿，背景人很多，倒着走")


@dataclass(frozen=True)
class WanDiTConfig:
    """Shape of a Wan DiT, as `files` reads it from the tensors (heads are not stored: dim / 128)."""
    dim: int
    layers: int
    heads: int
    ffn_dim: int
    in_channels: int = 16
    out_channels: int = 16
    patch: tuple[int, int, int] = (1, 2, 2)
    text_dim: int = 4096
    freq_dim: int = 256
    text_len: int = 512  # umt5 states are zero-padded to this length, and the padding is attended to
    eps: float = 1e-6
    rope_theta: float = 10000.0

    @classmethod
    def released(cls, variant: str) -> "WanDiTConfig":
        """The config of a released variant (`files.WAN_DIT_VARIANTS`), e.g. for a meta-device model."""
        for (dim, layers, ffn, cin, cout, _), (name, _, _) in files.WAN_DIT_VARIANTS.items():
            if name == variant:
                return cls(dim=dim, layers=layers, heads=dim // files.WAN_HEAD_DIM, ffn_dim=ffn, in_channels=cin,
                           out_channels=cout)
        raise ValueError(f"variant={variant!r} is not a released Wan DiT; known: "
                         f"{[v[0] for v in files.WAN_DIT_VARIANTS.values()]}")


@dataclass(frozen=True)
class Recipe:
    """Sampling defaults of one Wan release, from its own repo (wan/configs, generate.py, README)."""
    width: int
    height: int
    frames: int  # 1 + 4k
    fps: int
    pixel_multiple: int  # VAE stride x patch: 8 x 2 (Wan 2.1 VAE), 16 x 2 (Wan 2.2 VAE)
    shift: float
    cfg: float
    steps: int
    per_frame_t: bool  # trained with a timestep per latent frame (given frames at t = 0)
    vae: str
    cfg_low: float | None = None  # two-expert releases: cfg of the low-noise expert ...
    boundary: float | None = None  # ... which takes over below this t
    negative_prompt: str = NEGATIVE_PROMPT

    def as_dict(self) -> dict:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


RECIPES = {
    # Wan2.1 README for 1.3B: "--sample_shift 8 --sample_guide_scale 6" (shift 8-12 recommended).
    "wan2.1-t2v-1.3B": Recipe(832, 480, 81, 16, 16, shift=8.0, cfg=6.0, steps=50, per_frame_t=False, vae="wan2.1-vae"),
    # Wan2.1 generate.py defaults for t2v-14B.
    "wan-t2v-14B": Recipe(1280, 720, 81, 16, 16, shift=5.0, cfg=5.0, steps=50, per_frame_t=False, vae="wan2.1-vae"),
    # Wan2.2 wan/configs/wan_t2v_A14B.py: a high-noise and a low-noise 14B expert.
    "wan2.2-t2v-A14B": Recipe(1280, 720, 81, 16, 16, shift=12.0, cfg=4.0, steps=40, per_frame_t=False,
                              vae="wan2.1-vae", cfg_low=3.0, boundary=0.875),
    # Wan2.2 wan/configs/wan_ti2v_5B.py.
    "wan2.2-ti2v-5B": Recipe(1280, 704, 121, 24, 32, shift=5.0, cfg=5.0, steps=50, per_frame_t=True, vae="wan2.2-vae"),
}


FAMILY_RECIPE = {16: "wan2.1-t2v-1.3B", 48: "wan2.2-ti2v-5B"}  # latent channels -> the family's small release


def recipe_for(variant: str, latent_channels: int | None = None) -> Recipe | None:
    """The release's recipe; for a size that is no release (`custom`), the recipe of the family whose
    latent space it works in (16 channels: Wan 2.1 / 2.2-A14B, one t per sample; 48: Wan 2.2 TI2V)."""
    recipe = RECIPES.get(variant)
    if recipe is None and latent_channels in FAMILY_RECIPE:
        recipe = RECIPES[FAMILY_RECIPE[latent_channels]]
    return recipe


@dataclass(frozen=True)
class WanTextConfig:
    """The text side, as a SoraConfig's `text` is read: the width of the encoder states the DiT takes."""
    dim: int


@dataclass(frozen=True)
class WanConfig:
    """A Wan model as a whole, as `Pipeline`, `conditioning.empty_window` and `budget` read it (like a
    SoraConfig): the DiT's and the VAE's shapes and the DiT's variant."""
    dit: WanDiTConfig
    vae: "WanVAEConfig"
    variant: str = "custom"

    @property
    def name(self) -> str:
        return self.variant

    @property
    def recipe(self) -> Recipe | None:
        return recipe_for(self.variant, self.dit.in_channels)

    @property
    def text(self) -> WanTextConfig:
        return WanTextConfig(self.dit.text_dim)

    @property
    def pixel_multiple(self) -> int:
        """Width and height must be multiples of this (VAE stride x patch size)."""
        s, (_, ph, pw) = self.vae.spatial_factor, self.dit.patch
        return math.lcm(s * ph, s * pw)

    def budget_dims(self) -> Dims:
        d, v, r = self.dit, self.vae, self.recipe
        native = 0
        if r is not None:
            s, (pt, ph, pw) = v.spatial_factor, d.patch
            native = (1 + (r.frames - 1) // v.temporal_factor) // pt * (r.height // s // ph) * (r.width // s // pw)
        return Dims(v.spatial_factor, v.temporal_factor, v.z_dim, d.patch, d.dim, d.heads, d.ffn_dim / d.dim,
                    d.text_len, tuple(v.dim * m for m in v.dim_mult), tuple(v.dec_dim * m for m in v.dim_mult),
                    pixel_patch=v.patch, native_tokens=native)


def _norm(x: torch.Tensor, eps: float) -> torch.Tensor:
    return F.layer_norm(x.float(), x.shape[-1:], eps=eps)


def _modulate(x, shift, scale):
    return torch.addcmul(shift, x, 1 + scale)  # one fused op: these fp32 tensors are the size of the residual


def _table(param: nn.Parameter, like: torch.Tensor) -> torch.Tensor:
    """A modulation table in fp32 where `like` is (a host may leave it on the offload device)."""
    return param.to(device=like.device, dtype=torch.float32)


class Attention(nn.Module):
    """Wan's attention: q, k, v, o projections with RMSNorm on q and k (fp32, over the whole width: all
    heads together, as Wan normalises them); RoPE for self-attention."""

    def __init__(self, dim: int, heads: int, eps: float, ops=TORCH):
        super().__init__()
        self.heads = heads
        self.q, self.k, self.v, self.o = (ops.Linear(dim, dim) for _ in range(4))
        self.norm_q, self.norm_k = ops.RMSNorm(dim, eps=eps), ops.RMSNorm(dim, eps=eps)

    def forward(self, x, context=None, rope=None):
        # x: (B, N, D) in the compute dtype; context: (B, L, D) for cross-attention, else None.
        src = x if context is None else context
        split = "b n (h d) -> b h n d"
        q = rearrange(self.norm_q(self.q(x).float()), split, h=self.heads)  # (B, H, N, Dh) fp32
        k = rearrange(self.norm_k(self.k(src).float()), split, h=self.heads)
        v = rearrange(self.v(src), split, h=self.heads)
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        out = attention(q.to(x.dtype), k.to(x.dtype), v)  # (B, H, N, Dh)
        return self.o(rearrange(out, "b h n d -> b n (h d)"))


class Block(nn.Module):
    """Self-attention, cross-attention and MLP, modulated by the per-frame timestep through `modulation`."""

    def __init__(self, c: WanDiTConfig, ops=TORCH):
        super().__init__()
        self.eps = c.eps
        self.self_attn = Attention(c.dim, c.heads, c.eps, ops)
        self.norm3 = ops.LayerNorm(c.dim, eps=c.eps)  # fp32, affine: the cross-attention's input norm
        self.cross_attn = Attention(c.dim, c.heads, c.eps, ops)
        self.ffn = nn.Sequential(ops.Linear(c.dim, c.ffn_dim), nn.GELU(approximate="tanh"), ops.Linear(c.ffn_dim, c.dim))
        self.modulation = nn.Parameter(torch.empty(1, 6, c.dim))

    def forward(self, x, e, rope, context, dtype):
        # x: (B, T, S, D) fp32 residual, tokens grouped by latent frame; e: (B, T, 6, D) fp32 from each
        # frame's timestep; context: (B, 512, D) in the compute dtype.
        b, t, s, d = x.shape
        shift1, scale1, gate1, shift2, scale2, gate2 = (_table(self.modulation, e) + e).unsqueeze(2).unbind(3)  # (B, T, 1, D)
        h = _modulate(_norm(x, self.eps), shift1, scale1).to(dtype).view(b, t * s, d)
        x = torch.addcmul(x, self.self_attn(h, rope=rope).view(b, t, s, d), gate1)  # fp32 += gate * y
        h = self.norm3(x.float()).to(dtype).view(b, t * s, d)
        x = x + self.cross_attn(h, context).view(b, t, s, d)
        h = _modulate(_norm(x, self.eps), shift2, scale2).to(dtype)
        return torch.addcmul(x, self.ffn(h), gate2)


class Head(nn.Module):
    """Final modulated norm and projection to patch velocities, in fp32 (as Wan runs it)."""

    def __init__(self, c: WanDiTConfig, ops=TORCH):
        super().__init__()
        self.eps = c.eps
        self.head = ops.Linear(c.dim, c.out_channels * math.prod(c.patch))
        self.modulation = nn.Parameter(torch.empty(1, 2, c.dim))

    def forward(self, x, e):
        # x: (B, T, S, D) fp32; e: (B, T, D) fp32 time embedding (before the block projection).
        shift, scale = (_table(self.modulation, e) + e.unsqueeze(2)).unsqueeze(2).unbind(3)  # (B, T, 1, D)
        return self.head(_modulate(_norm(x, self.eps), shift, scale))  # (B, T, S, out * pt * ph * pw)


class WanDiT(nn.Module):
    """Wan's DiT: the flow velocity of (B, C, T, H, W) latents at times t in [0, 1] given umt5 states.
    `ops`: the layer classes (`ops.TORCH`, or a host's that moves weights layer by layer)."""

    compute_device: torch.device | None = None  # set by a host that keeps some weights elsewhere (lowvram)

    def __init__(self, config: WanDiTConfig, variant: str = "custom", compute_dtype: torch.dtype | None = None,
                 ops=TORCH):
        super().__init__()  # weights come from a file (`load_wan_dit`): built here they are uninitialised
        c = config
        if c.dim % c.heads or (c.dim // c.heads) % 2:
            raise ValueError(f"dim={c.dim} with heads={c.heads} is not allowed: dim must split into heads of even width")
        self.config, self.variant, self.compute_dtype = c, variant, compute_dtype
        self.patch_embedding = ops.Conv3d(c.in_channels, c.dim, c.patch, stride=c.patch)
        self.text_embedding = nn.Sequential(ops.Linear(c.text_dim, c.dim), nn.GELU(approximate="tanh"), ops.Linear(c.dim, c.dim))
        self.time_embedding = nn.Sequential(ops.Linear(c.freq_dim, c.dim), nn.SiLU(), ops.Linear(c.dim, c.dim))
        self.time_projection = nn.Sequential(nn.SiLU(), ops.Linear(c.dim, 6 * c.dim))
        self.blocks = nn.ModuleList(Block(c, ops) for _ in range(c.layers))
        self.head = Head(c, ops)

    @property
    def device(self) -> torch.device:
        """Where it computes (the engine puts its inputs there)."""
        return self.compute_device or self.head.head.weight.device

    @property
    def recipe(self) -> Recipe | None:
        return recipe_for(self.variant, self.config.in_channels)

    @property
    def per_frame_t(self) -> bool:
        """Whether the model was trained with a timestep per latent frame (Wan 2.2 TI2V-5B and its family);
        the engine gives the others one t per sample and keeps given frames consistent with it."""
        return self.recipe is None or self.recipe.per_frame_t

    input_dtype = torch.float32  # the engine feeds x, t and the umt5 states in fp32; `forward` casts per layer

    def activation_dtype(self) -> torch.dtype:
        """The compute dtype: as set, else the blocks' weight dtype (bf16 for fp8 weights)."""
        if self.compute_dtype is not None:
            return self.compute_dtype
        stored = self.blocks[0].ffn[0].weight.dtype if len(self.blocks) else torch.float32
        return torch.bfloat16 if stored in FP8 else stored

    def embed_text(self, context: torch.Tensor, context_mask: torch.Tensor | None = None) -> torch.Tensor:
        """umt5 states (B, L <= 512, text_dim) -> (B, 512, D): masked-out and missing positions are zeros,
        as Wan pads its prompts, and they are embedded and attended to like in training."""
        c = self.config
        if context.ndim != 3 or context.shape[-1] != c.text_dim or context.shape[1] > c.text_len:
            raise ValueError(f"context has shape {tuple(context.shape)}; this Wan DiT takes (batch, tokens <= "
                             f"{c.text_len}, {c.text_dim}) text-encoder states")
        if context_mask is not None:
            context = context * context_mask[..., None].to(context.dtype)
        context = F.pad(context, (0, 0, 0, c.text_len - context.shape[1]))
        return self.text_embedding(context.to(self.activation_dtype()))

    def forward(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor,
                context_mask: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, C, T, H, W); t (B,) one per sample or (B, T) one per latent frame, in [0, 1] (Wan's
        timestep / 1000); context (B, L, text_dim) umt5 states, context_mask (B, L) bool, False = padding
        -> velocity (B, out_channels, T, H, W) in x's dtype."""
        c = self.config
        b, channels, frames, height, width = x.shape
        if channels != c.in_channels:
            raise ValueError(f"x has {channels} channels; this Wan DiT ({self.variant}) takes {c.in_channels}")
        pt, ph, pw = c.patch
        grid = (frames // pt, height // ph, width // pw)
        if t.ndim == 1:
            t = t[:, None].expand(b, frames)
        if t.shape != (b, frames):
            raise ValueError(f"t has shape {tuple(t.shape)}; it must be ({b},) or ({b}, {frames}) (per latent frame)")
        t = t.reshape(b, grid[0], pt).amax(-1)  # (B, Tp): a token spanning several frames takes the noisiest
        dtype = self.activation_dtype()

        # Wan's reference takes the sinusoid's angles in float64; diffusers and ComfyUI in float32, as
        # here: the features differ by up to 8e-5, the output by ~4e-6 (relative, on the tiny test model).
        e = self.time_embedding(timestep_embedding(t, c.freq_dim))  # (B, Tp, D) fp32
        e0 = self.time_projection(e).unflatten(-1, (6, c.dim))  # (B, Tp, 6, D) fp32
        context = self.embed_text(context, context_mask)  # (B, 512, D)
        check_latent_grid(frames, height, width, c.patch)
        h = rearrange(self.patch_embedding(x.float()), "b d t h w -> b (t h w) d")  # (B, N, D) fp32
        rope = rope_tables(grid_positions(grid, x.device), c.dim // c.heads, c.rope_theta)
        h = h.view(b, grid[0], grid[1] * grid[2], c.dim)  # (B, Tp, S, D)
        for block in self.blocks:
            h = block(h, e0, rope, context, dtype)
        out = self.head(h, e)  # (B, Tp, S, out * pt * ph * pw); Wan puts the channel last
        out = rearrange(out, "b t (h w) (pt ph pw c) -> b c (t pt) (h ph) (w pw)", h=grid[1], pt=pt, ph=ph, pw=pw)
        return out.to(x.dtype)


def load_wan_dit(path, *, device="cpu", dtype: torch.dtype | None = None,
                 compute_dtype: torch.dtype | None = None, ops=TORCH) -> WanDiT:
    """A Wan DiT from a single-file safetensors in the original layout (any prefix, fp32/fp16/bf16/fp8),
    built on the meta device from `ops`' layers and filled from the mapped file in its stored dtype (or `dtype`)."""
    header, ident = files.open_component(path, "diffusion_model")
    if ident.family != "wan":
        raise ValueError(f"{str(path)!r} is {ident.label()}, not a Wan diffusion model")
    with torch.device("meta"):
        model = WanDiT(WanDiTConfig(**ident.config), ident.variant, compute_dtype, ops)
    return files.load_into(model, header, ident, device=device, dtype=dtype)



def forward_memory(config: WanDiTConfig, latent_frames: int, latent_height: int, latent_width: int, *,
                   batch: int = 1, dtype: torch.dtype = torch.bfloat16) -> dict[str, int]:
    """Bytes of one forward pass on latents of this size, by part: `weights` (all in `dtype`),
    `activations` (the peak of live tensors, traced by running the real model on the meta device: the
    fp32 residual, one block's temporaries, the text rows; attention as a fused kernel allocates) and
    `attention_scores` (one unfused attention's N x N scores in `dtype`, which a fused kernel never makes).
    The blocks run one after the other and are alike, so two of them are traced."""
    from .vae import LiveBytes

    with torch.device("meta"):
        weights = sum(p.numel() for p in WanDiT(config).parameters()) * dtype.itemsize
        model = WanDiT(dataclasses.replace(config, layers=min(config.layers, 2)), compute_dtype=dtype).to(dtype)
        x = torch.zeros(batch, config.in_channels, latent_frames, latent_height, latent_width)
        t, context = torch.zeros(batch), torch.zeros(batch, config.text_len, config.text_dim)
    with torch.no_grad(), LiveBytes() as live:
        model(x, t, context)
    pt, ph, pw = config.patch
    tokens = latent_frames // pt * (latent_height // ph) * (latent_width // pw)
    return {"weights": weights, "activations": live.peak, "tokens": tokens,
            "attention_scores": batch * config.heads * tokens**2 * dtype.itemsize}
