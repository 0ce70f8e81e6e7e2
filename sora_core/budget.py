"""The up-front budget: how many tokens and how much memory a request needs, refused before any of
it is allocated, with a message naming the size, the estimate and the limit.

Two limits, both configurable:

- DiT tokens: every video's latent patches, times the batch. Attention work grows with the square
  of this and one attention call cannot be interrupted, so a request far past it would hold the
  machine for minutes or hours. `SORA_MAX_TOKENS`, default 65536 (the default model samples a
  few hundred; 65536 is 1024x1024 px x 17 frames for the larger presets).
- memory: the estimated peak of the stages a request runs (VAE encode, sampling, VAE decode).
  `SORA_MAX_MEMORY` (e.g. "16GB", binary units), default: what the device has -- the memory
  available now on a CPU, the whole memory of an accelerator.

A `Budget(max_tokens=..., max_memory=...)` overrides the environment (the CLI's --max-tokens and
--max-memory make one). The estimate counts the large tensors of each stage: copies of the latents
in the sampler, the DiT's activations for the guidance passes it batches, attention's working memory, the
VAE's widest activation per chunk, the frames in and out. It is there to refuse what cannot fit,
not to predict the peak to the byte. It reads a model's sizes as `Dims`: from a SoraConfig, or from
any model config with a `budget_dims()` (a Wan model's). A model whose own native size is more
tokens than the default limit (Wan 14B at 1280x720x81: 75,600) gets its native size as the default.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass

import torch

from .attention import MATH_SCORES_LIMIT
from .config import SoraConfig
from .patch import is_whole, latent_frames

DEFAULT_MAX_TOKENS = 1 << 16
STAGES = ("encode", "sample", "decode")
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


class BudgetError(ValueError):
    """A request needs more tokens or memory than its limit allows."""


def parse_size(text: str) -> int:
    """'16GB', '16 GiB', '512M', '1.5T', '1000000' -> bytes (K/M/G/T are powers of 1024)."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kmgt]?)(i?b)?\s*", str(text), re.I)
    if not match or float(match[1]) <= 0:
        raise ValueError(f"memory size {text!r} is not allowed: use a positive size such as 16GB, 512MB or 1.5T")
    return int(float(match[1]) * _UNITS[match[2].lower()])


def format_size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError


@dataclass(frozen=True)
class Budget:
    """Limits for one request; None takes the environment's, then the default."""

    max_tokens: int | None = None
    max_memory: int | None = None  # bytes

    def __post_init__(self):
        for name in ("max_tokens", "max_memory"):
            value = getattr(self, name)
            if value is not None and (not is_whole(value) or value < 1):
                raise ValueError(f"Budget {name}={value!r} is not allowed: use a positive integer or None")

    def token_limit(self, default: int = DEFAULT_MAX_TOKENS) -> tuple[int, str]:
        """(limit, where it comes from); `default` when neither this budget nor the environment sets one."""
        if self.max_tokens is not None:
            return self.max_tokens, "as asked"
        env = os.environ.get("SORA_MAX_TOKENS")
        if env:
            try:
                value = int(env)
            except ValueError:
                value = 0
            if value < 1:
                raise ValueError(f"SORA_MAX_TOKENS={env!r} is not allowed: use a positive integer")
            return value, "SORA_MAX_TOKENS"
        return default, "the default"

    def memory_limit(self, device: torch.device | str) -> tuple[int | None, str]:
        """(limit in bytes or None for no check, where it comes from)."""
        if self.max_memory is not None:
            return self.max_memory, "as asked"
        env = os.environ.get("SORA_MAX_MEMORY")
        if env:
            try:
                return parse_size(env), "SORA_MAX_MEMORY"
            except ValueError as err:
                raise ValueError(f"SORA_MAX_MEMORY: {err}") from None
        return device_memory(torch.device(device))


def device_memory(device: torch.device) -> tuple[int | None, str]:
    """What a device can hold: available RAM on a CPU, the whole memory of an accelerator."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory, f"the memory of {device}"
    if device.type == "mps" and hasattr(torch.mps, "recommended_max_memory"):
        return torch.mps.recommended_max_memory(), "the memory of mps"
    if device.type == "cpu":
        try:
            with open("/proc/meminfo") as f:
                for line in f:
                    if line.startswith("MemAvailable:"):
                        return int(line.split()[1]) * 1024, "the memory available now"
        except OSError:
            pass
        try:
            return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"), "the memory available now"
        except (ValueError, OSError, AttributeError):
            pass
    return None, f"unknown for {device}"


@dataclass(frozen=True)
class Dims:
    """The sizes of a model that the estimate reads."""

    spatial_factor: int
    temporal_factor: int
    latent_channels: int
    patch: tuple[int, int, int]  # the DiT's (time, height, width) latent cells per token
    dim: int  # the DiT's width
    heads: int
    mlp_ratio: float
    text_tokens: int  # rows of text the DiT cross-attends to
    encoder_channels: tuple[int, ...]  # the VAE's, per level, full resolution first
    decoder_channels: tuple[int, ...]
    pixel_patch: int = 1  # pixels folded into channels before the VAE's first level (Wan 2.2: 2)
    native_tokens: int = 0  # DiT tokens of the model's own size; the default token limit is at least this
    depth_to_time_level: int | None = None  # decoder levels above it run per frame (VAEConfig); None: split at the output


def dims_of(config) -> Dims:
    """A SoraConfig's `Dims`; other model configs give theirs with `budget_dims()`."""
    if not isinstance(config, SoraConfig):
        return config.budget_dims()
    vae, dit = config.vae, config.dit
    chans = tuple(vae.base_channels * m for m in vae.channel_mult)
    return Dims(vae.spatial_factor, vae.temporal_factor, vae.latent_channels, tuple(dit.patch), dit.dim, dit.heads,
                dit.mlp_ratio, config.text.max_tokens, chans, chans, depth_to_time_level=vae.depth_to_time_level)


@dataclass(frozen=True)
class Estimate:
    tokens: int  # DiT tokens, all videos of the batch together
    stages: dict  # stage -> estimated peak bytes
    latents: int  # bytes of the latent window

    @property
    def memory(self) -> int:
        return self.latents + max(self.stages.values(), default=0)


def estimate(config, *, width: int, height: int, frames: int, batch: int = 1,
             stages: tuple[str, ...] = ("sample", "decode"), encode_frames: int = 0, chunk: int = 4,
             tile: int | None = None, chunk_batch: int = 8, passes: int = 2,
             dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> Estimate:
    """Tokens and peak memory of making `batch` videos of `width` x `height` px x `frames` frames with
    the model of `config` (see `dims_of`): `encode_frames` source frames VAE-encoded `chunk_batch`
    chunks at a time, sampling with the DiT in `dtype` over `passes` batched passes per step (1: no guidance,
    or one pass at a time; 2: classifier-free guidance; 3: guidance toward a layout too), decoding `chunk`
    latent frames at a time (in `tile`-cell tiles)."""
    d = dims_of(config)
    s, tf = d.spatial_factor, d.temporal_factor
    t, h, w = latent_frames(frames, tf), height // s, width // s
    pt, ph, pw = d.patch
    tokens = batch * (t // pt) * (h // ph) * (w // pw)
    f32 = 4
    latent = batch * d.latent_channels * t * h * w * f32
    p = d.pixel_patch.bit_length() - 1  # levels of the VAE start at 1 / pixel_patch of the frame size
    out: dict[str, int] = {}
    if "encode" in stages and encode_frames:
        video = encode_frames * 3 * height * width * f32
        level = max(c * (height >> (i + p)) * (width >> (i + p)) for i, c in enumerate(d.encoder_channels))
        at_once = min(chunk_batch, 1 + encode_frames // tf)
        # the frames as a video, its chunks, and per batch of chunks the input and two widest activations
        out["encode"] = 3 * video + at_once * (3 * tf * height * width + 3 * level) * f32
    if "sample" in stages:
        e = torch.empty((), dtype=dtype).element_size()
        n = passes * tokens
        head = d.dim // d.heads
        activations = n * d.dim * e * (2 * d.mlp_ratio + 8)  # residual, norms, q/k/v, rotated q/k, MLP
        attention = n * d.heads * d.text_tokens * f32  # cross-attention scores
        scores = n * d.heads * (tokens // batch)
        if torch.device(device).type == "cpu" and e == 2 and scores <= MATH_SCORES_LIMIT:
            attention += scores * f32  # small bf16 problems on a CPU take matmul + softmax (`attention`)
        rope = (tokens // batch) * head * 24
        out["sample"] = int((6 + 2 * passes) * latent + activations + attention + rope)
    if "decode" in stages:
        lt = min(chunk, t)
        th, tw = (min(tile, h), min(tile, w)) if tile else (h, w)
        up = [d.latent_channels, *reversed(d.decoder_channels)]  # channels coming into each level, then its own
        split = len(d.decoder_channels) if d.depth_to_time_level is None else d.depth_to_time_level
        # frames per chunk at a level: its latent frames, or above the split their video frames (the first
        # chunk's latent frame 0 is one frame)
        per_frame = 1 + tf * (lt - 1) if t <= lt else tf * lt
        # per level: its input through the upsample's copies and the causal pad, a conv's output and its SiLU;
        # at the split level also the split conv's tf frames' worth of channels, and them rearranged
        level = max((3 * up[i] + 2 * up[i + 1] + (2 * tf * up[i + 1] if i == split else 0))
                    * (th << i) * (tw << i) * (per_frame if i > split else lt) for i in range(len(d.decoder_channels)))
        frames_out = batch * 3 * tf * t * height * width * f32
        # per chunk the widest level; then the chunks' frames, their concatenation and the conversion to
        # [0, 1] frames. Against the peak RSS of a CPU decode (tiny preset, 128-384 px): 0.6x to 1.1x.
        out["decode"] = batch * level * f32 + 7 * frames_out
    return Estimate(tokens, out, latent)


_STAGE_NAMES = {"encode": "VAE encode", "sample": "sampling", "decode": "VAE decode"}


def check(config, *, what: str, width: int, height: int, frames: int, batch: int = 1,
          budget: Budget | None = None, device: torch.device | str = "cpu", **kw) -> Estimate:
    """`estimate`, refused with a BudgetError when it passes the token or memory limit."""
    budget = budget or Budget()
    est = estimate(config, width=width, height=height, frames=frames, batch=batch, device=device, **kw)
    size = f"{width}x{height} px x {frames} frame{'' if frames == 1 else 's'}"
    if batch > 1:
        size = f"{batch} videos of {size}"
    if "sample" in kw.get("stages", ("sample",)):
        limit, source = budget.token_limit(max(DEFAULT_MAX_TOKENS, dims_of(config).native_tokens))
        if est.tokens > limit:
            raise BudgetError(
                f"{what}: {size} is {est.tokens:,} DiT tokens; the limit is {limit:,} ({source}; "
                f"set SORA_MAX_TOKENS, --max-tokens or Budget(max_tokens=...)). Use a smaller size or fewer frames.")
    limit, source = budget.memory_limit(device)
    if limit is not None and est.memory > limit:
        parts = ", ".join(f"{_STAGE_NAMES[k]} {format_size(v)}" for k, v in est.stages.items())
        raise BudgetError(
            f"{what}: {size} needs about {format_size(est.memory)} of memory (latents "
            f"{format_size(est.latents)}, then at most: {parts}); the limit is {format_size(limit)} ({source}; "
            f"set SORA_MAX_MEMORY, --max-memory or Budget(max_memory=...)). Use a smaller size or fewer frames"
            + (", or decode in smaller chunks / tiles." if "decode" in est.stages else "."))
    return est
