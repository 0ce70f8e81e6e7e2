"""Model configurations and named presets.

One dataclass per network; `SoraConfig` bundles them and is what a checkpoint stores in its
metadata, so a file always knows how to rebuild its own modules.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field


@dataclass
class VAEConfig:
    """Causal 3D VAE: compresses `temporal_factor` frames and `spatial_factor`^2 pixels per latent."""

    in_channels: int = 3
    latent_channels: int = 16
    base_channels: int = 64
    # One entry per resolution level; each level after the first halves height and width,
    # so the spatial factor is 2 ** (len(channel_mult) - 1).
    channel_mult: tuple[int, ...] = (1, 2, 4, 4)
    # Frames per latent frame (after frame 0, which is an image on its own).
    temporal_factor: int = 4
    num_res_blocks: int = 1  # conv layers per resolution level (the decoder has one more)
    # Decoder levels, from the lowest resolution up, whose convs also see the previous latent
    # frames; higher ones are per-frame 3x3 (3x3x3 there costs 3x the FLOPs for little gain).
    temporal_levels: int = 1
    # Decoder level (0 = lowest resolution) after which each latent frame becomes `temporal_factor`
    # frames, so the levels above it run per frame and can move things inside a chunk. None: at the
    # output conv (the first shipped decoder: objects hold through each chunk and jump at the next,
    # eval's vae_stutter; docs/training.md section 10).
    depth_to_time_level: int | None = None
    # Per-channel statistics of the latents, measured after training, so the DiT sees ~N(0, 1).
    latent_mean: tuple[float, ...] | None = None
    latent_std: tuple[float, ...] | None = None

    @property
    def spatial_factor(self) -> int:
        return 2 ** (len(self.channel_mult) - 1)

    def validate(self) -> None:
        if not isinstance(self.temporal_factor, int) or self.temporal_factor < 1:
            raise ValueError(f"VAEConfig.temporal_factor={self.temporal_factor} is not allowed: use an integer >= 1")
        level = self.depth_to_time_level
        if level is not None and (isinstance(level, bool) or not isinstance(level, int)
                                  or not 0 <= level < len(self.channel_mult)):
            raise ValueError(f"VAEConfig.depth_to_time_level={level!r} is not allowed: use None or a decoder level "
                             f"0..{len(self.channel_mult) - 1}")
        for name in ("latent_mean", "latent_std"):
            value = getattr(self, name)
            if value is None:
                continue
            if len(value) != self.latent_channels:
                raise ValueError(
                    f"VAEConfig.{name} has {len(value)} entries; it needs one per latent channel "
                    f"({self.latent_channels})"
                )
            if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in value):
                raise ValueError(f"VAEConfig.{name}={list(value)} is not allowed: every entry must be a finite number")
        if self.latent_std is not None and min(self.latent_std) <= 0:
            # latents are divided by it: zero gives inf, negative flips the channel the DiT was trained on
            raise ValueError(f"VAEConfig.latent_std={list(self.latent_std)} is not allowed: every entry must be > 0")


@dataclass
class TextConfig:
    """The default model's own small text encoder over hashed word tokens."""

    vocab_size: int = 8192  # hash buckets; collisions are rare for a caption vocabulary this size
    dim: int = 256
    depth: int = 2
    heads: int = 4
    max_tokens: int = 128  # detailed captions are ~60-100 words


@dataclass
class DiTConfig:
    """Diffusion transformer over spacetime latent patches."""

    latent_channels: int = 16
    patch: tuple[int, int, int] = (1, 2, 2)  # (time, height, width) latent cells per token
    dim: int = 384
    depth: int = 6
    heads: int = 6
    mlp_ratio: float = 4.0
    text_dim: int = 256
    qk_norm: bool = True  # stabilises attention logits at large sizes (ViT-22B, SD3)
    rope_theta: float = 10000.0
    # Also add an embedding of each token's absolute place (latent frame index, and height / width
    # as fractions of the frame) to the tokens. RoPE alone tells attention only relative offsets, so
    # a small model must otherwise infer "near the left edge" or "the first frame" from the grid's
    # boundary; with it, captions' places and start positions are learned far sooner.
    abs_pos: bool = False
    # Also take a planned layout: each token gets the pooled phrase embedding of the objects whose
    # place covers it (`grounding`), projected by `DiT.ground`. Models without it ignore layouts.
    grounding: bool = False
    # With grounding, also read each planned object's outline: how much of each of a token's
    # silhouette x silhouette sub-cells the shapes cover, projected by `DiT.silhouette` (0: no outline).
    silhouette: int = 0

    def validate(self) -> None:
        if type(self.silhouette) is not int or self.silhouette < 0 or (self.silhouette and not self.grounding):
            raise ValueError(f"DiTConfig.silhouette={self.silhouette!r} is not allowed: use 0, or sub-cells per "
                             f"token side (e.g. 4) together with grounding=True")
        if self.dim % self.heads:
            raise ValueError(f"DiTConfig.dim={self.dim} must be divisible by heads={self.heads}")
        head_dim = self.dim // self.heads
        if head_dim % 2 or head_dim < 12:
            raise ValueError(
                f"DiTConfig head size dim/heads={head_dim} must be even and at least 12 so 3D "
                f"RoPE can split it into rotation pairs over time, height and width"
            )


@dataclass
class SoraConfig:
    vae: VAEConfig = field(default_factory=VAEConfig)
    text: TextConfig = field(default_factory=TextConfig)
    dit: DiTConfig = field(default_factory=DiTConfig)
    name: str = "custom"

    def validate(self) -> None:
        self.vae.validate()
        self.dit.validate()
        if self.dit.latent_channels != self.vae.latent_channels:
            raise ValueError(
                f"DiT latent_channels={self.dit.latent_channels} differs from the VAE's "
                f"{self.vae.latent_channels}"
            )
        if self.dit.text_dim != self.text.dim:
            raise ValueError(f"DiT text_dim={self.dit.text_dim} differs from text dim={self.text.dim}")
        if self.dit.silhouette and self.pixel_multiple % self.dit.silhouette:
            raise ValueError(f"DiT silhouette={self.dit.silhouette} must divide a token's cell of "
                             f"{self.pixel_multiple} px")

    @property
    def pixel_multiple(self) -> int:
        """Width and height must be multiples of this (VAE stride x patch size)."""
        return self.vae.spatial_factor * self.dit.patch[1]

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "SoraConfig":
        raw = json.loads(text)
        unknown = set(raw) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown config sections {sorted(unknown)}")

        def build(kind, values):
            names = {f.name for f in dataclasses.fields(kind)}
            extra = set(values) - names
            if extra:
                raise ValueError(f"unknown {kind.__name__} fields {sorted(extra)}")
            return kind(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})

        config = cls(
            vae=build(VAEConfig, raw.get("vae", {})),
            text=build(TextConfig, raw.get("text", {})),
            dit=build(DiTConfig, raw.get("dit", {})),
            name=raw.get("name", "custom"),
        )
        config.validate()
        return config


def _tiny() -> SoraConfig:
    # The shipped default: trains on a 2-core CPU in hours and runs there in seconds.
    # 4x spatial compression (not 8x) because at 64-128 px an 8x latent is too coarse to keep
    # the small objects of the synthetic world sharp; 16 channels (12x compression overall) so
    # real footage reconstructs better than bicubic 4x down/up (22 dB on the held-out clips).
    return SoraConfig(
        name="tiny",
        vae=VAEConfig(latent_channels=16, base_channels=48, channel_mult=(1, 2, 2), temporal_factor=4,
                      num_res_blocks=1, temporal_levels=2, depth_to_time_level=0),
        text=TextConfig(vocab_size=4096, dim=128, depth=2, heads=4, max_tokens=160),
        dit=DiTConfig(latent_channels=16, patch=(1, 2, 2), dim=256, depth=6, heads=4, text_dim=128),
    )


def _micro() -> SoraConfig:
    # For unit tests: every code path, milliseconds per call.
    return SoraConfig(
        name="micro",
        vae=VAEConfig(latent_channels=4, base_channels=8, channel_mult=(1, 2, 2), temporal_factor=4),
        text=TextConfig(vocab_size=512, dim=24, depth=1, heads=2, max_tokens=32),
        dit=DiTConfig(latent_channels=4, patch=(1, 2, 2), dim=48, depth=2, heads=2, text_dim=24),
    )


def _base() -> SoraConfig:
    # A mid-size GPU model, 8x spatial like the report-era video VAEs.
    return SoraConfig(
        name="base",
        vae=VAEConfig(latent_channels=16, base_channels=96, channel_mult=(1, 2, 4, 4)),
        text=TextConfig(vocab_size=32768, dim=768, depth=6, heads=12, max_tokens=256),
        dit=DiTConfig(latent_channels=16, dim=1152, depth=16, heads=16, text_dim=768),
    )


def _xl() -> SoraConfig:
    # ~1.2B-parameter DiT (depth 28, width 1536), only instantiated in benchmarks.
    return SoraConfig(
        name="xl",
        vae=VAEConfig(latent_channels=16, base_channels=128, channel_mult=(1, 2, 4, 4)),
        text=TextConfig(vocab_size=32768, dim=1024, depth=8, heads=16, max_tokens=256),
        dit=DiTConfig(latent_channels=16, dim=1536, depth=28, heads=24, text_dim=1024),
    )


PRESETS = {"micro": _micro, "tiny": _tiny, "base": _base, "xl": _xl}


def preset(name: str) -> SoraConfig:
    """A fresh copy of a named preset."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    config = PRESETS[name]()
    config.validate()
    return config
