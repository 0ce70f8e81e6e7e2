"""The Wan 2.1 and Wan 2.2 video VAEs, read from the single files artists have
(`wan_2.1_vae.safetensors`, `wan2.2_vae.safetensors`).

Module names follow Wan's reference code, so `state_dict()` keys are exactly the files' keys
(`encoder.conv1`, `encoder.downsamples.N...`, `encoder.middle...`, `encoder.head...`, `conv1`,
`conv2`, `decoder...`). Build from `config_from_shapes(shapes)` on the meta device and load with
`load_state_dict(..., assign=True)`: the stored dtype is kept and nothing is materialised twice.

Both VAEs only run as streams. The encoder takes frame 0 alone, then 4 frames at a time; the
decoder takes one latent frame at a time (or `chunk` of them). Every causal temporal conv keeps
the last frames it has seen in a cache (Wan's "feature cache"), and the temporal down/upsamplers
treat frame 0 of a stream on its own. So, unlike sora_core's own VAE, a chunk's latent depends on
every frame before it: `encode(video, history=frames_before)` gives the latents that `video` has
inside the whole clip, exactly -- what conditioning on given frames needs. Memory does not grow
with the frame count (only the output does), and a tiled decode streams each spatial tile.

Wan 2.1: 16 latent channels, 4x8x8. Wan 2.2: 48 channels, 4x16x16 -- a 2x2 pixel patchify (12
channels in and out) and residual blocks whose shortcuts average pixels into channels on the way
down and duplicate channels into pixels on the way up.

Numerics: convs run in the weights' dtype; RMS norms in fp32 (as Wan's autocast does); latents
and decoded video come back in fp32.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from functools import lru_cache
from typing import Iterator, Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange, reduce, repeat
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from ..patch import check_frame_count, check_pixel_size
from ..vae import Progress, tile_windows
from . import files

# Fixed per-channel statistics of the raw latents (Wan's own `scale`): normalised = (mu - mean) / std.
WAN21_LATENT_MEAN = (
    -0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
    0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921,
)
WAN21_LATENT_STD = (
    2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
    3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160,
)
WAN22_LATENT_MEAN = (
    -0.2289, -0.0052, -0.1323, -0.2339, -0.2799, 0.0174, 0.1838, 0.1557,
    -0.1382, 0.0542, 0.2813, 0.0891, 0.1570, -0.0098, 0.0375, -0.1825,
    -0.2246, -0.1207, -0.0698, 0.5109, 0.2665, -0.2108, -0.2158, 0.2502,
    -0.2055, -0.0322, 0.1109, 0.1567, -0.0729, 0.0899, -0.2799, -0.1230,
    -0.0313, -0.1649, 0.0117, 0.0723, -0.2839, -0.2083, -0.0520, 0.3748,
    0.0152, 0.1957, 0.1433, -0.2944, 0.3573, -0.0548, -0.1681, -0.0667,
)
WAN22_LATENT_STD = (
    0.4765, 1.0364, 0.4514, 1.1677, 0.5313, 0.4990, 0.4818, 0.5013,
    0.8158, 1.0344, 0.5894, 1.0901, 0.6885, 0.6165, 0.8454, 0.4978,
    0.5759, 0.3523, 0.7135, 0.6804, 0.5833, 1.4146, 0.8986, 0.5659,
    0.7069, 0.5338, 0.4889, 0.4917, 0.4069, 0.4999, 0.6866, 0.4093,
    0.5709, 0.6065, 0.6415, 0.4944, 0.5726, 1.2042, 0.5458, 1.6887,
    0.3971, 1.0600, 0.3943, 0.5537, 0.5444, 0.4089, 0.7468, 0.7744,
)
_LATENT_STATS = {"2.1": (WAN21_LATENT_MEAN, WAN21_LATENT_STD), "2.2": (WAN22_LATENT_MEAN, WAN22_LATENT_STD)}


@dataclass(frozen=True)
class WanVAEConfig:
    """A Wan VAE's architecture; `version` picks the block design, the patchify and the latent statistics."""

    version: str = "2.1"  # "2.1" or "2.2"
    dim: int = 96  # encoder base channels (2.2: 160)
    dec_dim: int = 96  # decoder base channels (2.2: 256)
    z_dim: int = 16  # latent channels (2.2: 48)
    dim_mult: tuple[int, ...] = (1, 2, 4, 4)  # per level; each level after the first halves H and W
    num_res_blocks: int = 2  # per encoder level (the decoder has one more)
    temporal_down: tuple[bool, ...] = (False, True, True)  # per downsampling step, encoder order

    @property
    def patch(self) -> int:
        return 2 if self.version == "2.2" else 1

    @property
    def spatial_factor(self) -> int:
        return self.patch * 2 ** (len(self.dim_mult) - 1)

    @property
    def temporal_factor(self) -> int:
        return 2 ** sum(self.temporal_down)

    @property
    def latent_channels(self) -> int:
        return self.z_dim

    @property
    def latent_mean(self) -> tuple[float, ...]:
        return _LATENT_STATS[self.version][0]

    @property
    def latent_std(self) -> tuple[float, ...]:
        return _LATENT_STATS[self.version][1]

    def describe(self) -> str:
        return (f"Wan {self.version} VAE (dim={self.dim}, dec_dim={self.dec_dim}, z_dim={self.z_dim}, "
                f"dim_mult={list(self.dim_mult)}, num_res_blocks={self.num_res_blocks})")

    def validate(self) -> None:
        if self.version not in _LATENT_STATS:
            raise ValueError(f"version={self.version!r} is not a Wan VAE version; allowed: {sorted(_LATENT_STATS)}")
        want = len(self.latent_mean)
        if self.z_dim != want:
            raise ValueError(f"z_dim={self.z_dim} is not allowed for a Wan {self.version} VAE: it has {want} latent channels")
        if len(self.temporal_down) != len(self.dim_mult) - 1:
            raise ValueError(f"temporal_down={self.temporal_down} needs one entry per downsampling step "
                             f"({len(self.dim_mult) - 1} for dim_mult={self.dim_mult})")


WAN21_VAE = WanVAEConfig()
WAN22_VAE = WanVAEConfig("2.2", dim=160, dec_dim=256, z_dim=48)

# A stream's state: each causal layer's last input frames (or a marker that frame 0 has passed).
Cache = dict


def _triple(v) -> tuple[int, int, int]:
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v, v)


class CausalConv3d(nn.Conv3d):
    """Conv3d padded in time on the left only; in a stream the left pad is the previous call's last frames, kept in `cache`."""

    def __init__(self, cin: int, cout: int, kernel, stride=1, padding=0):
        kernel, stride, padding = _triple(kernel), _triple(stride), _triple(padding)
        super().__init__(cin, cout, kernel, stride, padding=(0, padding[1], padding[2]))
        self.time_pad = 2 * padding[0]

    def forward(self, x: torch.Tensor, cache: Cache | None = None) -> torch.Tensor:
        if self.time_pad:
            past = None if cache is None else cache.get(self)
            if past is None:  # start of a stream: zeros, as in a whole-clip causal conv
                past = x.new_zeros((*x.shape[:2], self.time_pad, *x.shape[3:]))
            x = torch.cat([past, x], dim=2)
            if cache is not None:
                cache[self] = x[:, :, -self.time_pad :].clone()
        return super().forward(x)


class RMSNorm(nn.Module):
    """Wan's RMS norm over channels (L2-normalise, times sqrt(C) and a gain), computed in fp32."""

    def __init__(self, dim: int, images: bool = False):
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(dim, *((1, 1) if images else (1, 1, 1))))
        self.scale = dim**0.5

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x.float()
        norm = torch.linalg.vector_norm(y, dim=1, keepdim=True).clamp_min_(1e-12)
        y = y / norm if y is x else y.div_(norm)  # never write into the caller's tensor
        return y.mul_(self.gamma.float() * self.scale).to(x.dtype)


class ResidualBlock(nn.Module):
    """(norm, SiLU, causal 3x3x3 conv) twice plus a shortcut; `residual.N` indices as in Wan (5 = its dropout)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.residual = nn.ModuleList([
            RMSNorm(cin), nn.SiLU(), CausalConv3d(cin, cout, 3, padding=1),
            RMSNorm(cout), nn.SiLU(), nn.Identity(), CausalConv3d(cout, cout, 3, padding=1),
        ])
        self.shortcut = CausalConv3d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, cache: Cache) -> torch.Tensor:
        r = self.residual
        h = r[2](F.silu(r[0](x), inplace=True), cache)  # (B, cout, T, H, W)
        h = r[6](F.silu(r[3](h), inplace=True), cache)
        return h.add_(self.shortcut(x))


class AttentionBlock(nn.Module):
    """Single-head self-attention over each frame's pixels (the middle of Wan's encoder and decoder)."""

    def __init__(self, dim: int):
        super().__init__()
        self.norm = RMSNorm(dim, images=True)
        self.to_qkv = nn.Conv2d(dim, dim * 3, 1)
        self.proj = nn.Conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor, cache: Cache | None = None) -> torch.Tensor:
        b, h = x.shape[0], x.shape[3]
        y = rearrange(x, "b c t h w -> (b t) c h w")
        q, k, v = rearrange(self.to_qkv(self.norm(y)), "n (three c) h w -> three n 1 (h w) c", three=3)
        y = F.scaled_dot_product_attention(q, k, v)  # (B*T, 1, H*W, C)
        y = self.proj(rearrange(y, "n 1 (h w) c -> n c h w", h=h))
        return x + rearrange(y, "(b t) c h w -> b c t h w", b=b)


class Upsample2x(nn.Module):
    """Nearest-neighbour 2x in height and width (exact in any dtype)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return repeat(x, "n c h w -> n c (h a) (w b)", a=2, b=2)


class Resample(nn.Module):
    """2x spatial down/upsampling per frame; the '3d' modes also halve / double time with a causal conv."""

    def __init__(self, dim: int, mode: str, out_dim: int | None = None):
        super().__init__()
        self.mode = mode
        if mode.startswith("up"):
            self.resample = nn.Sequential(Upsample2x(), nn.Conv2d(dim, out_dim, 3, padding=1))
            if mode == "upsample3d":  # 2 frames' worth of channels per input frame
                self.time_conv = CausalConv3d(dim, dim * 2, (3, 1, 1), padding=(1, 0, 0))
        else:
            self.resample = nn.Sequential(nn.ZeroPad2d((0, 1, 0, 1)), nn.Conv2d(dim, dim, 3, stride=2))
            if mode == "downsample3d":
                self.time_conv = CausalConv3d(dim, dim, (3, 1, 1), stride=(2, 1, 1))

    def forward(self, x: torch.Tensor, cache: Cache) -> torch.Tensor:
        if self.mode == "upsample3d":
            if self in cache:  # (B, C, T, H, W) -> (B, C, 2T, H, W)
                x = rearrange(self.time_conv(x, cache), "b (two c) t h w -> b c (t two) h w", two=2)
            else:  # frame 0 of a stream stays one frame; the time conv's own stream starts at frame 1
                cache[self] = True
        b = x.shape[0]
        x = rearrange(self.resample(rearrange(x, "b c t h w -> (b t) c h w")), "(b t) c h w -> b c t h w", b=b)
        if self.mode == "downsample3d":
            past = cache.get(self)
            cache[self] = x[:, :, -1:].clone()
            if past is not None:  # frame 0 passes alone; later frames pair up, after the last one seen
                x = self.time_conv(torch.cat([past, x], dim=2))  # (B, C, 1+T, H, W) -> (B, C, T/2, H, W)
        return x


class AvgDown(nn.Module):
    """Wan 2.2's down shortcut: fold (ft, fs, fs) pixel blocks into channels, then average channel groups to `cout`."""

    def __init__(self, cin: int, cout: int, ft: int, fs: int):
        super().__init__()
        self.ft, self.fs, self.group = ft, fs, cin * ft * fs * fs // cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pad = -x.shape[2] % self.ft  # frame 0 of a stream is paired with a zero frame
        x = F.pad(x, (0, 0, 0, 0, pad, 0)) if pad else x
        x = rearrange(x, "b c (t ft) (h fh) (w fw) -> b (c ft fh fw) t h w", ft=self.ft, fh=self.fs, fw=self.fs)
        return reduce(x, "b (o g) t h w -> b o t h w", "mean", g=self.group)


class DupUp(nn.Module):
    """Wan 2.2's up shortcut: repeat channels, then unfold them into (ft, fs, fs) pixel blocks; frame 0 stays one frame."""

    def __init__(self, cin: int, cout: int, ft: int, fs: int):
        super().__init__()
        self.ft, self.fs, self.repeats = ft, fs, cout * ft * fs * fs // cin

    def forward(self, x: torch.Tensor, first: bool) -> torch.Tensor:
        x = x.repeat_interleave(self.repeats, dim=1)
        x = rearrange(x, "b (o ft fh fw) t h w -> b o (t ft) (h fh) (w fw)", ft=self.ft, fh=self.fs, fw=self.fs)
        return x[:, :, self.ft - 1 :] if first else x


class DownBlock(nn.Module):
    """Wan 2.2 encoder level: residual blocks then a downsampler, around an averaging shortcut."""

    def __init__(self, cin: int, cout: int, blocks: int, t_down: bool, s_down: bool):
        super().__init__()
        self.avg_shortcut = AvgDown(cin, cout, 2 if t_down else 1, 2 if s_down else 1)
        layers: list[nn.Module] = [ResidualBlock(cin if j == 0 else cout, cout) for j in range(blocks)]
        if s_down:
            layers.append(Resample(cout, "downsample3d" if t_down else "downsample2d"))
        self.downsamples = nn.ModuleList(layers)

    def forward(self, x: torch.Tensor, cache: Cache) -> torch.Tensor:
        short = self.avg_shortcut(x)
        for layer in self.downsamples:
            x = layer(x, cache)
        return x.add_(short)


class UpBlock(nn.Module):
    """Wan 2.2 decoder level: residual blocks then an upsampler, around a duplicating shortcut."""

    def __init__(self, cin: int, cout: int, blocks: int, t_up: bool, s_up: bool):
        super().__init__()
        self.avg_shortcut = DupUp(cin, cout, 2 if t_up else 1, 2) if s_up else None
        layers: list[nn.Module] = [ResidualBlock(cin if j == 0 else cout, cout) for j in range(blocks)]
        if s_up:
            layers.append(Resample(cout, "upsample3d" if t_up else "upsample2d", out_dim=cout))
        self.upsamples = nn.ModuleList(layers)

    def forward(self, x: torch.Tensor, cache: Cache) -> torch.Tensor:
        first = self not in cache
        cache[self] = True
        h = x
        for layer in self.upsamples:
            h = layer(h, cache)
        return h if self.avg_shortcut is None else h.add_(self.avg_shortcut(x, first))


class Encoder(nn.Module):
    """One stream step: (B, 3*p*p, T, H/p, W/p) frames -> (B, 2*z_dim, T', H/s, W/s) posterior moments."""

    def __init__(self, c: WanVAEConfig):
        super().__init__()
        dims = [c.dim * m for m in (1, *c.dim_mult)]
        self.conv1 = CausalConv3d(3 * c.patch**2, dims[0], 3, padding=1)
        blocks: list[nn.Module] = []
        for i, (cin, cout) in enumerate(zip(dims[:-1], dims[1:])):
            down = i < len(c.dim_mult) - 1
            t_down = down and c.temporal_down[i]
            if c.version == "2.2":
                blocks.append(DownBlock(cin, cout, c.num_res_blocks, t_down, down))
                continue
            blocks += [ResidualBlock(cin if j == 0 else cout, cout) for j in range(c.num_res_blocks)]
            if down:
                blocks.append(Resample(cout, "downsample3d" if t_down else "downsample2d"))
        self.downsamples = nn.ModuleList(blocks)
        top = dims[-1]
        self.middle = nn.ModuleList([ResidualBlock(top, top), AttentionBlock(top), ResidualBlock(top, top)])
        self.head = nn.ModuleList([RMSNorm(top), nn.SiLU(), CausalConv3d(top, 2 * c.z_dim, 3, padding=1)])

    def forward(self, x: torch.Tensor, cache: Cache) -> torch.Tensor:
        x = self.conv1(x, cache)  # (B, dim, T, H/p, W/p)
        for block in (*self.downsamples, *self.middle):
            x = block(x, cache)  # ... (B, dim*mult[-1], 1 + (T-1)/4 or T/4, H/s, W/s)
        return self.head[2](F.silu(self.head[0](x), inplace=True), cache)  # (B, 2*z_dim, T', H/s, W/s)


class Decoder(nn.Module):
    """One stream step: (B, z_dim, T, h, w) latents -> (B, 3*p*p, frames, H/p, W/p)."""

    def __init__(self, c: WanVAEConfig):
        super().__init__()
        dims = [c.dec_dim * m for m in (c.dim_mult[-1], *reversed(c.dim_mult))]
        t_up = tuple(reversed(c.temporal_down))
        self.conv1 = CausalConv3d(c.z_dim, dims[0], 3, padding=1)
        self.middle = nn.ModuleList([ResidualBlock(dims[0], dims[0]), AttentionBlock(dims[0]), ResidualBlock(dims[0], dims[0])])
        blocks: list[nn.Module] = []
        for i, (cin, cout) in enumerate(zip(dims[:-1], dims[1:])):
            up = i < len(c.dim_mult) - 1
            tu = up and t_up[i]
            if c.version == "2.2":
                blocks.append(UpBlock(cin, cout, c.num_res_blocks + 1, tu, up))
                continue
            if i:
                cin //= 2  # Wan 2.1's upsampling convs halve the channels
            blocks += [ResidualBlock(cin if j == 0 else cout, cout) for j in range(c.num_res_blocks + 1)]
            if up:
                blocks.append(Resample(cout, "upsample3d" if tu else "upsample2d", out_dim=cout // 2))
        self.upsamples = nn.ModuleList(blocks)
        self.head = nn.ModuleList([RMSNorm(dims[-1]), nn.SiLU(), CausalConv3d(dims[-1], 3 * c.patch**2, 3, padding=1)])

    def forward(self, x: torch.Tensor, cache: Cache) -> torch.Tensor:
        x = self.conv1(x, cache)  # (B, dec_dim*mult[-1], T, h, w)
        for block in (*self.middle, *self.upsamples):
            x = block(x, cache)  # ... (B, dec_dim, 4T (1 for frame 0 of a stream), H/p, W/p)
        return self.head[2](F.silu(self.head[0](x), inplace=True), cache)  # (B, 3*p*p, frames, H/p, W/p)


class WanVAE(nn.Module):
    """Wan 2.1 / 2.2 VAE: video (B, 3, 1+4k, H, W) in [-1, 1] <-> normalised latents (B, C, 1+k, H/s, W/s)."""

    def __init__(self, config: WanVAEConfig):
        super().__init__()
        config.validate()
        self.config = config
        z = config.z_dim
        self.encoder = Encoder(config)
        self.conv1 = CausalConv3d(2 * z, 2 * z, 1)  # posterior moments (mean, log-variance)
        self.conv2 = CausalConv3d(z, z, 1)
        self.decoder = Decoder(config)

    history_dependent = True  # a chunk's latent depends on the frames before it (see the module docstring)

    @property
    def temporal_factor(self) -> int:
        return self.config.temporal_factor

    @property
    def spatial_factor(self) -> int:
        return self.config.spatial_factor

    @property
    def latent_channels(self) -> int:
        return self.config.z_dim

    @property
    def dtype(self) -> torch.dtype:
        return self.conv2.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.conv2.weight.device

    # -- normalisation (fp32, as Wan: (mu - mean) * (1 / std)) ---------------------------
    def _stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        shape = (1, self.config.z_dim, 1, 1, 1)
        mean = torch.tensor(self.config.latent_mean, device=self.device).view(shape)
        inv_std = 1.0 / torch.tensor(self.config.latent_std, device=self.device).view(shape)
        return mean, inv_std

    def normalize(self, mu: torch.Tensor) -> torch.Tensor:
        mean, inv_std = self._stats()
        return (mu.float() - mean) * inv_std

    def denormalize(self, z: torch.Tensor) -> torch.Tensor:
        mean, inv_std = self._stats()
        return z.float() / inv_std + mean

    # -- input checks ---------------------------------------------------------------------
    def _check_video(self, video: torch.Tensor, name: str) -> None:
        if video.ndim != 5 or video.shape[1] != 3:
            raise ValueError(f"{name} must be (batch, 3, frames, height, width); got {tuple(video.shape)}")
        check_pixel_size(int(video.shape[-1]), int(video.shape[-2]), self.spatial_factor)

    @staticmethod
    def _check_tiling(chunk: int, tile: int | None, overlap: int | None) -> int:
        """Check chunk / tile / overlap and return the overlap (default: a quarter of the tile)."""
        if chunk < 1:
            raise ValueError(f"chunk={chunk} is not allowed: it must be at least 1 latent frame")
        if not tile:  # None or 0: no tiling, as in our VAE (`Pipeline`'s decode_tile=0)
            return 0
        if tile < 1:
            raise ValueError(f"tile={tile} is not allowed: it must be at least 1 latent cell (0 or None: no tiling)")
        overlap = tile // 4 if overlap is None else overlap
        if not 0 <= overlap < tile:
            raise ValueError(f"overlap={overlap} is not allowed with tile={tile}: it must be in [0, {tile - 1}] latent cells")
        return overlap

    # -- tiles: one window (or all of it), each window a stream, blended as it comes ---------
    def _blend(self, out: torch.Tensor, grid: tuple[int, int], tile, overlap, scale, window, progress, steps) -> torch.Tensor:
        """Run `window(y, x, size)` -- a generator of (first output frame, part) -- over the tile windows of
        `grid` (all of it in one window when `tile` is None) and blend the parts into `out` (fp32)."""
        h, w = grid
        size = tile or max(h, w)
        windows = list(tile_windows(h, w, size, overlap, scale, out.device))
        weight = torch.zeros(out.shape[-2:], device=out.device)
        total, done = len(windows) * steps, 0
        for y, x, blend in windows:
            oy, ox = int(y * scale), int(x * scale)
            ph, pw = blend.shape
            for t0, part in window(y, x, size):
                out[:, :, t0 : t0 + part.shape[2], oy : oy + ph, ox : ox + pw].addcmul_(part.float(), blend)
                done += 1
                if progress:
                    progress(done, total)
            weight[oy : oy + ph, ox : ox + pw] += blend
        return out.div_(weight)

    # -- encoding -------------------------------------------------------------------------
    @torch.no_grad()
    def encode(
        self,
        video: torch.Tensor,
        *,
        history: torch.Tensor | None = None,
        chunk: int = 1,
        tile: int | None = None,
        overlap: int | None = None,
        progress: Progress | None = None,
    ) -> torch.Tensor:
        """(B, 3, 1+4k, H, W) in [-1, 1] -> normalised posterior means (B, C, 1+k, H/s, W/s), fp32.

        `history`: the (B, 3, 1+4j, H, W) frames that precede `video` in its clip, from the clip's
        first frame; `video` then has 4k frames and the result is their k latents exactly as inside
        the whole clip (the history is re-encoded through the same causal stream, its latents
        dropped). `chunk` latent frames (4*chunk frames) go through the encoder per call;
        `tile` (latent cells, blended over `overlap`, default tile // 4) also splits space, each tile its own stream.
        """
        self._check_video(video, "video")
        overlap = self._check_tiling(chunk, tile, overlap)
        tf = self.temporal_factor
        if history is None:
            check_frame_count(int(video.shape[2]), tf)
            skip, segments = 0, [video]
        else:
            self._check_video(history, "history")
            check_frame_count(int(history.shape[2]), tf)
            if history.shape[0] != video.shape[0] or history.shape[-2:] != video.shape[-2:]:
                raise ValueError(f"history {tuple(history.shape)} must match video {tuple(video.shape)} in batch, height and width")
            if video.shape[2] % tf or not video.shape[2]:
                raise ValueError(f"video after a history has {video.shape[2]} frames; it must be a positive multiple of {tf}")
            skip, segments = 1 + (history.shape[2] - 1) // tf, [history, video]
        frames = sum(int(s.shape[2]) for s in segments)
        # frame 0 alone, then runs of tf*chunk frames that never straddle the history/video seam
        steps = [(0, 0, 1)]
        for i, seg in enumerate(segments):
            steps += [(i, a, min(a + tf * chunk, seg.shape[2])) for a in range(int(i == 0), seg.shape[2], tf * chunk)]
        s, p = self.spatial_factor, self.config.patch
        h, w = video.shape[-2] // s, video.shape[-1] // s

        def window(y, x, size):
            cache: Cache = {}
            t0 = 0
            for i, a, b in steps:
                clip = segments[i][:, :, a:b, y * s : (y + size) * s, x * s : (x + size) * s]
                clip = rearrange(clip.to(self.device, self.dtype), "b c f (h q) (w r) -> b (c r q) f h w", q=p, r=p)
                mu = self.conv1(self.encoder(clip, cache))[:, : self.config.z_dim]  # (B, C, latent frames, size, size)
                yield t0, mu
                t0 += mu.shape[2]

        out = torch.zeros(video.shape[0], self.config.z_dim, 1 + (frames - 1) // tf, h, w, device=self.device)
        mu = self._blend(out, (h, w), tile, overlap, 1, window, progress, len(steps))
        return self.normalize(mu[:, :, skip:])

    def encode_chunks(self, video: torch.Tensor, *, history: torch.Tensor | None = None, **kwargs) -> torch.Tensor:
        """(B, 3, 4k, H, W) frames from the middle of a clip -> their k latents. With `history` (the 1+4j
        frames before them) exactly their in-clip latents; without, an estimate that sees only their own
        first frame before them, as if the clip opened on it (what comes before is not known yet)."""
        if video.ndim != 5 or not video.shape[2] or video.shape[2] % self.temporal_factor:
            raise ValueError(f"encode_chunks needs (batch, 3, frames, height, width) with a positive multiple of "
                             f"{self.temporal_factor} frames; got {tuple(video.shape)}")
        return self.encode(video, history=video[:, :, :1] if history is None else history, **kwargs)

    # -- decoding -------------------------------------------------------------------------
    @torch.no_grad()
    def decode(
        self,
        z: torch.Tensor,
        *,
        chunk: int = 1,
        tile: int | None = None,
        overlap: int | None = None,
        progress: Progress | None = None,
    ) -> torch.Tensor:
        """Normalised latents (B, C, T, h, w) -> video (B, 3, 1+4(T-1), H, W) in [-1, 1], fp32.

        Latent frame 0 is decoded alone, then `chunk` latent frames per call, through the causal
        cache; `tile` (latent cells, blended over `overlap`, default tile // 4) also splits space, each tile its own
        stream, so memory depends on the tile and chunk, not on the frame count (beyond the output).
        """
        if z.ndim != 5 or z.shape[1] != self.config.z_dim:
            raise ValueError(f"latents must be (batch, {self.config.z_dim}, frames, height, width); got {tuple(z.shape)}")
        overlap = self._check_tiling(chunk, tile, overlap)
        tf, s, p = self.temporal_factor, self.spatial_factor, self.config.patch
        b, _, t, h, w = z.shape
        steps = [(0, 1)] + [(a, min(a + chunk, t)) for a in range(1, t, chunk)]

        def window(y, x, size):
            cache: Cache = {}
            for a, e in steps:
                part = self.denormalize(z[:, :, a:e, y : y + size, x : x + size].to(self.device)).to(self.dtype)
                frames = self.decoder(self.conv2(part), cache)
                yield (0 if a == 0 else 1 + (a - 1) * tf), rearrange(frames, "b (c r q) f h w -> b c f (h q) (w r)", q=p, r=p)

        out = torch.zeros(b, 3, 1 + (t - 1) * tf, h * s, w * s, device=self.device)
        return self._blend(out, (h, w), tile, overlap, s, window, progress, len(steps)).clamp_(-1.0, 1.0)


# -- loading: config from the file's shapes ---------------------------------------------------
@lru_cache(maxsize=16)
def _shapes(config: WanVAEConfig) -> tuple[tuple[str, tuple[int, ...]], ...]:
    with torch.device("meta"):
        model = WanVAE(config)
    return tuple((k, tuple(v.shape)) for k, v in model.state_dict().items())


def expected_shapes(config: WanVAEConfig) -> dict[str, tuple[int, ...]]:
    """Every state-dict key of a Wan VAE with this config and its shape (built on the meta device)."""
    return dict(_shapes(config))


def check_shapes(shapes: Mapping[str, tuple[int, ...]], expected: Mapping[str, tuple[int, ...]], what: str) -> None:
    """Raise a ValueError naming each missing, unexpected or wrongly shaped key (with both shapes)."""
    problems = [f"{k} has shape {tuple(shapes[k])} in the file, {what} expects {expected[k]}"
                for k in expected if k in shapes and tuple(shapes[k]) != expected[k]]
    problems += [f"{k} (shape {expected[k]}) is missing" for k in expected if k not in shapes]
    problems += [f"{k} is not a key of {what}" for k in shapes if k not in expected]
    if problems:
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise ValueError(f"this file does not match {what}: " + "; ".join(problems[:5]) + more)


def _levels_21(shapes: Mapping[str, tuple[int, ...]]) -> tuple[list[int], int, list[bool]]:
    """Wan 2.1's flat `encoder.downsamples.N`: residual blocks, a Resample after each level but the last."""
    widths, t_down, per_level, n = [], [], [], 0
    blocks = sorted({int(k.split(".")[2]) for k in shapes if k.startswith("encoder.downsamples.")})
    for i in blocks:
        key = f"encoder.downsamples.{i}"
        if f"{key}.residual.2.weight" in shapes:
            n += 1
            width = shapes[f"{key}.residual.2.weight"][0]
        elif f"{key}.resample.1.weight" in shapes:
            widths.append(width)
            per_level.append(n)
            t_down.append(f"{key}.time_conv.weight" in shapes)
            n = 0
    if n:
        widths.append(width)
        per_level.append(n)
    return widths, (per_level[0] if per_level else 0), t_down


def _levels_22(shapes: Mapping[str, tuple[int, ...]]) -> tuple[list[int], int, list[bool]]:
    """Wan 2.2's `encoder.downsamples.I.downsamples.J`: J residual blocks then (but for the last level) a Resample."""
    levels = sorted({int(k.split(".")[2]) for k in shapes if k.startswith("encoder.downsamples.")})
    widths = [shapes.get(f"encoder.downsamples.{i}.downsamples.0.residual.2.weight", (0,))[0] for i in levels]
    blocks = sum(f"encoder.downsamples.0.downsamples.{j}.residual.0.gamma" in shapes for j in range(64))
    t_down = [f"encoder.downsamples.{i}.downsamples.{blocks}.time_conv.weight" in shapes for i in levels[:-1]]
    return widths, blocks, t_down


def config_from_shapes(shapes: Mapping[str, tuple[int, ...]]) -> WanVAEConfig:
    """Detect a Wan 2.1 / 2.2 VAE from its state-dict key shapes (original layout, no prefix) and check
    every key and shape against the detected architecture; a clear ValueError otherwise."""
    if "encoder.downsamples.0.downsamples.0.residual.0.gamma" in shapes:
        version, (widths, blocks, t_down) = "2.2", _levels_22(shapes)
    elif "encoder.downsamples.0.residual.0.gamma" in shapes:
        version, (widths, blocks, t_down) = "2.1", _levels_21(shapes)
    else:
        raise ValueError("not a Wan VAE in the original layout: no key encoder.downsamples.0.residual.0.gamma "
                         "(Wan 2.1) or encoder.downsamples.0.downsamples.0.residual.0.gamma (Wan 2.2)")
    for key in ("encoder.conv1.weight", "conv2.weight", "decoder.conv1.weight"):
        if key not in shapes:
            raise ValueError(f"not a complete Wan {version} VAE: key {key} is missing")
    dim, z_dim = shapes["encoder.conv1.weight"][0], shapes["conv2.weight"][0]
    if not widths or not blocks or any(wd <= 0 or wd % dim for wd in widths):
        raise ValueError(f"not a Wan {version} VAE: encoder level widths {widths} are not multiples of dim={dim}")
    mult = tuple(wd // dim for wd in widths)
    config = WanVAEConfig(version, dim, shapes["decoder.conv1.weight"][0] // mult[-1], z_dim, mult, blocks, tuple(t_down))
    config.validate()
    check_shapes(shapes, expected_shapes(config), config.describe())
    return config


def load_wan_vae(path, *, device="cpu", dtype: torch.dtype | None = None) -> WanVAE:
    """A Wan 2.1 / 2.2 VAE from a single-file safetensors in the original layout (any prefix), its
    architecture read and checked from the key shapes, built on the meta device and filled from the
    mapped file in its stored dtype (or `dtype`)."""
    header, ident = files.open_component(path, "vae")
    try:
        config = config_from_shapes(files.component_shapes(header, ident))
    except ValueError as err:
        raise ValueError(f"{str(path)!r}: {err}") from None
    with torch.device("meta"):
        vae = WanVAE(config)
    return files.load_into(vae, header, ident, device=device, dtype=dtype)


# -- memory ---------------------------------------------------------------------------------
class LiveBytes(TorchDispatchMode):
    """Counts the bytes of live tensor storages created under it, and their peak (works on the meta device).
    Views of memory from before it (weights, a no-op `.to`) are not new memory and are not counted."""

    def __init__(self):
        super().__init__()
        self.refs: dict[int, list[int]] = {}
        self.now = self.peak = 0

    def _release(self, key: int) -> None:
        entry = self.refs[key]
        entry[1] -= 1
        if not entry[1]:
            self.now -= entry[0]
            del self.refs[key]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        before = {t.untyped_storage()._cdata for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)}
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor):
                key = t.untyped_storage()._cdata
                if key in before and key not in self.refs:
                    continue
                entry = self.refs.setdefault(key, [t.untyped_storage().nbytes(), 0])
                if not entry[1]:
                    self.now += entry[0]
                entry[1] += 1
                weakref.finalize(t, self._release, key)
        self.peak = max(self.peak, self.now)
        return out


def decode_memory(
    config: WanVAEConfig,
    width: int,
    height: int,
    frames: int,
    *,
    tile: int | None = None,
    overlap: int | None = None,
    chunk: int = 1,
    dtype: torch.dtype = torch.bfloat16,
    batch: int = 1,
) -> dict[str, int]:
    """Peak bytes of `WanVAE.decode` at this size, by part: `weights`, `working` (one tile's stream:
    caches and activations, traced by running the real decoder on the meta device for the first
    few latent frames, after which it repeats), `output` (the fp32 video and blend weights, which
    grow with `frames`) and their `total`. Attention is traced unfused (its score matrix counted),
    so on devices with fused attention this slightly overestimates."""
    check_frame_count(frames, config.temporal_factor)
    s = config.spatial_factor
    check_pixel_size(width, height, s)
    WanVAE._check_tiling(chunk, tile, overlap)  # the traced window is the tile, whatever the overlap
    with torch.device("meta"):
        vae = WanVAE(config).to(dtype)
    h, w = height // s, width // s
    th, tw = (min(tile, h), min(tile, w)) if tile else (h, w)  # every window has the tile's size
    latents = 1 + (frames - 1) // config.temporal_factor
    traced = min(latents, 1 + 2 * chunk)  # frame 0, then two steps: every cache is full by then

    def out_bytes(n: int, hh: int, ww: int) -> int:  # fp32 video and its blend-weight map
        return (batch * 3 * (1 + (n - 1) * config.temporal_factor) + 1) * hh * ww * 4

    with LiveBytes() as live:
        vae.decode(torch.zeros(batch, config.z_dim, traced, th, tw, device="meta"), chunk=chunk)
    working = live.peak - out_bytes(traced, th * s, tw * s)
    output = out_bytes(latents, height, width)
    weights = sum(p.numel() * p.element_size() for p in vae.parameters())
    return {"weights": weights, "working": working, "output": output, "total": weights + working + output}
