"""Checkpoints: safetensors only, with the model's config in the metadata.

A checkpoint rebuilds itself from its own metadata, so loading needs no side files. Pickle
formats (.ckpt/.pt/.pth/.bin) are refused without being opened: unpickling runs code.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
import torch.nn as nn
from safetensors import safe_open
from safetensors.torch import save_file

from .config import SoraConfig
from .dit import DiT
from .fsutil import atomic_write
from .text import HashTextEncoder
from .vae import VideoVAE

FORMAT = "sora-nodes/1"
PICKLE_SUFFIXES = {".ckpt", ".pt", ".pth", ".bin", ".pkl", ".pickle"}


class SoraModel(nn.Module):
    """The three networks of one model: VAE, text encoder and DiT. A checkpoint may hold a subset."""

    def __init__(self, config: SoraConfig, parts: tuple[str, ...] = ("vae", "text", "dit")):
        super().__init__()
        config.validate()
        self.config = config
        self.vae = VideoVAE(config.vae) if "vae" in parts else None
        self.text = HashTextEncoder(config.text) if "text" in parts else None
        self.dit = DiT(config.dit) if "dit" in parts else None

    @property
    def parts(self) -> tuple[str, ...]:
        return tuple(p for p in ("vae", "text", "dit") if getattr(self, p) is not None)


def save_checkpoint(model: SoraModel, path: str | os.PathLike, *, dtype: torch.dtype | None = None,
                    extra: dict | None = None) -> None:
    """Write every part of `model` to a .safetensors file (written to a temp file, then renamed)."""
    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"checkpoint path {str(path)!r} must end in .safetensors")
    tensors = {}
    for name, value in model.state_dict().items():
        value = value.detach().cpu()
        if dtype is not None and value.is_floating_point():
            value = value.to(dtype)
        tensors[name] = value.contiguous()
    metadata = {"format": FORMAT, "config": model.config.to_json(), "parts": ",".join(model.parts)}
    if extra:
        metadata["extra"] = json.dumps(extra, sort_keys=True)
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))


def read_metadata(path: str | os.PathLike) -> dict:
    """The checkpoint's metadata, after refusing anything that is not a sora-nodes safetensors file."""
    path = Path(path)
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise ValueError(
            f"refusing to load {str(path)!r}: {path.suffix} files are Python pickles, which can run "
            f"arbitrary code when opened. Convert it to .safetensors first."
        )
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
    except Exception as err:  # noqa: BLE001 - safetensors raises several types for a bad header
        raise ValueError(f"{str(path)!r} is not a readable .safetensors file: {err}") from err
    if metadata.get("format") != FORMAT or "config" not in metadata:
        raise ValueError(
            f"{str(path)!r} is not a sora-nodes checkpoint (metadata format={metadata.get('format')!r}, "
            f"expected {FORMAT!r} with a 'config' entry)"
        )
    return metadata


def load_checkpoint(path: str | os.PathLike, *, device: str | torch.device = "cpu",
                    dtype: torch.dtype | None = None, parts: tuple[str, ...] | None = None) -> SoraModel:
    """Rebuild a SoraModel from a checkpoint, checking every tensor's name and shape."""
    metadata = read_metadata(path)
    try:
        config = SoraConfig.from_json(metadata["config"])
    except (ValueError, TypeError) as err:
        raise ValueError(f"{str(path)!r} has an invalid config in its metadata: {err}") from err
    stored = tuple(p for p in metadata.get("parts", "vae,text,dit").split(",") if p)
    wanted = stored if parts is None else parts
    missing_parts = set(wanted) - set(stored)
    if missing_parts:
        raise ValueError(f"{str(path)!r} holds parts {stored}; it has no {sorted(missing_parts)}")
    # Shapes first, from the header and a weightless (meta) model: metadata that lies about sizes
    # (a DiT 65536 wide in a small file) is refused before a single weight is allocated.
    with torch.device("meta"):
        model = SoraModel(config, wanted)
    expected = model.state_dict()
    problems = []
    with safe_open(str(path), framework="pt") as f:
        keys = set(f.keys())
        for name, ref in expected.items():
            if name not in keys:
                problems.append(f"missing {name}")
                continue
            shape = tuple(f.get_slice(name).get_shape())
            if shape != tuple(ref.shape):
                problems.append(f"{name}: file has {shape}, config expects {tuple(ref.shape)}")
        wanted_prefixes = tuple(p + "." for p in wanted)
        unexpected = sorted(k for k in keys - set(expected) if k.startswith(wanted_prefixes))
        problems += [f"unexpected {k}" for k in unexpected]
        if problems:
            shown = "; ".join(problems[:8]) + (f"; ... {len(problems) - 8} more" if len(problems) > 8 else "")
            raise ValueError(f"{str(path)!r} does not match its config: {shown}")
        state = {name: f.get_tensor(name) for name in expected}
    if "vae.latent_std" in state and not bool((state["vae.latent_std"] > 0).all()):
        raise ValueError(f"{str(path)!r} has a zero or negative vae.latent_std {state['vae.latent_std'].flatten().tolist()}; "
                         f"latents are divided by it, so the checkpoint is broken")
    model.load_state_dict(state, assign=True)  # the file's tensors become the weights: no second copy
    # Shipped weights may be fp16 to stay small; compute in float32 unless asked otherwise.
    return model.to(device=device, dtype=dtype or torch.float32).eval()
