"""The one adapter between the Sora nodes and the ComfyUI host.

Everything the nodes need from ComfyUI goes through here: devices and model offloading
(ModelPatcher + load_models_gpu), progress bars, cancel checks, latent previews, the
`sora` model folder and the output / input folders the save nodes use. Outside ComfyUI (tests, scripts) the imports fail and each function
falls back to plain torch on the CPU with no progress display, so the nodes still run.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath

import torch
import torch.nn as nn

from sora_core.config import SoraConfig
from sora_core.pipeline import DEFAULT_MODEL
from sora_core.preview import LatentRGB

try:
    import comfy.model_management as mm
    import comfy.model_patcher
    import comfy.utils
    import folder_paths
    import latent_preview
    from comfy.cli_args import LatentPreviewMethod
    from comfy.latent_formats import LatentFormat

    IN_COMFYUI = True
except ImportError:
    IN_COMFYUI = False

MODEL_FOLDER = "sora"
SHIPPED_MODELS_DIR = DEFAULT_MODEL.parent
DEFAULT_MODEL_NAME = DEFAULT_MODEL.name
CPU = torch.device("cpu")


# -- devices ----------------------------------------------------------------------------------

_DEVICES = {  # kind -> (load device, offload device) getters, as core uses them for its own models
    "dit": ("get_torch_device", "unet_offload_device"),
    "text": ("text_encoder_device", "text_encoder_offload_device"),
    "vae": ("vae_device", "vae_offload_device"),
}


def devices(kind: str, prefer_cpu: bool = False) -> tuple[torch.device, torch.device]:
    """(load device, offload device) for a model part."""
    if prefer_cpu or not IN_COMFYUI:
        return CPU, CPU
    load, offload = _DEVICES[kind]
    return getattr(mm, load)(), getattr(mm, offload)()


def intermediate_device() -> torch.device:
    """Where node outputs (IMAGE, LATENT, CONDITIONING) live between nodes."""
    return mm.intermediate_device() if IN_COMFYUI else CPU


def auto_dtype(device: torch.device) -> torch.dtype:
    """float32 on CPUs; bfloat16 on accelerators that run it fast (the DiT only)."""
    if IN_COMFYUI and mm.should_use_bf16(device):
        return torch.bfloat16
    return torch.float32


# -- hosted models ----------------------------------------------------------------------------

class _Holder(nn.Module):
    """ModelPatcher writes bookkeeping attributes (`device`, ...) onto the module it manages;
    a holder keeps them off our own classes."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner


@dataclass
class SoraPart:
    """What travels on a SORA_DIT / SORA_TEXT_ENCODER / SORA_VAE wire: one network, its model's
    config and, inside ComfyUI, the ModelPatcher that moves it between devices."""

    module: nn.Module
    config: SoraConfig
    kind: str
    latent_rgb: LatentRGB | None = None
    patcher: object = None
    path: str | None = None  # the checkpoint file, for the save nodes' C2PA manifest
    preview_vae: nn.Module | None = None  # the DiT's: decodes live previews with --preview-method taesd

    def load(self) -> nn.Module:
        """The network, on its compute device (ComfyUI may first offload other models to make room)."""
        if self.patcher is not None:
            # Full load: partial ("lowvram") loading only works for layers built from comfy.ops.
            mm.load_models_gpu([self.patcher], force_full_load=True)
        return self.module

    @property
    def device(self) -> torch.device:
        return next(self.module.parameters()).device

    @property
    def compute_device(self) -> torch.device:
        """Where the network runs: inside ComfyUI the patcher's load device, else where it is."""
        return self.patcher.load_device if self.patcher is not None else self.device


def host_part(module: nn.Module, config: SoraConfig, kind: str, *, prefer_cpu: bool = False,
              latent_rgb: LatentRGB | None = None, path: str | None = None,
              preview_vae: nn.Module | None = None) -> SoraPart:
    load, offload = devices(kind, prefer_cpu)
    module = module.to(offload).eval()
    patcher = None
    if IN_COMFYUI:
        patcher = comfy.model_patcher.ModelPatcher(_Holder(module), load_device=load, offload_device=offload)
    return SoraPart(module, config, kind, latent_rgb, patcher, path, preview_vae)


# -- progress, cancel, previews -----------------------------------------------------------------

class Progress:
    """ComfyUI's progress bar on the running node; silent outside ComfyUI."""

    def __init__(self, total: int):
        self.bar = comfy.utils.ProgressBar(total) if IN_COMFYUI else None

    def update(self, value: int, total: int | None = None, preview=None) -> None:
        if self.bar is not None:
            self.bar.update_absolute(value, total, preview)


def check_interrupted() -> None:
    """Raise ComfyUI's interrupt exception if the user pressed Cancel."""
    if IN_COMFYUI:
        mm.throw_exception_if_processing_interrupted()


if IN_COMFYUI:
    class SoraLatentFormat(LatentFormat):
        """Tells ComfyUI's Latent2RGB previewer how to colour our latents."""

        latent_dimensions = 3

        def __init__(self, config: SoraConfig, rgb: LatentRGB):
            self.latent_channels = config.vae.latent_channels
            self.spacial_downscale_ratio = config.vae.spatial_factor
            self.temporal_downscale_ratio = config.vae.temporal_factor
            self.latent_rgb_factors = rgb.factors
            self.latent_rgb_factors_bias = rgb.bias


def previewer(part: SoraPart):
    """A function latent (B, C, 1, h, w) -> preview image for the progress bar, or None when
    previews are off (ComfyUI's --preview-method none), unavailable, or outside ComfyUI.

    latent2rgb / auto: ComfyUI's linear colour map (fast, approximate: a linear map cannot follow
    the decoder closely). taesd: the frame decoded by the model's own VAE (exact colours, one
    frame's decode per step); core has no TAESD for Sora latents, so this takes its place."""
    if not IN_COMFYUI:
        return None
    method = latent_preview.args.preview_method  # the server's, or this prompt's override
    if method == LatentPreviewMethod.NoPreviews:
        return None
    if method == LatentPreviewMethod.TAESD and part.preview_vae is not None:
        vae = part.preview_vae
        return lambda x0: ("JPEG", _decoded_preview(vae, x0), latent_preview.MAX_PREVIEW_RESOLUTION)
    if part.latent_rgb is None:
        return None
    impl = latent_preview.get_previewer(part.device, SoraLatentFormat(part.config, part.latent_rgb))
    if impl is None:
        return None
    return lambda x0: impl.decode_latent_to_preview_image("JPEG", x0)


@torch.no_grad()
def _decoded_preview(vae: nn.Module, x0: torch.Tensor):
    param = next(vae.parameters())
    frame = vae.decode(x0[:1, :, :1].to(param.device, param.dtype)).float()[0, :, 0]  # (3, H, W) in [-1, 1]
    return latent_preview.preview_to_image(frame.movedim(0, -1))


# -- model files --------------------------------------------------------------------------------

def register_model_folder() -> None:
    """models/sora, plus the folder of the shipped default model so it is listed without copying."""
    if not IN_COMFYUI:
        return
    folder_paths.add_model_folder_path(MODEL_FOLDER, os.path.join(folder_paths.models_dir, MODEL_FOLDER), is_default=True)
    folder_paths.add_model_folder_path(MODEL_FOLDER, str(SHIPPED_MODELS_DIR))
    paths = folder_paths.folder_names_and_paths[MODEL_FOLDER][0]
    folder_paths.folder_names_and_paths[MODEL_FOLDER] = (paths, {".safetensors"})


def model_dirs() -> list[Path]:
    if IN_COMFYUI:
        return [Path(p) for p in folder_paths.get_folder_paths(MODEL_FOLDER)]
    return [SHIPPED_MODELS_DIR]


def model_names() -> list[str]:
    """Checkpoint names for the loader; the default is always listed, so a missing file gets a clear error."""
    if IN_COMFYUI:
        names = folder_paths.get_filename_list(MODEL_FOLDER)
    else:
        names = sorted(p.name for p in SHIPPED_MODELS_DIR.glob("*.safetensors"))
    return [DEFAULT_MODEL_NAME] + [n for n in names if n != DEFAULT_MODEL_NAME]


def model_path(name: str) -> Path:
    """The file for a loader name. SORA_MODEL, when set, replaces the default model."""
    if name == DEFAULT_MODEL_NAME and os.environ.get("SORA_MODEL"):
        path = Path(os.environ["SORA_MODEL"])
        if not path.is_file():
            raise FileNotFoundError(f"SORA_MODEL={str(path)!r} does not exist; unset it or point it at a .safetensors file")
        return path
    _check_name(name, "ckpt_name")
    if IN_COMFYUI:
        found = folder_paths.get_full_path(MODEL_FOLDER, name)
        if found:
            return Path(found)
    else:
        candidate = SHIPPED_MODELS_DIR / name
        if candidate.is_file():
            return candidate
    folders = " or ".join(repr(str(d)) for d in model_dirs())
    raise FileNotFoundError(f"Sora checkpoint {name!r} was not found; put the .safetensors file in {folders}")


def _check_name(name: str, what: str) -> None:
    """A name inside one of our folders: relative, no '..', so it can never reach outside them."""
    parts = PurePosixPath(str(name).replace("\\", "/")).parts
    if not isinstance(name, str) or not name.strip() or os.path.isabs(name) or PureWindowsPath(name).drive \
            or (parts and parts[0] == "/") or ".." in parts:
        raise ValueError(f"{what}={name!r} is not allowed: give a file name inside the folder, without '..' "
                         f"or an absolute path")


# -- output and input files ---------------------------------------------------------------------

OUTPUT_DIR = Path("output")  # outside ComfyUI only


def output_file(prefix: str, width: int, height: int, ext: str) -> tuple[Path, dict]:
    """A new file in ComfyUI's output folder, named like core's save nodes name theirs
    (`prefix_00001_.ext`, %date%-style prefixes included), and its entry for the node's UI preview."""
    if IN_COMFYUI:
        folder, name, counter, subfolder, _ = folder_paths.get_save_image_path(
            prefix, folder_paths.get_output_directory(), width, height)
    else:
        _check_name(prefix, "filename_prefix")  # core's get_save_image_path refuses these inside ComfyUI
        subfolder, name = os.path.split(os.path.normpath(prefix))
        folder = OUTPUT_DIR / subfolder
        folder.mkdir(parents=True, exist_ok=True)
        taken = [p.name[len(name) + 1:].split("_")[0] for p in folder.glob(f"{name}_*_.*")]
        counter = 1 + max((int(t) for t in taken if t.isdigit()), default=0)
    file = f"{name}_{counter:05}_{ext}"
    return Path(folder) / file, {"filename": file, "subfolder": subfolder, "type": "output"}


def input_file(name: str) -> Path:
    """A file named like LoadImage names them: in ComfyUI's input folder, or `name [output]` / `[temp]`."""
    if IN_COMFYUI:
        return Path(folder_paths.get_annotated_filepath(name))
    if name.endswith(" [output]"):  # what the save nodes' `files` output gives
        return OUTPUT_DIR / name[:-len(" [output]")]
    return Path(name)
