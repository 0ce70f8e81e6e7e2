"""The one adapter between the Sora nodes and the ComfyUI host.

Everything the nodes need from ComfyUI goes through here: devices and model offloading
(ModelPatcher + load_models_gpu, partial "lowvram" loading of Wan models built from comfy.ops
layers), progress bars, cancel checks, latent previews, the model folders the loaders list
(core's diffusion_models / vae / text_encoders and our `sora`) and the output / input folders the
save nodes use. Outside ComfyUI (tests, scripts) the imports fail and each function falls back to
plain torch on the CPU with no progress display, so the nodes still run; the loaders then list the
folders of a ComfyUI-style `models/` folder named by SORA_COMFY_MODELS, and the shipped model.
"""

from __future__ import annotations

import functools
import logging
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath
from types import SimpleNamespace

import torch
import torch.nn as nn
import torch.nn.functional as F

from sora_core.config import SoraConfig
from sora_core.wan.dit import WanConfig
from sora_core.pipeline import DEFAULT_MODEL
from sora_core.preview import LatentRGB
from sora_core.wan import ops as wan_ops

try:
    import comfy.latent_formats
    import comfy.model_management as mm
    import comfy.model_patcher
    import comfy.ops
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


WAN_DTYPES = [torch.float16, torch.bfloat16, torch.float32]  # what core runs Wan DiTs and VAEs in


def wan_compute_dtype(weight_dtype: torch.dtype, device: torch.device) -> torch.dtype | None:
    """The dtype a Wan DiT with weights of `weight_dtype` computes in on `device`, as core picks it for
    its own Wan models (float32 on CPUs); None: the weights' own (bfloat16 for fp8 weights)."""
    if IN_COMFYUI:
        return mm.unet_manual_cast(weight_dtype, device, WAN_DTYPES)
    return torch.float32 if device.type == "cpu" else None


def vae_dtype(device: torch.device) -> torch.dtype:
    """The dtype a Wan VAE runs in on `device`, as core picks it (float32 outside ComfyUI)."""
    return mm.vae_dtype(device, [torch.bfloat16, torch.float16, torch.float32]) if IN_COMFYUI else torch.float32


# -- layers for partial loading ------------------------------------------------------------------

def layer_ops(device: torch.device, fast_fp8: bool = False):
    """The layer classes a Wan DiT / text encoder is built from (sora_core.wan.ops' contract): inside
    ComfyUI, comfy.ops classes, which ModelPatcher can leave on the offload device and cast on the fly
    (lowvram); fp8 matmuls (`fast_fp8`) where `device` runs them. Outside ComfyUI, plain torch."""
    if not IN_COMFYUI:
        return wan_ops.TORCH
    if fast_fp8 and not mm.supports_fp8_compute(device):
        logging.info("Sora: %s has no fast fp8 matmul; fp8 weights are cast to the compute dtype instead", device)
        fast_fp8 = False
    return _comfy_layers(comfy.ops.fp8_ops if fast_fp8 else comfy.ops.manual_cast)


@functools.cache
def _comfy_layers(base) -> SimpleNamespace:
    """`base`'s layers (manual_cast: weights cast to the input's dtype and device at each call), plus the
    per-tensor `weight_scale` of scaled fp8 files on Linear and Embedding."""

    class Linear(base.Linear):
        # Our own state-dict loading (weights assigned on the meta device): core's lazy path, taken
        # under DynamicVRAM for its own loaders, would leave them None.
        _load_from_state_dict = nn.Module._load_from_state_dict

        def __init__(self, in_features: int, out_features: int, bias: bool = True):
            super().__init__(in_features, out_features, bias)
            self.register_buffer("weight_scale", None)

        def forward_comfy_cast_weights(self, input):
            if self.weight_scale is None:
                return super().forward_comfy_cast_weights(input)
            with comfy.ops.CastBiasWeightContext(self, input, offloadable=True) as (weight, bias):
                return F.linear(input, weight * self.weight_scale.to(weight), bias)

    class Embedding(base.Embedding):
        _load_from_state_dict = nn.Module._load_from_state_dict

        def __init__(self, num_embeddings: int, embedding_dim: int):
            super().__init__(num_embeddings, embedding_dim)
            self.register_buffer("weight_scale", None)

        def forward_comfy_cast_weights(self, ids, out_dtype=None):
            # rows gathered in the stored dtype, then cast: never the whole table in fp32
            with comfy.ops.CastBiasWeightContext(self, device=ids.device, offloadable=True) as (weight, _):
                rows = F.embedding(ids, weight)
            rows = rows.to(out_dtype or rows.dtype)
            return rows if self.weight_scale is None else rows * self.weight_scale.to(rows)

    return SimpleNamespace(Linear=Linear, Embedding=Embedding, Conv3d=base.Conv3d, LayerNorm=base.LayerNorm,
                           RMSNorm=base.RMSNorm)


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
    config (a SoraConfig, or a sora_core.wan.dit.WanConfig) and, inside ComfyUI, the ModelPatcher that
    moves it between devices."""

    module: nn.Module
    config: SoraConfig
    kind: str
    latent_rgb: LatentRGB | None = None
    patcher: object = None
    path: str | None = None  # the model file, for the save nodes' C2PA manifest
    preview_vae: nn.Module | None = None  # the DiT's: decodes live previews with --preview-method taesd
    partial: bool = False  # built from comfy.ops layers: ComfyUI may load it partially (lowvram)

    def load(self, memory_required: int = 0) -> nn.Module:
        """The network, on its compute device. ComfyUI first offloads other models to make room for it and
        for `memory_required` bytes of work (the budget's estimate), and loads a `partial` one only as far
        as that room allows: its other layers are cast onto the device when they run."""
        if self.patcher is not None:
            mm.load_models_gpu([self.patcher], memory_required=memory_required, force_full_load=not self.partial)
        return self.module

    @property
    def device(self) -> torch.device:
        """Where the network runs: inside ComfyUI the patcher's load device, else where it is."""
        return self.patcher.load_device if self.patcher is not None else next(self.module.parameters()).device

    @property
    def family(self) -> str:
        """"wan" for a Wan model's part, else "sora" (from the config, so it cannot disagree with it)."""
        return "wan" if isinstance(self.config, WanConfig) else "sora"


def load_parts(*parts: SoraPart) -> list[nn.Module]:
    """Several networks on their compute devices at once (loaded one by one, ComfyUI could offload the
    first to make room for the second); `partial` ones first, loaded as far as memory allows."""
    if IN_COMFYUI:
        for partial in (True, False):
            patchers = [p.patcher for p in parts if p.patcher is not None and p.partial == partial]
            if patchers:
                mm.load_models_gpu(patchers, force_full_load=not partial)
    return [p.module for p in parts]


def host_part(module: nn.Module, config, kind: str, *, prefer_cpu: bool = False,
              latent_rgb: LatentRGB | None = None, path: str | None = None,
              preview_vae: nn.Module | None = None, partial: bool = False) -> SoraPart:
    """`module` under ComfyUI's memory manager. A `partial` one (a Wan DiT or text encoder built from
    `layer_ops`) stays where its weights are (the mapped file, on the offload device) until ComfyUI
    loads it, and is told where it computes."""
    load, offload = devices(kind, prefer_cpu)
    module = module.to(offload).eval()  # a no-op for mapped weights on the CPU
    if partial:
        module.compute_device = load
    patcher = None
    if IN_COMFYUI:
        patcher = comfy.model_patcher.ModelPatcher(_Holder(module), load_device=load, offload_device=offload)
    return SoraPart(module, config, kind, latent_rgb, patcher, path, preview_vae, partial)


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

    Sora models: taesd and auto (core's "the best there is") show the frame decoded by the model's own
    VAE (exact colours, one frame's decode per step: small next to a DiT step), as core has no TAESD
    for Sora latents; latent2rgb is ComfyUI's linear colour map (fast, approximate, darker: a linear
    map cannot follow the decoder closely). Wan models: core's
    own previewer for its Wan21 / Wan22 latent format (its colour factors, or its lighttaew2 TAE when
    models/vae_approx has it). Core hands that previewer the sampler's x0 in the space its model
    works in, which is the normalised space (latent_format.process_in) our sampler's x0 is in too."""
    if not IN_COMFYUI:
        return None
    method = latent_preview.args.preview_method  # the server's, or this prompt's override
    if method == LatentPreviewMethod.NoPreviews:
        return None
    if part.family == "wan":
        fmt = comfy.latent_formats.Wan22() if part.config.vae.latent_channels == 48 else comfy.latent_formats.Wan21()
    elif method in (LatentPreviewMethod.TAESD, LatentPreviewMethod.Auto) and part.preview_vae is not None:
        vae = part.preview_vae
        return lambda x0: ("JPEG", _decoded_preview(vae, x0), latent_preview.MAX_PREVIEW_RESOLUTION)
    elif part.latent_rgb is not None:
        fmt = SoraLatentFormat(part.config, part.latent_rgb)
    else:
        return None
    impl = latent_preview.get_previewer(part.device, fmt)
    if impl is None:
        return None
    return lambda x0: impl.decode_latent_to_preview_image("JPEG", x0)


@torch.no_grad()
def _decoded_preview(vae: nn.Module, x0: torch.Tensor):
    param = next(vae.parameters())
    frame = vae.decode(x0[:1, :, :1].to(param.device, param.dtype)).float()[0, :, 0]  # (3, H, W) in [-1, 1]
    return latent_preview.preview_to_image(frame.movedim(0, -1))


# -- model files --------------------------------------------------------------------------------

# What each loader lists: core's folder (whose paths already include models/unet and models/clip),
# the subfolders of SORA_COMFY_MODELS outside ComfyUI, and what the files are called in messages.
FOLDERS = {
    "dit": ("diffusion_models", ("diffusion_models", "unet"), "diffusion model"),
    "vae": ("vae", ("vae",), "VAE"),
    "text": ("text_encoders", ("text_encoders", "clip"), "text encoder"),
    MODEL_FOLDER: (MODEL_FOLDER, (MODEL_FOLDER,), "Sora checkpoint"),
}
MODELS_ENV = "SORA_COMFY_MODELS"  # outside ComfyUI: a ComfyUI-style models/ folder
EXTENSIONS = (".safetensors", ".sft")  # outside ComfyUI; inside, core lists what its folders allow


def register_model_folder() -> None:
    """models/sora, plus the folder of the shipped default model so it is listed without copying."""
    if not IN_COMFYUI:
        return
    folder_paths.add_model_folder_path(MODEL_FOLDER, os.path.join(folder_paths.models_dir, MODEL_FOLDER), is_default=True)
    folder_paths.add_model_folder_path(MODEL_FOLDER, str(SHIPPED_MODELS_DIR))
    paths = folder_paths.folder_names_and_paths[MODEL_FOLDER][0]
    folder_paths.folder_names_and_paths[MODEL_FOLDER] = (paths, {".safetensors"})


def _kinds(kind: str) -> tuple[str, ...]:
    return (kind,) if kind == MODEL_FOLDER else (kind, MODEL_FOLDER)  # any loader also takes Sora checkpoints


def model_dirs(kind: str = MODEL_FOLDER) -> list[Path]:
    """The folders a loader of `kind` ("dit", "vae", "text" or "sora") lists, its own first."""
    if IN_COMFYUI:
        return [Path(p) for k in _kinds(kind) for p in folder_paths.get_folder_paths(FOLDERS[k][0])]
    root = os.environ.get(MODELS_ENV)
    own = [Path(root) / sub for k in _kinds(kind) for sub in FOLDERS[k][1]] if root else []
    return own + [SHIPPED_MODELS_DIR]


def model_names(kind: str = MODEL_FOLDER) -> list[str]:
    """File names (relative to their folder) a loader of `kind` offers; the default model is always listed
    first, so a missing file gets a clear error."""
    if IN_COMFYUI:
        names = [n for k in _kinds(kind) for n in folder_paths.get_filename_list(FOLDERS[k][0])]
    else:
        names = [p.relative_to(d).as_posix() for d in model_dirs(kind) if d.is_dir()
                 for p in sorted(d.rglob("*")) if p.suffix in EXTENSIONS and p.is_file()]
    return [DEFAULT_MODEL_NAME] + list(dict.fromkeys(n for n in names if n != DEFAULT_MODEL_NAME))


def model_path(name: str, kind: str = MODEL_FOLDER, input_name: str = "ckpt_name") -> Path:
    """The file for a loader name. SORA_MODEL, when set, replaces the default model."""
    if name == DEFAULT_MODEL_NAME and os.environ.get("SORA_MODEL"):
        path = Path(os.environ["SORA_MODEL"])
        if not path.is_file():
            raise FileNotFoundError(f"SORA_MODEL={str(path)!r} does not exist; unset it or point it at a .safetensors file")
        return path
    _check_name(name, input_name)
    if IN_COMFYUI:
        found = next(filter(None, (folder_paths.get_full_path(FOLDERS[k][0], name) for k in _kinds(kind))), None)
        if found:
            return Path(found)
    else:
        found = next((d / name for d in model_dirs(kind) if (d / name).is_file()), None)
        if found:
            return found
    folders = " or ".join(repr(str(d)) for d in model_dirs(kind))
    hint = "" if IN_COMFYUI or os.environ.get(MODELS_ENV) else f" (or set {MODELS_ENV} to a ComfyUI models folder)"
    raise FileNotFoundError(f"{FOLDERS[kind][2]} {name!r} was not found; put the .safetensors file in {folders}{hint}")


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
