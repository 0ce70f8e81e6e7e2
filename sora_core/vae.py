"""The video compression network: a 3D VAE that compresses time and space.

Encoder: frame 0 alone, then independent chunks of `temporal_factor` frames (frame 0 is
repeated into a still chunk, so an image is a 1-frame video and a still image and a still
chunk share one latent). Each latent frame therefore depends only on its own pixels:
encoding the first 1+4k frames gives a prefix of the full encoding, chunked encoding is
exact, memory grows linearly with frames, and a clip's latents do not change with where it
sits in a longer video -- which is what makes extend / loop / connect conditioning exact.

Decoder: causal in time (left-padded 3D convs over the latent sequence), so it can stream
chunk after chunk with a small cache and still see the past for smooth motion.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange

from .config import VAEConfig
from .patch import check_frame_count, check_pixel_size

Progress = Callable[[int, int], None]


class ChannelRMSNorm(nn.Module):
    """RMS norm over channels at each (t, h, w): no statistics across time, so it stays causal."""

    def __init__(self, channels: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))

    def forward(self, x):
        return F.normalize(x, dim=1) * (x.shape[1] ** 0.5) * self.weight[None, :, None, None, None]


class ChunkConv3d(nn.Conv3d):
    """Encoder conv: 'same' padding by edge replication, inside one chunk."""

    def __init__(self, cin, cout, kernel=(3, 3, 3), stride=(1, 1, 1)):
        super().__init__(cin, cout, kernel, stride, padding=tuple(k // 2 for k in kernel), padding_mode="replicate")


class CausalConv3d(nn.Module):
    """Decoder conv: pads time on the left only; in streaming mode the pad is the previous chunk's tail."""

    def __init__(self, cin, cout, kernel=(3, 3, 3)):
        super().__init__()
        self.time_pad = kernel[0] - 1
        self.conv = nn.Conv3d(cin, cout, kernel, padding=(0, kernel[1] // 2, kernel[2] // 2))
        self.streaming = False
        self.cache: torch.Tensor | None = None

    def forward(self, x):
        if self.time_pad:
            if self.streaming and self.cache is not None:
                left = self.cache
            else:
                left = x[:, :, :1].expand(-1, -1, self.time_pad, -1, -1)
            x = torch.cat([left, x], dim=2)
            if self.streaming:
                self.cache = x[:, :, -self.time_pad:].detach()
        return self.conv(x)


class ResBlock(nn.Module):
    def __init__(self, cin, cout, conv, kernel):
        super().__init__()
        self.norm1 = ChannelRMSNorm(cin)
        self.conv1 = conv(cin, cout, kernel)
        self.norm2 = ChannelRMSNorm(cout)
        self.conv2 = conv(cout, cout, kernel)
        self.skip = nn.Conv3d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x):
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return self.skip(x) + h


def _temporal_downs(config: VAEConfig) -> int:
    return config.temporal_factor.bit_length() - 1


class Encoder(nn.Module):
    """(N, 3, tf, H, W) chunks -> (N, 2*latent, 1, H/s, W/s) posterior moments."""

    def __init__(self, c: VAEConfig):
        super().__init__()
        chans = [c.base_channels * m for m in c.channel_mult]
        t_len, t_downs = c.temporal_factor, _temporal_downs(c)
        self.conv_in = ChunkConv3d(c.in_channels, chans[0], (1, 3, 3))
        blocks = []
        cin = chans[0]
        for level, ch in enumerate(chans):
            kt = 3 if t_len > 1 and level >= c.spatial_only_levels else 1
            for _ in range(c.num_res_blocks):
                blocks.append(ResBlock(cin, ch, ChunkConv3d, (kt, 3, 3)))
                cin = ch
            if level < len(chans) - 1:
                st = 2 if level < t_downs else 1
                # Strided conv whose time kernel equals its stride: merges frame pairs without padding.
                blocks.append(nn.Conv3d(ch, ch, (st, 3, 3), stride=(st, 2, 2), padding=(0, 1, 1)))
                t_len //= st
        blocks.append(ResBlock(cin, cin, ChunkConv3d, (1, 3, 3)))
        self.blocks = nn.Sequential(*blocks)
        self.norm_out = ChannelRMSNorm(cin)
        self.conv_out = nn.Conv3d(cin, 2 * c.latent_channels, (1, 3, 3), padding=(0, 1, 1))
        # Start with a narrow posterior (std ~0.05): with the usual std 1 the decoder first sees
        # mostly noise and reconstruction stalls until the KL/reconstruction balance shifts.
        with torch.no_grad():
            self.conv_out.bias[c.latent_channels :].fill_(-6.0)

    def forward(self, x):
        h = self.blocks(self.conv_in(x))
        return self.conv_out(F.silu(self.norm_out(h)))


class TimeUpsample(nn.Module):
    """Doubles the frame count: a causal conv makes 2x channels, then channels become frames."""

    def __init__(self, ch):
        super().__init__()
        self.conv = CausalConv3d(ch, 2 * ch, (3, 3, 3))

    def forward(self, x):
        return rearrange(self.conv(x), "b (r c) t h w -> b c (t r) h w", r=2)


class SpaceUpsample(nn.Module):
    def __init__(self, ch):
        super().__init__()
        self.conv = nn.Conv3d(ch, ch, (1, 3, 3), padding=(0, 1, 1))

    def forward(self, x):
        b = x.shape[0]
        x = F.interpolate(rearrange(x, "b c t h w -> (b t) c h w"), scale_factor=2.0, mode="nearest")
        return self.conv(rearrange(x, "(b t) c h w -> b c t h w", b=b))


class Decoder(nn.Module):
    """(B, latent, T, h, w) -> (B, 3, T*tf, h*s, w*s); time is upsampled first, at low resolution."""

    def __init__(self, c: VAEConfig):
        super().__init__()
        chans = [c.base_channels * m for m in c.channel_mult][::-1]
        levels = len(chans)
        self.conv_in = CausalConv3d(c.latent_channels, chans[0], (3, 3, 3))
        blocks = [ResBlock(chans[0], chans[0], CausalConv3d, (3, 3, 3))]
        cin = chans[0]
        for i, ch in enumerate(chans):
            level = levels - 1 - i  # the encoder's level number at this resolution
            kt = 3 if level >= c.spatial_only_levels else 1
            for _ in range(c.num_res_blocks + 1):
                blocks.append(ResBlock(cin, ch, CausalConv3d, (kt, 3, 3)))
                cin = ch
            if i < levels - 1:
                if i < _temporal_downs(c):
                    blocks.append(TimeUpsample(ch))
                blocks.append(SpaceUpsample(ch))
        self.blocks = nn.Sequential(*blocks)
        self.norm_out = ChannelRMSNorm(cin)
        self.conv_out = CausalConv3d(cin, c.in_channels, (1, 3, 3))

    def set_streaming(self, on: bool) -> None:
        for m in self.modules():
            if isinstance(m, CausalConv3d):
                m.streaming, m.cache = on, None

    def forward(self, z):
        h = self.blocks(self.conv_in(z))
        return self.conv_out(F.silu(self.norm_out(h)))


def _blend_ramp(n: int, overlap: int, at_start: bool, at_end: bool, device) -> torch.Tensor:
    w = torch.ones(n, device=device)
    ramp = torch.linspace(0, 1, overlap + 2, device=device)[1:-1]
    if overlap and not at_start:
        w[:overlap] = ramp
    if overlap and not at_end:
        w[-overlap:] = ramp.flip(0)
    return w


def tiled_apply(fn, x: torch.Tensor, tile: int, overlap: int, scale: float) -> torch.Tensor:
    """Apply a spatially equivariant `fn` to overlapping (tile x tile) windows of x's last two dims
    and blend the results with linear ramps; `scale` = output size / input size."""
    h, w = x.shape[-2:]
    if h <= tile and w <= tile:
        return fn(x)
    stride = tile - overlap

    def starts(n):
        if n <= tile:
            return [0]
        s = list(range(0, n - tile, stride)) + [n - tile]
        return sorted(set(s))

    out = weight = None
    o_over = int(overlap * scale)
    for y in starts(h):
        for x0 in starts(w):
            part = fn(x[..., y : y + tile, x0 : x0 + tile])
            if out is None:
                shape = (*part.shape[:-2], int(h * scale), int(w * scale))
                out = torch.zeros(shape, dtype=part.dtype, device=part.device)
                weight = torch.zeros(shape[-2:], dtype=part.dtype, device=part.device)
            ph, pw = part.shape[-2:]
            oy, ox = int(y * scale), int(x0 * scale)
            wy = _blend_ramp(ph, o_over, y == 0, y + tile >= h, part.device)
            wx = _blend_ramp(pw, o_over, x0 == 0, x0 + tile >= w, part.device)
            wt = (wy[:, None] * wx[None, :]).to(part.dtype)
            out[..., oy : oy + ph, ox : ox + pw] += part * wt
            weight[oy : oy + ph, ox : ox + pw] += wt
    return out / weight


class VideoVAE(nn.Module):
    """Encode (B, 3, 1+tf*k, H, W) video in [-1, 1] to normalised latents (B, C, 1+k, H/s, W/s) and back."""

    def __init__(self, config: VAEConfig):
        super().__init__()
        config.validate()
        self.config = config
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)
        c = config.latent_channels
        mean = torch.tensor(config.latent_mean) if config.latent_mean else torch.zeros(c)
        std = torch.tensor(config.latent_std) if config.latent_std else torch.ones(c)
        self.register_buffer("latent_mean", mean.float().view(1, c, 1, 1, 1))
        self.register_buffer("latent_std", std.float().view(1, c, 1, 1, 1))

    @property
    def temporal_factor(self) -> int:
        return self.config.temporal_factor

    @property
    def spatial_factor(self) -> int:
        return self.config.spatial_factor

    # -- encoding -------------------------------------------------------------------------
    def to_chunks(self, video: torch.Tensor) -> torch.Tensor:
        """(B, 3, 1+tf*k, H, W) -> (B*(1+k), 3, tf, H, W): frame 0 repeated into a still chunk."""
        tf = self.temporal_factor
        first = video[:, :, :1].expand(-1, -1, tf, -1, -1)
        rest = rearrange(video[:, :, 1:], "b c (k f) h w -> b k c f h w", f=tf)
        chunks = torch.cat([first[:, None], rest], dim=1)
        return rearrange(chunks, "b k c f h w -> (b k) c f h w")

    def _check_video(self, video: torch.Tensor, name: str = "video") -> None:
        if video.ndim != 5 or video.shape[1] != self.config.in_channels:
            raise ValueError(
                f"{name} must be (batch, {self.config.in_channels}, frames, height, width); got {tuple(video.shape)}"
            )
        check_pixel_size(video.shape[-1], video.shape[-2], self.spatial_factor)

    def moments(self, chunks: torch.Tensor, chunk_batch: int = 8, progress: Progress | None = None):
        """Posterior mean and log-variance (N, C, h, w) for (N, 3, tf, H, W) chunks, `chunk_batch` at a time."""
        means, logvars = [], []
        for i in range(0, chunks.shape[0], chunk_batch):
            m, lv = self.encoder(chunks[i : i + chunk_batch]).squeeze(2).chunk(2, dim=1)
            means.append(m)
            logvars.append(lv.clamp(-30.0, 20.0))
            if progress:
                progress(min(i + chunk_batch, chunks.shape[0]), chunks.shape[0])
        return torch.cat(means), torch.cat(logvars)

    def normalize(self, z_raw: torch.Tensor) -> torch.Tensor:
        return (z_raw - self.latent_mean) / self.latent_std

    def denormalize(self, z: torch.Tensor) -> torch.Tensor:
        return z * self.latent_std + self.latent_mean

    def _encode_chunks(self, chunks, batch, chunk_batch, sample, generator, progress, tile, overlap):
        def run(c):
            mean, logvar = self.moments(c, chunk_batch, progress)
            if sample:
                noise = torch.randn(mean.shape, generator=generator, device="cpu").to(mean)
                mean = mean + torch.exp(0.5 * logvar) * noise
            return mean

        s = self.spatial_factor
        if tile:
            z = tiled_apply(lambda c: run(c)[:, :, None], chunks, tile * s, overlap * s, 1 / s)[:, :, 0]
        else:
            z = run(chunks)
        return self.normalize(rearrange(z, "(b k) c h w -> b c k h w", b=batch))

    def encode(
        self,
        video: torch.Tensor,
        *,
        sample: bool = False,
        generator: torch.Generator | None = None,
        chunk_batch: int = 8,
        tile: int | None = None,
        overlap: int = 4,
        progress: Progress | None = None,
    ) -> torch.Tensor:
        """(B, 3, 1+tf*k, H, W) in [-1, 1] -> normalised latents (B, C, 1+k, H/s, W/s).

        `chunk_batch` chunks go through the encoder at once (peak memory ~ chunk_batch, not frames);
        `tile` (latent cells) also splits space, for frames too large for memory.
        """
        self._check_video(video)
        check_frame_count(video.shape[2], self.temporal_factor)
        return self._encode_chunks(self.to_chunks(video), video.shape[0], chunk_batch, sample, generator, progress, tile, overlap)

    def encode_chunks(self, video: torch.Tensor, **kwargs) -> torch.Tensor:
        """(B, 3, tf*k, H, W) -> (B, C, k, h, w): frames taken as k whole chunks, with no lone first frame.

        Gives the latents those frames have anywhere after frame 0 of a longer video, e.g. the
        opening of a clip that a generated window must lead into.
        """
        self._check_video(video)
        tf = self.temporal_factor
        if video.shape[2] < tf or video.shape[2] % tf:
            raise ValueError(f"encode_chunks needs a multiple of {tf} frames; got {video.shape[2]}")
        chunks = rearrange(video, "b c (k f) h w -> (b k) c f h w", f=tf)
        return self._encode_chunks(chunks, video.shape[0], kwargs.get("chunk_batch", 8), False, None,
                                   kwargs.get("progress"), kwargs.get("tile"), kwargs.get("overlap", 4))

    # -- decoding -------------------------------------------------------------------------
    def _decode_stream(self, z_raw: torch.Tensor, chunk: int, progress: Progress | None) -> torch.Tensor:
        self.decoder.set_streaming(True)
        try:
            outs = []
            for i in range(0, z_raw.shape[2], chunk):
                outs.append(self.decoder(z_raw[:, :, i : i + chunk]))
                if progress:
                    progress(min(i + chunk, z_raw.shape[2]), z_raw.shape[2])
        finally:
            self.decoder.set_streaming(False)
        return torch.cat(outs, dim=2)

    def decode(
        self,
        z: torch.Tensor,
        *,
        chunk: int = 4,
        tile: int | None = None,
        overlap: int = 4,
        progress: Progress | None = None,
    ) -> torch.Tensor:
        """Normalised latents (B, C, T, h, w) -> video (B, 3, 1+tf*(T-1), H, W), roughly in [-1, 1].

        Streams `chunk` latent frames at a time through the causal decoder (equal to decoding all
        at once up to float rounding); `tile` (latent cells) also splits space.
        """
        if z.ndim != 5 or z.shape[1] != self.config.latent_channels:
            raise ValueError(
                f"latents must be (batch, {self.config.latent_channels}, frames, height, width); got {tuple(z.shape)}"
            )
        if chunk < 1:
            raise ValueError(f"chunk={chunk} must be at least 1 latent frame")
        z_raw = self.denormalize(z)
        s = self.spatial_factor
        if tile:
            video = tiled_apply(lambda t: self._decode_stream(t, chunk, progress), z_raw, tile, overlap, s)
        else:
            video = self._decode_stream(z_raw, chunk, progress)
        return video[:, :, self.temporal_factor - 1 :]

    def forward(self, video: torch.Tensor, generator: torch.Generator | None = None):
        """Training pass: reconstruction of the still-chunk-padded video, posterior mean and log-variance."""
        self._check_video(video)
        check_frame_count(video.shape[2], self.temporal_factor)
        b = video.shape[0]
        mean, logvar = self.moments(self.to_chunks(video), chunk_batch=1 << 30)
        noise = torch.randn(mean.shape, generator=generator, device="cpu").to(mean)
        z = mean + torch.exp(0.5 * logvar) * noise
        z = rearrange(z, "(b k) c h w -> b c k h w", b=b)
        recon = self.decoder(z)[:, :, self.temporal_factor - 1 :]
        return recon, mean, logvar
