"""Loaders: Sora Model Loader (one Sora checkpoint -> its DiT, text encoder and 3D VAE) and one loader
per part, which list ComfyUI's own folders (Wan 2.1 / 2.2 files where artists keep them) and take a
Sora checkpoint too (giving that part of it)."""

from __future__ import annotations

import dataclasses
import os

import torch

from sora_core.checkpoint import load_checkpoint, read_metadata
from sora_core.preview import fit_latent_rgb, latent_rgb_from_metadata
from sora_core.wan import files
from sora_core.wan.dit import FAMILY_RECIPE, WanConfig, WanDiTConfig, load_wan_dit
from sora_core.wan.umt5 import load_umt5
from sora_core.wan.vae import WAN21_VAE, WAN22_VAE, load_wan_vae

from . import host

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
WEIGHT_DTYPES = {  # weight_dtype -> (cast the weights to, fast fp8 matmuls), as core's Load Diffusion Model
    "default": (None, False), "fp8_e4m3fn": (torch.float8_e4m3fn, False), "fp8_e4m3fn_fast": (torch.float8_e4m3fn, True),
    "fp8_e5m2": (torch.float8_e5m2, False), **{name: (DTYPES[name], False) for name in ("bfloat16", "float16", "float32")},
}
DEVICE = (["default", "cpu"], {"default": "default", "tooltip": (
    "default = ComfyUI's device with its usual offloading; cpu = keep this network on the CPU.")})
WAN_VAES = {16: WAN21_VAE, 48: WAN22_VAE}  # a DiT's latent channels -> its family's VAE
# per loader kind: the file component it takes, its node, what the folder's files should be
PARTS = {
    "dit": ("diffusion_model", "Sora Load Diffusion Model", "diffusion_models (or unet)",
            "a Wan 2.1 / 2.2 diffusion model such as wan2.1_t2v_1.3B_fp16.safetensors or wan2.2_ti2v_5B_fp16.safetensors"),
    "vae": ("vae", "Sora Load VAE 3D", "vae", "a Wan VAE: wan_2.1_vae.safetensors or wan2.2_vae.safetensors"),
    "text": ("text_encoder", "Sora Load Text Encoder", "text_encoders (or clip)",
             "umt5-xxl with its tokenizer inside, as ComfyUI's umt5_xxl_fp8_e4m3fn_scaled.safetensors has it"),
}

_fitted_rgb: dict = {}  # (path, mtime, size) -> LatentRGB: fitting takes a second, loading happens often


def _latent_rgb(path, model):
    stored = latent_rgb_from_metadata(read_metadata(path), model.config.vae.latent_channels)
    if stored is not None:
        return stored
    if model.vae is None:
        return None
    stat = os.stat(path)
    key = (str(path), stat.st_mtime_ns, stat.st_size)
    if key not in _fitted_rgb:
        _fitted_rgb[key] = fit_latent_rgb(model.vae)
    return _fitted_rgb[key]


def _mtime(name: str, kind: str) -> int | str:
    try:
        return os.stat(host.model_path(name, kind)).st_mtime_ns  # reload when the file is replaced
    except (OSError, ValueError):
        return ""


def _sora_parts(path, ident: files.Identity, kinds: tuple[str, ...], dtype: str, device: str) -> list[host.SoraPart]:
    """Parts of a Sora checkpoint (`dtype`: auto or a DTYPES name, for the DiT only)."""
    stored = ident.variant.split(",")  # a checkpoint's identity names the parts it holds
    missing = [k for k in kinds if k not in stored]
    if missing:
        raise ValueError(f"the Sora checkpoint {str(path)!r} holds only {', '.join(stored)}; it has no {missing[0]}")
    with_vae = "dit" in kinds and "vae" in stored  # the DiT's live previews use its VAE
    model = load_checkpoint(path, parts=tuple(k for k in ("vae", "text", "dit") if k in kinds or k == "vae" and with_vae))
    rgb = _latent_rgb(path, model) if "dit" in kinds else None
    prefer_cpu = device == "cpu"
    kw = {"prefer_cpu": prefer_cpu, "latent_rgb": rgb, "path": str(path)}
    parts = []
    for kind in kinds:
        module = getattr(model, kind)
        if kind == "dit":
            module = module.to(host.auto_dtype(host.devices("dit", prefer_cpu)[0]) if dtype == "auto" else DTYPES[dtype])
        parts.append(host.host_part(module, model.config, kind, preview_vae=model.vae if kind == "dit" else None, **kw))
    return parts


def _open(kind: str, name: str, input_name: str):
    """(path, identity) of the file a loader was given: a Sora checkpoint, or the loader's Wan component.
    A file of another kind or family is named, with the folder it sits in and what was expected."""
    path = host.model_path(name, kind, input_name)
    component, node_name, folder, expected = PARTS[kind]
    found = []
    try:
        found = files.identify_all(files.read_header(path))
        if found[0].kind == "checkpoint":
            return path, found[0]
        return path, files.open_component(path, component)[1]
    except ValueError as err:
        elsewhere = [node for k, (c, node, _, _) in PARTS.items() if k != kind and any(f.kind == c for f in found)]
        hint = f" It belongs in {elsewhere[0]}." if elsewhere else ""
        raise ValueError(f"{input_name}={name!r} is not what {node_name} takes from {folder}: {expected}, or a Sora "
                         f"checkpoint. {err}{hint}") from None


def _hosted_wan(module, config, kind: str, path, device: str) -> host.SoraPart:
    return host.host_part(module, config, kind, prefer_cpu=device == "cpu", path=str(path),
                          partial=kind != "vae")


def _family_config(channels: int, what: str) -> tuple[str, object]:
    """(variant, VAE config) of the Wan family that works in `channels` latent channels."""
    if channels not in WAN_VAES:
        raise ValueError(f"{what} works in {channels} latent channels; Wan's VAEs have 16 (2.1) or 48 (2.2)")
    return FAMILY_RECIPE[channels], WAN_VAES[channels]


class SoraDiffusionModelLoader:
    DESCRIPTION = ("Loads a diffusion model for the Sora nodes: a Wan 2.1 / 2.2 file from models/diffusion_models "
                   "(or unet), as core's Load Diffusion Model does, or the DiT of a Sora checkpoint. Wan models run "
                   "under ComfyUI's memory manager and load only partly when VRAM is short.")
    CATEGORY = "Sora/loaders"
    FUNCTION = "load"
    RETURN_TYPES = ("SORA_DIT",)
    RETURN_NAMES = ("model",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model_name": (host.model_names("dit"), {"tooltip": (
                "A Wan 2.1 / 2.2 text-to-video or TI2V diffusion model (models/diffusion_models or models/unet), or a "
                f"Sora checkpoint (models/{host.MODEL_FOLDER}; {host.DEFAULT_MODEL_NAME} ships with the pack).")}),
            "weight_dtype": (list(WEIGHT_DTYPES), {"default": "default", "tooltip": (
                "default = as stored (fp8 files stay fp8). fp8_*: Wan weights cast to fp8 at load (half the memory "
                "of fp16); _fast also multiplies in fp8 on GPUs that can, else as fp8_e4m3fn. bfloat16 / float16 / "
                "float32: weights cast at load (an fp8 file stays fp8).")}),
            "device": DEVICE,
        }}

    @classmethod
    def IS_CHANGED(cls, model_name, weight_dtype, device):
        return _mtime(model_name, "dit")

    def load(self, model_name, weight_dtype, device):
        if weight_dtype not in WEIGHT_DTYPES:
            raise ValueError(f"weight_dtype={weight_dtype!r} is not allowed; use one of {list(WEIGHT_DTYPES)}")
        path, ident = _open("dit", model_name, "model_name")
        if ident.kind == "checkpoint":
            if weight_dtype.startswith("fp8"):
                raise ValueError(f"weight_dtype={weight_dtype!r} is for Wan diffusion models; the Sora checkpoint "
                                 f"{model_name!r} runs in default, bfloat16, float16 or float32")
            return tuple(_sora_parts(path, ident, ("dit",), "auto" if weight_dtype == "default" else weight_dtype, device))
        variant, vae_config = _family_config(ident.config["in_channels"], f"{model_name!r} ({ident.variant})")
        dtype, fast = WEIGHT_DTYPES[weight_dtype]
        load_device = host.devices("dit", device == "cpu")[0]
        module = load_wan_dit(path, dtype=dtype, ops=host.layer_ops(load_device, fast))
        module.compute_dtype = host.wan_compute_dtype(module.blocks[0].ffn[0].weight.dtype, load_device)
        config = WanConfig(WanDiTConfig(**ident.config), vae_config, ident.variant)
        return (_hosted_wan(module, config, "dit", path, device),)


class SoraVAELoader:
    DESCRIPTION = ("Loads a 3D (video) VAE for the Sora nodes: a Wan VAE from models/vae (wan_2.1_vae for Wan 2.1 "
                   "and the 14B models, wan2.2_vae for Wan 2.2 TI2V-5B), or the VAE of a Sora checkpoint.")
    CATEGORY = "Sora/loaders"
    FUNCTION = "load"
    RETURN_TYPES = ("SORA_VAE",)
    RETURN_NAMES = ("vae",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "vae_name": (host.model_names("vae"), {"tooltip": (
                "A Wan VAE from models/vae, or a Sora checkpoint (its VAE).")}),
            "device": DEVICE,
        }}

    @classmethod
    def IS_CHANGED(cls, vae_name, device):
        return _mtime(vae_name, "vae")

    def load(self, vae_name, device):
        path, ident = _open("vae", vae_name, "vae_name")
        if ident.kind == "checkpoint":
            return tuple(_sora_parts(path, ident, ("vae",), "auto", device))
        module = load_wan_vae(path, dtype=host.vae_dtype(host.devices("vae", device == "cpu")[0]))
        variant, _ = _family_config(module.config.z_dim, f"{vae_name!r}")
        config = WanConfig(WanDiTConfig.released(variant), module.config, variant)  # the family's, until a DiT meets it
        return (_hosted_wan(module, config, "vae", path, device),)


class SoraTextEncoderLoader:
    DESCRIPTION = ("Loads a text encoder for the Sora nodes: umt5-xxl for Wan from models/text_encoders (or clip), "
                   "as core's Load CLIP (type wan) reads it, or the text encoder of a Sora checkpoint. Connect it "
                   "to Sora Text Encode.")
    CATEGORY = "Sora/loaders"
    FUNCTION = "load"
    RETURN_TYPES = ("SORA_TEXT_ENCODER",)
    RETURN_NAMES = ("text_encoder",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "text_encoder_name": (host.model_names("text"), {"tooltip": (
                "umt5-xxl (e.g. umt5_xxl_fp8_e4m3fn_scaled.safetensors, which holds its tokenizer) from "
                "models/text_encoders or models/clip, or a Sora checkpoint (its text encoder).")}),
            "device": DEVICE,
        }}

    @classmethod
    def IS_CHANGED(cls, text_encoder_name, device):
        return _mtime(text_encoder_name, "text")

    def load(self, text_encoder_name, device):
        path, ident = _open("text", text_encoder_name, "text_encoder_name")
        if ident.kind == "checkpoint":
            return tuple(_sora_parts(path, ident, ("text",), "auto", device))
        if not ident.config["spiece_model"]:
            raise ValueError(f"text_encoder_name={text_encoder_name!r} holds no tokenizer (a `spiece_model` tensor); "
                             f"use ComfyUI's repackaged umt5 file (umt5_xxl_fp8_e4m3fn_scaled.safetensors or "
                             f"umt5_xxl_fp16.safetensors), which carries it")
        module = load_umt5(path, ops=host.layer_ops(host.devices("text", device == "cpu")[0]))
        base = WanDiTConfig.released(FAMILY_RECIPE[16])
        config = WanConfig(dataclasses.replace(base, text_dim=module.config.dim), WAN21_VAE, ident.variant)
        return (_hosted_wan(module, config, "text", path, device),)


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
        return _mtime(ckpt_name, host.MODEL_FOLDER)

    def load(self, ckpt_name, dtype, device):
        path = host.model_path(ckpt_name)
        ident = files.identify_all(files.read_header(path))[0]
        if ident.kind != "checkpoint":
            raise ValueError(f"ckpt_name={ckpt_name!r} is {ident.label()}, not a Sora checkpoint; load Wan files with "
                             f"{', '.join(node for _, node, _, _ in PARTS.values())}")
        return tuple(_sora_parts(path, ident, ("dit", "text", "vae"), dtype, device))
