"""What travels between the nodes, in ComfyUI's core types, and the checks on it.

LATENT is a dict:
    "samples"     (B, C, T, h, w), 5-D like core video latents. For Wan models the VAE's raw latents, exactly
                  as core's VAEEncode / EmptyHunyuanLatentVideo / Wan22ImageToVideoLatent make them and core's
                  KSampler takes them (its latent format normalises them); sora_core works on normalised ones,
                  converted here (`to_model` / `to_wire`) and nowhere else. For our own Sora models the
                  normalised latents themselves (core has no counterpart).
    "noise_mask"  core's: one value per latent frame, 1 = generate, 0 = keep as given, between = SDEdit
                  strength; written (B, 1, T, h, w), read in any shape core's sampler reads (`strength_of`).
                  Absent = every frame generated, like a core empty latent. Core's KSampler keeps 0-frames and
                  generates 1-frames the same way; a value between it blends per step instead of SDEdit.
    "sora_splice" how the decoded frames join the source clips (Extend / Loop / Connect)
    "sora_tail"   given frames after generated ones, re-encoded by VAE Decode after the frames decoded before
                  them (a causal VAE's exact latents; see `sora_core.conditioning`)
Graphs from before noise_mask carried "sora_strength" (B, T); it is still read, and a latent carrying
both follows noise_mask.
CONDITIONING is core's [[embeddings (1, L, D), {...}]]: from Sora Text Encode with "sora_mask" (1, L) bool
and "sora_text"; from core's CLIPTextEncode (e.g. CLIPLoader type=wan: umt5, 4096 wide) without a mask,
every token valid.
IMAGE is (frames, height, width, 3) in [0, 1]; a batch is the frames of ONE video.
"""

from __future__ import annotations

import torch

from sora_core import budget
from sora_core.conditioning import Splice, Tail, Window, as_frames
from sora_core.config import SoraConfig
from sora_core.patch import check_frame_count, check_pixel_size
from sora_core.wan.dit import WanConfig

from . import host

FRAMES_TOOLTIP = "Frame count: 1 + 4k (1, 5, 9, 13, 17, ...). One frame makes an image."
CHUNK_TOOLTIP = "A multiple of 4 frames: the VAE turns every 4 frames into one latent frame."

Config = SoraConfig | WanConfig
MASK_TOLERANCE = 1e-4  # a per-frame mask resized by core (bilinear / trilinear) may wobble by float rounding


def is_wan(config: Config) -> bool:
    return isinstance(config, WanConfig)


# -- the latent space on the wire ---------------------------------------------------------------

def _stats(config: WanConfig, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    shape = (1, config.vae.latent_channels, 1, 1, 1)
    mean = torch.tensor(config.vae.latent_mean, device=like.device).view(shape)
    std = torch.tensor(config.vae.latent_std, device=like.device).view(shape)
    return mean, std


def to_model(samples: torch.Tensor, config: Config) -> torch.Tensor:
    """Wire latents -> the normalised latents sora_core samples and decodes (fp32)."""
    if not is_wan(config):
        return samples.float()
    mean, std = _stats(config, samples)
    return (samples.float() - mean) / std  # core's Wan21.process_in


def to_wire(z: torch.Tensor, config: Config) -> torch.Tensor:
    """Normalised latents -> wire latents (Wan: the VAE's raw space, core's Wan21.process_out)."""
    if not is_wan(config):
        return z
    mean, std = _stats(config, z)
    return z.float() * std + mean


def latent(z: torch.Tensor, config: Config, strength: torch.Tensor | None = None, splice: Splice | None = None,
           tail: Tail | None = None) -> dict:
    """A LATENT from normalised latents and their per-frame strength (B, T); a strength of all ones
    (every frame generated) travels as no mask, like core's empty latents."""
    d = host.intermediate_device()
    out = {"samples": to_wire(z, config).to(d)}
    if strength is not None and not bool((strength == 1).all()):
        out["noise_mask"] = frame_mask(strength, z.shape).to(d)
    if splice is not None:
        out["sora_splice"] = splice
    if tail is not None:
        out["sora_tail"] = tail
    return out


def window_latent(window: Window, config: Config) -> dict:
    return latent(window.samples, config, window.strength, window.splice, window.tail)


def frame_mask(strength: torch.Tensor, shape) -> torch.Tensor:
    """(B, T) per-frame strengths -> core's noise_mask (B, 1, T, h, w)."""
    b, _, t, h, w = shape
    return strength.float()[:, None, :, None, None].expand(b, 1, t, h, w).contiguous()


def model_samples(value: dict, config: Config, name: str = "latent") -> torch.Tensor:
    """The normalised latents of a LATENT, checked."""
    return to_model(check_latent(value, config, name), config)


def sampled(value: dict, z: torch.Tensor, strength: torch.Tensor, config: Config) -> dict:
    """The sampler's output LATENT: `value` with the sampled latents, its given frames (strength 0)
    bit for bit as they came in (the trip through the normalised space would round them)."""
    samples = value["samples"]
    out = to_wire(z, config).to(samples.device, samples.dtype)
    given = (strength == 0).to(samples.device)[:, None, :, None, None]
    result = dict(value)
    result["samples"] = torch.where(given, samples, out).to(host.intermediate_device())
    return result


def check_latent(value: dict, config: Config, name: str = "latent") -> torch.Tensor:
    samples = value.get("samples") if isinstance(value, dict) else None
    c = config.vae.latent_channels
    if not isinstance(samples, torch.Tensor) or samples.ndim != 5 or samples.shape[1] != c:
        shape = tuple(samples.shape) if isinstance(samples, torch.Tensor) else None
        maker = ("a Sora node or core's Wan latent nodes (EmptyHunyuanLatentVideo, Wan22ImageToVideoLatent, "
                 "VAEEncode)" if is_wan(config) else "a Sora node (Patchify Grid, VAE Encode, Extend, ...)")
        raise ValueError(f"{name} must be a video latent of shape (batch, {c}, frames, height, width) for this "
                         f"model, made by {maker}; got samples of shape {shape}")
    check_finite(name, samples)
    return samples


def check_finite(name: str, samples: torch.Tensor) -> None:
    """NaN / inf in a latent, named before any sampling or decoding (it would spread to every frame)."""
    bad = ~torch.isfinite(samples)
    if bad.any():
        frames = sorted({int(f) for f in bad.any(dim=(0, 1, 3, 4)).nonzero().flatten()})
        raise ValueError(f"{name} holds {int(bad.sum())} NaN or inf values (in latent frames {frames}); "
                         f"the node that made it is broken upstream (an image with NaN, a VAE in too narrow a dtype)")


# -- per-frame strength: core's noise_mask ------------------------------------------------------

def strength_of(value: dict, samples: torch.Tensor) -> torch.Tensor:
    """Per-frame strength (B, T) of a LATENT: its noise_mask, else the old sora_strength, else all 1.

    A noise_mask is read in the shapes core's sampler reads (comfy.utils.reshape_mask): 5-D
    (B or 1, any channels, T or 1, any h, any w), or fewer dims (..., h, w) whose leading entries are
    the latent frames (T of them, or 1 for all). It must be one value per latent frame: this sampler
    generates or keeps whole latent frames, it does not inpaint regions."""
    mask = value.get("noise_mask")
    if mask is not None:
        return _mask_strength(mask, samples)
    strength = value.get("sora_strength")  # graphs from before noise_mask
    if strength is None:
        return torch.ones(samples.shape[0], samples.shape[2])
    if tuple(strength.shape) != (samples.shape[0], samples.shape[2]):
        raise ValueError(f"sora_strength has shape {tuple(strength.shape)}; expected (batch, latent frames) = "
                         f"{(samples.shape[0], samples.shape[2])}")
    return _check_range("sora_strength", strength.float().cpu())


def _mask_strength(mask, samples: torch.Tensor) -> torch.Tensor:
    b, _, t = samples.shape[:3]
    if not isinstance(mask, torch.Tensor) or mask.ndim < 2 or 0 in mask.shape:
        what = tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise ValueError(f"noise_mask must be a tensor of shape (batch, 1, latent frames, height, width); got {what}")
    mask = mask.detach().float().cpu()
    if mask.ndim < 5:  # as core reads it: (..., h, w) -> (1, 1, frames, h, w)
        mask = mask.reshape(1, 1, -1, *mask.shape[-2:])
    if mask.ndim != 5:
        raise ValueError(f"noise_mask has shape {tuple(mask.shape)}; a video latent's mask is (batch, 1, latent "
                         f"frames, height, width)")
    if mask.shape[2] not in (1, t):
        raise ValueError(f"noise_mask covers {mask.shape[2]} latent frames but the latent has {t}; make the mask "
                         f"with the node that made the latent")
    if mask.shape[0] not in (1, b):
        raise ValueError(f"noise_mask is for a batch of {mask.shape[0]} but the latent holds {b} videos")
    flat = mask.flatten(3).transpose(1, 2).flatten(2)  # (B, T, channels * h * w)
    _check_range("noise_mask", flat)
    low, high = flat.amin(-1), flat.amax(-1)
    uneven = (high - low > MASK_TOLERANCE).nonzero()
    if len(uneven):
        i, f = (int(x) for x in uneven[0])
        raise ValueError(f"noise_mask varies inside latent frame {f} (from {float(low[i, f]):g} to "
                         f"{float(high[i, f]):g}); the Sora sampler generates or keeps whole latent frames (one "
                         f"value per frame). For regional inpainting use core's KSampler.")
    return flat.mean(-1).expand(b, t).clone()


def _check_range(name: str, values: torch.Tensor) -> torch.Tensor:
    if not bool(((values >= 0) & (values <= 1)).all()):  # NaN fails both
        bad = values[~((values >= 0) & (values <= 1))]
        raise ValueError(f"{name} holds values outside 0..1 (e.g. {bad.flatten()[:4].tolist()}); 1 = generate, "
                         f"0 = keep, between = SDEdit strength")
    return values


def check_frames(name: str, frames: torch.Tensor, config: SoraConfig, *, any_count: bool = False) -> torch.Tensor:
    """Frames must be finite (T, H, W, 3) in 0..1 with H, W multiples of the model's pixel multiple (and
    T = 1 + 4k); returns them as float."""
    if not isinstance(frames, torch.Tensor) or frames.ndim != 4 or frames.shape[-1] != 3 or 0 in frames.shape:
        shape = tuple(frames.shape) if isinstance(frames, torch.Tensor) else type(frames).__name__
        raise ValueError(f"{name} must be IMAGE frames (count, height, width, 3); got {shape}")
    frames = as_frames(name, frames)
    try:
        check_pixel_size(frames.shape[2], frames.shape[1], config.pixel_multiple)
        if not any_count:
            check_frame_count(frames.shape[0], config.vae.temporal_factor)
    except ValueError as err:
        raise ValueError(f"{name} ({frames.shape[0]} frames of {frames.shape[2]}x{frames.shape[1]}): {err}. "
                         f"Resize with an Image Scale node or trim with Sora Trim Frames.") from None
    return frames


def check_budget(config: Config, what: str, width: int, height: int, frames: int, *, batch: int = 1,
                 stages: tuple[str, ...], part=None, **kw) -> budget.Estimate:
    """`sora_core.budget.check` on the device the work runs on: `part`'s, else where ComfyUI runs DiTs."""
    if part is not None:
        device, dtype = part.device, next(part.module.parameters()).dtype
    else:
        device = host.devices("dit")[0]
        dtype = host.auto_dtype(device)
    return budget.check(config, what=what, width=width, height=height, frames=frames, batch=batch, stages=stages,
                        device=device, dtype=dtype, **kw)


# -- CONDITIONING -------------------------------------------------------------------------------

def conditioning(embeddings: torch.Tensor, mask: torch.Tensor, text: str, layout: dict | None = None) -> list:
    """Sora Text Encode's CONDITIONING; `layout`: a planned scene's dict, its objects' pooled phrase
    embeddings (`sora_core.grounding`) and the guidance toward it (`cfg`), for a DiT that reads layouts."""
    d = host.intermediate_device()
    extra = {"sora_mask": mask.to(d), "sora_text": text}
    if layout is not None:
        extra["sora_layout"] = {"scene": layout["scene"], "embeddings": layout["embeddings"].to(d),
                                "cfg": layout["cfg"]}
    return [[embeddings.to(d), extra]]


def layout_scene(value, config: Config) -> dict | None:
    """The planned scene (a dict) of the layout in checked CONDITIONING, or None: no layout, or a model that
    does not read one (Wan; a Sora DiT trained without)."""
    lay = value[0][1].get("sora_layout")
    if lay is None or is_wan(config) or not config.dit.grounding:
        return None
    return lay["scene"]


def layout_cfg(value, config: Config) -> float:
    """The guidance toward the layout in checked CONDITIONING (Sora Apply Layout's layout_cfg); 0 where
    `layout_scene` is None."""
    return float(value[0][1]["sora_layout"]["cfg"]) if layout_scene(value, config) is not None else 0.0


def read_layout(value, config: Config, tokens_grid: tuple[int, int, int]) -> torch.Tensor | None:
    """The (1, N, D) grounding of the layout in checked CONDITIONING over a latent grid (T, H, W) in latent
    cells, or None where `layout_scene` is None."""
    scene = layout_scene(value, config)
    if scene is None:
        return None
    from sora_core.grounding import layout, place

    lay = value[0][1]["sora_layout"]
    planned = layout(scene, config, tokens_grid)
    return place(planned.occupancy, lay["embeddings"], planned.occupancy.shape[1], planned.silhouette)[None]


def read_conditioning(value, config: Config, name: str) -> tuple[torch.Tensor, torch.Tensor, str | None]:
    """(embeddings (1, L, D), mask (1, L) bool, prompt or None) from Sora Text Encode's or, for Wan models,
    core's CLIPTextEncode output (no mask: every token valid; its prompt is not known)."""
    ok = isinstance(value, list) and len(value) >= 1 and all(
        isinstance(c, (list, tuple)) and len(c) == 2 and isinstance(c[1], dict) for c in value)
    if not ok or not isinstance(value[0][0], torch.Tensor) or value[0][0].ndim != 3 or value[0][0].shape[0] != 1:
        raise ValueError(f"{name} must be CONDITIONING from Sora Text Encode or core's CLIPTextEncode (one prompt "
                         f"of shape (1, tokens, width)); got {_describe(value)}")
    if len(value) > 1:
        raise ValueError(f"{name} holds {len(value)} prompts (combined conditioning); the Sora sampler takes one "
                         f"text encode output")
    emb, extra = value[0]
    width, want = emb.shape[-1], config.text.dim  # the text states the DiT reads (WanConfig too)
    ours = "sora_mask" in extra
    if not is_wan(config) and not ours:
        raise ValueError(f"{name} is {width}-wide conditioning from another text encoder; this Sora model reads "
                         f"{want}-wide embeddings from its own text encoder: encode it with Sora Text Encode and "
                         f"the text encoder from the same Sora checkpoint")
    if width != want:
        needs = (f"this Wan model ({config.variant}) reads {want}-wide umt5 states: encode it with the umt5 text "
                 f"encoder (CLIPLoader type=wan, or Sora Load Text Encoder)") if is_wan(config) else (
                 f"this model reads {want}-wide ones: encode it with the text encoder from the same Sora checkpoint")
        raise ValueError(f"{name} has {width}-wide embeddings but {needs}")
    if is_wan(config) and emb.shape[1] > config.dit.text_len:
        raise ValueError(f"{name} has {emb.shape[1]} tokens; Wan reads at most {config.dit.text_len}: shorten the prompt")
    if ours:
        return emb, extra["sora_mask"], extra.get("sora_text", "")
    return emb, torch.ones(1, emb.shape[1], dtype=torch.bool, device=emb.device), None


def _describe(value) -> str:
    if isinstance(value, list) and value and isinstance(value[0], (list, tuple)) and value[0] \
            and isinstance(value[0][0], torch.Tensor):
        return f"embeddings of shape {tuple(value[0][0].shape)}"
    return type(value).__name__
