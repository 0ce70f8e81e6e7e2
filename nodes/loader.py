"""Sora Model Loader: one checkpoint -> the DiT, its text encoder and its 3D VAE."""

from __future__ import annotations

import os

import torch

from sora_core.checkpoint import load_checkpoint, read_metadata
from sora_core.preview import fit_latent_rgb, latent_rgb_from_metadata

from . import host

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

_fitted_rgb: dict = {}  # (path, mtime, size) -> LatentRGB: fitting takes a second, loading happens often


def _latent_rgb(path, model):
    stored = latent_rgb_from_metadata(read_metadata(path), model.config.vae.latent_channels)
    if stored is not None:
        return stored
    stat = os.stat(path)
    key = (str(path), stat.st_mtime_ns, stat.st_size)
    if key not in _fitted_rgb:
        _fitted_rgb[key] = fit_latent_rgb(model.vae)
    return _fitted_rgb[key]


class SoraModelLoader:
    DESCRIPTION = ("Loads a Sora checkpoint (.safetensors) and gives its three networks: the DiT that generates "
                   "video latents, its text encoder and its 3D VAE. Like Load Checkpoint, for Sora models.")
    CATEGORY = "Sora/loaders"
    FUNCTION = "load"
    RETURN_TYPES = ("SORA_DIT", "SORA_TEXT_ENCODER", "SORA_VAE")
    RETURN_NAMES = ("model", "text_encoder", "vae")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "ckpt_name": (host.model_names(), {"tooltip": (
                f"A Sora checkpoint from models/{host.MODEL_FOLDER}. The default model "
                f"{host.DEFAULT_MODEL_NAME} ships with the node pack and is listed without copying.")}),
            "dtype": (["auto", *DTYPES], {"default": "auto", "tooltip": (
                "Weight type of the DiT. auto = float32 on CPU, bfloat16 on GPUs that support it. "
                "The VAE and text encoder stay float32 (they are small).")}),
            "device": (["default", "cpu"], {"default": "default", "tooltip": (
                "default = ComfyUI's device with its usual offloading; cpu = keep all three networks on the CPU.")}),
        }}

    @classmethod
    def IS_CHANGED(cls, ckpt_name, dtype, device):
        try:
            return os.stat(host.model_path(ckpt_name)).st_mtime_ns  # reload when the file is replaced
        except (OSError, ValueError):
            return ""

    def load(self, ckpt_name, dtype, device):
        path = host.model_path(ckpt_name)
        model = load_checkpoint(path)
        rgb = _latent_rgb(path, model)
        prefer_cpu = device == "cpu"
        dit_device, _ = host.devices("dit", prefer_cpu)
        dit_dtype = host.auto_dtype(dit_device) if dtype == "auto" else DTYPES[dtype]
        kw = {"prefer_cpu": prefer_cpu, "latent_rgb": rgb, "path": str(path)}
        return (
            host.host_part(model.dit.to(dit_dtype), model.config, "dit", preview_vae=model.vae, **kw),
            host.host_part(model.text, model.config, "text", **kw),
            host.host_part(model.vae, model.config, "vae", **kw),
        )
