"""The one place that reads model files: what a file is, from its header alone, and its tensors, mapped.

A safetensors file is an 8-byte little-endian header length, a JSON header (tensor name -> dtype,
shape, byte range, plus string metadata) and the raw data. The header alone tells the family,
variant, parameter count and dtypes of a 28 GB model. Loading maps the file once (private mapping:
pages come from the OS page cache on first touch, nothing is copied) and gives each tensor, in the
dtype it was stored in, to a module built on the meta device (`load_state_dict(assign=True)`). So a
14B bf16 file is never materialised in fp32 and never held twice: the mapping is the only copy
until a tensor is cast or moved to the GPU. (safetensors' own `get_tensor` maps in 0.8.0 but has
built each tensor from a copied buffer in other releases our requirements allow, see
vllm-project/vllm#42361, so the mapping is done here, the same way on every version.)

GGUF, pickles and unknown quantisations are refused by name before anything is loaded; nothing is
ever unpickled.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn

from ..checkpoint import FORMAT as CHECKPOINT_FORMAT
from ..checkpoint import read_metadata

DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}
WEIGHT_DTYPES = ("F32", "F16", "BF16", "F8_E4M3", "F8_E5M2")
FP8 = (torch.float8_e4m3fn, torch.float8_e5m2)
FORMATS = ("safetensors files with F32, F16, BF16 or F8_E4M3 / F8_E5M2 weights "
           "(plain, or ComfyUI's scaled fp8: a `scaled_fp8` marker with per-weight `scale_weight`)")
FAMILIES = ("Wan 2.1 / 2.2 diffusion models in the original Wan layout (1.3B / 14B text-to-video, "
            "2.2 TI2V-5B), Wan 2.1 / 2.2 VAEs, umt5-xxl text encoders, sora-nodes checkpoints")
KINDS = {"diffusion_model": "diffusion model", "vae": "VAE", "text_encoder": "text encoder",
         "checkpoint": "checkpoint"}
MAX_HEADER = 100 * 1024 * 1024  # real headers are a few MB; a bigger "length" means it is not safetensors
WAN_HEAD_DIM = 128  # every Wan release; heads are not stored in the file


# -- the header ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class TensorInfo:
    """One tensor's header entry; start/end are absolute byte offsets in the file."""
    dtype: str
    shape: tuple[int, ...]
    start: int
    end: int

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


@dataclass
class Header:
    """A safetensors header: every tensor's name, dtype, shape and place, and the metadata."""
    path: Path
    tensors: dict[str, TensorInfo]
    metadata: dict[str, str]
    size: int


def _refusal(head: bytes) -> str | None:
    """What a non-safetensors file is, from its first bytes (never parsed further)."""
    if head[:4] == b"GGUF":
        return "a GGUF file (llama.cpp's quantised format)"
    if head[:2] == b"PK":
        return "a zip archive (PyTorch's .pt/.pth/.ckpt format, which holds a Python pickle)"
    if head[:1] == b"\x80":
        return f"a Python pickle (protocol {head[1] if len(head) > 1 else '?'})"
    return None


def read_header(path) -> Header:
    """Parse the safetensors header of `path` without reading any tensor data."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model file {str(path)!r} does not exist")
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(9)
        n = int.from_bytes(head[:8], "little") if len(head) == 9 else -1
        if n < 2 or n > MAX_HEADER or 8 + n > size or head[8:] != b"{":
            refusal = _refusal(head)  # only now: a header length's first byte may well be 0x80
            if refusal:
                raise ValueError(f"{str(path)!r} is {refusal}; it is refused without being opened further "
                                 f"(pickles can run code, GGUF is not read). sora_core reads {FORMATS}.")
            raise ValueError(f"{str(path)!r} is not a safetensors file: it does not start with an 8-byte header "
                             f"length and a JSON header (file of {size} bytes). sora_core reads {FORMATS}.")
        raw = b"{" + f.read(n - 1)
    try:
        entries = json.loads(raw)
        if not isinstance(entries, dict):
            raise ValueError("the header is not a JSON object")
    except (UnicodeDecodeError, ValueError) as err:
        raise ValueError(f"{str(path)!r} is not a readable safetensors file: {err}") from err
    metadata = entries.pop("__metadata__", None) or {}
    tensors = {}
    for name, entry in entries.items():
        try:
            start, end = (int(v) for v in entry["data_offsets"])
            info = TensorInfo(str(entry["dtype"]), tuple(int(s) for s in entry["shape"]), 8 + n + start, 8 + n + end)
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"{str(path)!r}: the header entry of tensor {name!r} is malformed: {entry!r}") from err
        dtype = DTYPES.get(info.dtype)
        if not start <= end or info.end > size or (dtype is not None and end - start != info.numel * dtype.itemsize):
            raise ValueError(f"{str(path)!r} is truncated or corrupt: tensor {name!r} ({info.dtype} {list(info.shape)}) "
                             f"claims bytes {start}..{end} of a {size - 8 - n}-byte data section")
        tensors[name] = info
    return Header(path, tensors, {str(k): str(v) for k, v in metadata.items()}, size)


# -- what a file is --------------------------------------------------------------------------------

@dataclass
class Identity:
    """What one component of a file is, read from key names and shapes (never the file name)."""
    family: str
    kind: str
    variant: str
    supported: bool
    note: str = ""
    prefix: str = ""
    config: dict = field(default_factory=dict)

    def label(self) -> str:
        """What it is, in a sentence's words: 'a wan VAE (wan2.2-vae)'; other families say their note."""
        if self.kind == "other":
            return self.note
        return f"a {self.family} {KINDS[self.kind]} ({self.variant})"


def _prefix_of(names, signature: str) -> str | None:
    """The prefix under which `signature` occurs (``model.diffusion_model.`` and the like), or None."""
    for name in names:
        if name == signature:
            return ""
        if name.endswith("." + signature):
            return name[: -len(signature)]
    return None


def _shapes(header: Header, prefix: str) -> dict[str, tuple[int, ...]]:
    return {k[len(prefix):]: v.shape for k, v in header.tensors.items() if k.startswith(prefix)}


def component_shapes(header: Header, ident: "Identity") -> dict[str, tuple[int, ...]]:
    """Key (without the component's prefix) -> shape, for the component `ident` of the file."""
    return _shapes(header, ident.prefix)


def _count(shapes, pattern: str) -> int:
    """Number of numbered children, e.g. ``blocks.{}.`` -> how many blocks."""
    rx = re.compile(re.escape(pattern).replace(r"\{\}", r"(\d+)"))
    found = {int(m.group(1)) for k in shapes if (m := rx.match(k))}
    return max(found) + 1 if found else 0


def _need(header: Header, shapes, key: str, what: str) -> tuple[int, ...]:
    if key not in shapes:
        raise ValueError(f"{str(header.path)!r} looks like {what} but has no tensor {key!r}; the file is "
                         f"incomplete or in another layout")
    return shapes[key]


WAN_DIT_VARIANTS = {
    # (dim, layers, ffn_dim, in_channels, out_channels, has img_emb): (variant, description, supported)
    (1536, 30, 8960, 16, 16, False): ("wan2.1-t2v-1.3B", "Wan 2.1 text-to-video 1.3B", True),
    (5120, 40, 13824, 16, 16, False): ("wan-t2v-14B", "Wan 2.1 T2V-14B, or one expert (high- or low-noise) "
                                       "of Wan 2.2 T2V-A14B: their layouts are identical", True),
    (3072, 30, 14336, 48, 48, False): ("wan2.2-ti2v-5B", "Wan 2.2 text/image-to-video 5B", True),
    (5120, 40, 13824, 36, 16, True): ("wan2.1-i2v-14B", "Wan 2.1 image-to-video 14B (CLIP image embedding "
                                      "+ 20 conditioning channels): not supported yet", False),
    (5120, 40, 13824, 36, 16, False): ("wan2.2-i2v-A14B", "one expert of Wan 2.2 I2V-A14B (20 image "
                                       "conditioning channels): not supported yet", False),
}
WAN_DIT_EXTRAS = {  # key prefix -> what it is; all unsupported
    "vace_blocks.": "VACE control blocks", "face_adapter.": "Wan-Animate face adapter",
    "motion_encoder.": "Wan-Animate motion encoder", "casual_audio_encoder.": "Wan-S2V audio encoder",
    "audio_proj.": "HuMo audio projection", "control_adapter.": "camera-control adapter",
    "ref_conv.": "reference-image convolution", "img_emb.emb_pos": "first-last-frame (FLF2V) position embedding",
}


def _wan_dit(header: Header, prefix: str) -> Identity:
    shapes = _shapes(header, prefix)
    what = "a Wan diffusion model (it has head.modulation)"
    pe = _need(header, shapes, "patch_embedding.weight", what)
    if len(pe) != 5:
        raise ValueError(f"{str(header.path)!r}: patch_embedding.weight has shape {list(pe)}; a Wan diffusion "
                         f"model has a 5-D (dim, channels, 1, 2, 2) patch embedding")
    dim, in_ch, patch = pe[0], pe[1], tuple(pe[2:])
    config = dict(
        dim=dim, layers=_count(shapes, "blocks.{}."), heads=max(1, dim // WAN_HEAD_DIM),
        ffn_dim=_need(header, shapes, "blocks.0.ffn.0.weight", what)[0], in_channels=in_ch,
        out_channels=_need(header, shapes, "head.head.weight", what)[0] // math.prod(patch), patch=patch,
        text_dim=_need(header, shapes, "text_embedding.0.weight", what)[1],
        freq_dim=_need(header, shapes, "time_embedding.0.weight", what)[1],
    )
    img_emb = any(k.startswith("img_emb.") for k in shapes)
    key = (dim, config["layers"], config["ffn_dim"], in_ch, config["out_channels"], img_emb)
    variant, note, supported = WAN_DIT_VARIANTS.get(key, ("custom", "not a released Wan size", not img_emb))
    if img_emb and variant == "custom":
        note = "image-to-video layout (img_emb): not supported yet"
    extras = [desc for k, desc in WAN_DIT_EXTRAS.items() if any(s.startswith(k) for s in shapes)]
    if extras:
        variant, supported = f"{variant}+extras", False
        note = f"has {', '.join(extras)}: not supported"
    return Identity("wan", "diffusion_model", variant, supported, note, prefix, config)


def _wan_vae(header: Header, prefix: str) -> Identity:
    shapes = _shapes(header, prefix)
    what = "a Wan VAE (it has decoder.middle.0.residual.0.gamma)"
    image_channels = _need(header, shapes, "encoder.conv1.weight", what)[1]
    z = _need(header, shapes, "conv2.weight", what)[0]
    config = dict(latent_channels=z, in_channels=image_channels, dim=_need(header, shapes, "encoder.conv1.weight", what)[0],
                  temporal_factor=4)
    if (image_channels, z) == (3, 16):
        variant, note = "wan2.1-vae", "Wan 2.1 VAE: 16 latent channels, 4x8x8 compression"
        config["spatial_factor"] = 8
    elif (image_channels, z) == (12, 48):
        variant, note = "wan2.2-vae", "Wan 2.2 VAE: 48 latent channels, 4x16x16 (2x2 pixel patchify first)"
        config["spatial_factor"] = 16
    else:
        variant, note = "custom", f"not a released Wan VAE ({image_channels} input, {z} latent channels)"
        config["spatial_factor"] = 16 if image_channels == 12 else 8
    return Identity("wan", "vae", variant, True, note, prefix, config)


def _t5(header: Header, prefix: str) -> Identity:
    shapes = _shapes(header, prefix)
    what = "a T5-family encoder"
    bias = _need(header, shapes, "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight", what)
    q = shapes["encoder.block.0.layer.0.SelfAttention.q.weight"]
    vocab = (shapes.get("shared.weight") or shapes.get("encoder.embed_tokens.weight") or (0,))[0]
    ff = shapes.get("encoder.block.0.layer.1.DenseReluDense.wi_0.weight") or shapes.get(
        "encoder.block.0.layer.1.DenseReluDense.wi.weight") or (0,)
    config = dict(d_model=q[1], inner_dim=q[0], layers=_count(shapes, "encoder.block.{}."), heads=bias[1],
                  buckets=bias[0], d_ff=ff[0], vocab=vocab,
                  spiece_model=_prefix_of(header.tensors, "spiece_model") is not None,
                  decoder=any(k.startswith("decoder.block.") for k in shapes))
    if "encoder.block.1.layer.0.SelfAttention.relative_attention_bias.weight" not in shapes and config["layers"] > 1:
        return Identity("t5", "text_encoder", "t5", False, f"a T5 encoder (vocab {vocab}), as used by Flux / SD3; "
                        "Wan needs umt5-xxl (a relative position bias in every layer, vocab 256384)", prefix, config)
    released = (4096, 24, 10240, 64, 256384)
    found = (q[1], config["layers"], config["d_ff"], config["heads"], vocab)
    variant = "umt5-xxl" if found == released else "umt5-custom"
    note = "umt5-xxl encoder" + ("" if config["spiece_model"] else "; no spiece_model tensor: name a tokenizer file")
    return Identity("wan", "text_encoder", variant, True, note, prefix, config)


OTHER_FAMILIES = (  # a key only that family has -> (family, note)
    ("condition_embedder.time_embedder.linear_1.weight", "wan-diffusers",
     "a Wan transformer in the diffusers layout; sora_core reads the original Wan layout (ComfyUI's repackaged files)"),
    ("decoder.mid_block.resnets.0.norm1.gamma", "wan-diffusers",
     "a Wan VAE in the diffusers layout; sora_core reads the original layout (wan_2.1_vae / wan2.2_vae)"),
    ("double_blocks.0.img_attn.qkv.weight", "flux / hunyuan-video", "an MM-DiT of the Flux / HunyuanVideo family"),
    ("joint_blocks.0.context_block.attn.qkv.weight", "stable-diffusion-3", "an SD3 MM-DiT"),
    ("input_blocks.0.0.weight", "stable-diffusion", "a Stable Diffusion UNet"),
    ("adaln_single.linear.weight", "pixart / ltx-video", "a PixArt / LTX-Video transformer"),
    ("text_model.encoder.layers.0.mlp.fc1.weight", "clip", "a CLIP text encoder"),
    ("vision_model.encoder.layers.0.mlp.fc1.weight", "clip-vision", "a CLIP vision encoder"),
    ("decoder.conv_in.weight", "image-vae", "an image VAE (Stable Diffusion / Flux)"),
)


def identify_all(header: Header) -> list[Identity]:
    """Every component found in the file, most specific first (a checkpoint may hold several)."""
    if header.metadata.get("format") == CHECKPOINT_FORMAT:
        return [_sora_checkpoint(header)]
    names = header.tensors.keys()
    found = []
    for signature, detect in (("head.modulation", _wan_dit), ("decoder.middle.0.residual.0.gamma", _wan_vae),
                              ("encoder.block.0.layer.0.SelfAttention.q.weight", _t5)):
        prefix = _prefix_of(names, signature)
        if prefix is not None:
            found.append(detect(header, prefix))
    for signature, family, note in OTHER_FAMILIES:
        prefix = _prefix_of(names, signature)
        if prefix is not None and not found:
            found.append(Identity(family, "other", family, False, note, prefix))
    return found or [Identity("unknown", "other", "unknown", False,
                              f"a file of no known layout ({len(header.tensors)} tensors)")]


def _sora_checkpoint(header: Header) -> Identity:
    meta = read_metadata(header.path)
    config = json.loads(meta["config"])
    parts = meta.get("parts", "vae,text,dit")
    dit, vae = config.get("dit", {}), config.get("vae", {})
    summary = dict(parts=parts, dit_dim=dit.get("dim"), dit_depth=dit.get("depth"), heads=dit.get("heads"),
                   latent_channels=vae.get("latent_channels"), patch=tuple(dit.get("patch", ())))
    return Identity("sora-nodes", "checkpoint", parts, True, "this project's own model", "", summary)


def open_component(path, kind: str) -> tuple[Header, Identity]:
    """Header and identity of the `kind` component of `path`, or a ValueError saying what the file is."""
    header = read_header(path)
    found = identify_all(header)
    match = next((c for c in found if c.kind == kind), None)
    wanted = KINDS.get(kind, kind)
    if match is None:
        what = " and ".join(c.label() + (f": {c.note}" if c.note and c.kind != "other" else "") for c in found)
        raise ValueError(f"{str(path)!r} is {what}, not a {wanted}. sora_core reads {FAMILIES}.")
    if not match.supported:
        raise ValueError(f"{str(path)!r} is {match.label()}: {match.note}. Supported: {FAMILIES}.")
    return header, match


# -- quantisation --------------------------------------------------------------------------------

FOREIGN_QUANT = (".absmax", ".quant_map", ".quant_state", ".qweight", ".qzeros", ".scales", ".SCB", ".g_idx")
SCALE_SUFFIXES = (".scale_weight", ".scale_input", ".weight_scale", ".input_scale", ".weight_scale_2", ".comfy_quant")


@dataclass
class Quant:
    """How a component's weights are stored: scheme, per-layer weight scales, bookkeeping keys."""
    scheme: str  # "none", "fp8" (plain cast), "scaled_fp8" (ComfyUI legacy), "comfy_quant" (ComfyUI metadata)
    scales: dict[str, str] = field(default_factory=dict)  # layer (without prefix) -> file key of its weight scale
    aux: set[str] = field(default_factory=set)  # file keys that are not weights
    containers: dict[str, torch.dtype] = field(default_factory=dict)  # U8-stored fp8 weight -> its real dtype

    # ComfyUI (comfy/utils.py convert_old_quants, comfy/quant_ops.py): the weight is w.to(compute) * scale.
    # `scale_input` / `input_scale` only matter when the activation is quantised too (fp8 x fp8 matmul);
    # here the activation stays in the compute dtype, so they are read past, as ComfyUI does in its
    # full-precision path.


def quantization(header: Header, ident: Identity) -> Quant:
    p = ident.prefix
    rel = {k[len(p):]: k for k in header.tensors if k.startswith(p)}
    path = str(header.path)
    foreign = [k for k in rel if k.endswith(FOREIGN_QUANT)]
    if foreign:
        raise ValueError(f"{path!r} is quantised with a scheme sora_core does not read (bitsandbytes / GPTQ / AWQ "
                         f"style tensors such as {foreign[0]!r}); sora_core reads {FORMATS}")
    if "_quantization_metadata" in header.metadata:
        layers = json.loads(header.metadata["_quantization_metadata"]).get("layers", {})
        quant = Quant("comfy_quant", aux={k for r, k in rel.items() if r.endswith(SCALE_SUFFIXES)})
        for layer, conf in layers.items():
            fmt = conf.get("format") if isinstance(conf, dict) else None
            if fmt not in ("float8_e4m3fn", "float8_e5m2"):
                raise ValueError(f"{path!r}: layer {layer!r} is quantised as {fmt!r}; supported: float8_e4m3fn / "
                                 f"float8_e5m2 with a per-tensor weight_scale (nvfp4, mxfp8, int8 ... are not)")
            layer = layer[len(p):] if p and layer.startswith(p) else layer
            if layer + ".weight_scale" in rel:
                quant.scales[layer] = rel[layer + ".weight_scale"]
            quant.containers[layer + ".weight"] = torch.float8_e4m3fn if fmt == "float8_e4m3fn" else torch.float8_e5m2
        return quant
    marker = "scaled_fp8" in rel or "scaled_fp8" in header.tensors
    if marker:
        quant = Quant("scaled_fp8", aux={k for r, k in rel.items() if r.endswith((".scale_weight", ".scale_input"))})
        quant.aux |= {k for k in (p + "scaled_fp8", "scaled_fp8") if k in header.tensors}
        quant.scales = {r[: -len(".scale_weight")]: k for r, k in rel.items() if r.endswith(".scale_weight")}
        return quant
    stray = [k for r, k in rel.items() if r.endswith(SCALE_SUFFIXES)]
    if stray:
        raise ValueError(f"{path!r} has per-weight scales ({stray[0]!r}, {len(stray)} in all) but no quantisation "
                         f"marker (`scaled_fp8` tensor or `_quantization_metadata`): its scaling is unknown. "
                         f"sora_core reads {FORMATS}.")
    fp8 = any(header.tensors[k].dtype.startswith("F8_") for k in rel.values())
    return Quant("fp8" if fp8 else "none")


# -- loading ---------------------------------------------------------------------------------------

SCALED_LAYERS = (nn.Linear, nn.Embedding)  # the layers that apply `weight_scale` (`ops`, and the host's)


def _map(path: Path, size: int) -> torch.Tensor:
    """The whole file as one uint8 tensor over a private memory mapping (no read, no copy)."""
    storage = torch.UntypedStorage.from_file(str(path), shared=False, nbytes=size)
    return torch.empty(0, dtype=torch.uint8).set_(storage)


def _view(data: torch.Tensor, info: TensorInfo, dtype: torch.dtype) -> torch.Tensor:
    raw = data[info.start: info.end]
    if info.start % dtype.itemsize:  # misaligned by its writer: this tensor alone is copied
        raw = raw.clone()
    return raw.view(dtype).view(info.shape)


def read_tensor(header: Header, name: str) -> torch.Tensor:
    """One tensor of the file (e.g. the tokenizer's `spiece_model` bytes), mapped, in its stored dtype."""
    info = header.tensors[name]
    if info.dtype not in DTYPES:
        raise ValueError(f"{str(header.path)!r}: tensor {name!r} has dtype {info.dtype}, which sora_core does not read")
    return _view(_map(header.path, header.size), info, DTYPES[info.dtype])


def _listing(keys: list[str], n: int = 5) -> str:
    return ", ".join(keys[:n]) + (f", ... ({len(keys)} in all)" if len(keys) > n else "")


def load_into(module: nn.Module, header: Header, ident: Identity, *, device="cpu",
              dtype: torch.dtype | None = None, ignore: Callable[[str], bool] | None = None,
              rename: dict[str, str] | None = None) -> nn.Module:
    """Fill `module` (built on the meta device) with the `ident` component of the file, checking every
    name, shape and dtype first. Weights keep their stored dtype unless `dtype` is given (fp8 always
    stays fp8, with its scale attached to the layer as `weight_scale`; an fp8 `dtype` casts only the
    2-D weights of linear and embedding layers, as fp8 files store them, and leaves norms, biases,
    modulation tables and convolutions as they are). `ignore(key)` says which stored
    keys (without the prefix) are not the module's, e.g. a text encoder's unused decoder; `rename` maps
    a stored key to the module's name for it. Returns the module in eval mode, no grads."""
    path = str(header.path)
    quant = quantization(header, ident)
    p = ident.prefix
    stored = {k[len(p):]: k for k in header.tensors if k.startswith(p) and k not in quant.aux}
    stored = {(rename or {}).get(r, r): k for r, k in stored.items() if r != "spiece_model" and not (ignore and ignore(r))}
    expected = {name: tuple(t.shape) for name, t in module.state_dict(keep_vars=True).items()}
    problems = []
    wrong = [f"{r}: the file has shape {list(header.tensors[k].shape)}, this {ident.variant} model needs "
             f"{list(expected[r])}" for r, k in stored.items() if r in expected and header.tensors[k].shape != expected[r]]
    if wrong:
        problems.append(f"{len(wrong)} tensor(s) of the wrong shape: " + "; ".join(wrong[:5]))
    missing = sorted(set(expected) - set(stored))
    if missing:
        problems.append(f"{len(missing)} missing tensor(s): {_listing(missing)}")
    unexpected = sorted(set(stored) - set(expected))
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected tensor(s): {_listing(unexpected)}")
    bad_dtype = [f"{r} is {header.tensors[k].dtype}" for r, k in stored.items()
                 if header.tensors[k].dtype not in WEIGHT_DTYPES
                 and not (header.tensors[k].dtype == "U8" and r in quant.containers)]
    if bad_dtype:
        problems.append(f"unsupported weight dtype(s): {_listing(bad_dtype)} (supported: {', '.join(WEIGHT_DTYPES)}; "
                        f"int8 / int4 quantisation is not)")
    for layer, k in quant.scales.items():
        target = module.get_submodule(layer) if layer + ".weight" in expected else None
        if not isinstance(target, SCALED_LAYERS):  # the layers that apply `weight_scale`
            problems.append(f"{layer} has a weight scale but is not a linear or embedding layer of this model")
        elif math.prod(header.tensors[k].shape) != 1:
            problems.append(f"{k} has shape {list(header.tensors[k].shape)}; only per-tensor (one-element) "
                            f"weight scales are known")
    if problems:
        raise ValueError(f"{path!r} does not fit {ident.label()}, which its keys identify: " + " | ".join(problems))

    data = _map(header.path, header.size)
    state = {}
    for r, k in stored.items():
        info = header.tensors[k]
        t = _view(data, info, quant.containers[r] if info.dtype == "U8" else DTYPES[info.dtype]).to(device)
        if dtype is not None and t.dtype not in FP8 and t.dtype != dtype and (dtype not in FP8 or t.ndim == 2):
            t = t.to(dtype)  # on the device: a 14B fp32 file is cast tensor by tensor, never held twice
        state[r] = t
    module.requires_grad_(False)
    module.load_state_dict(state, strict=True, assign=True)
    for layer, k in quant.scales.items():
        scale = _view(data, header.tensors[k], DTYPES[header.tensors[k].dtype]).float().to(device)
        module.get_submodule(layer).register_buffer("weight_scale", scale.reshape(()))
    return module.eval()


# -- describe ----------------------------------------------------------------------------------------

def describe(path) -> dict:
    """What `path` is, from its header alone: family, kind, variant, parameters, dtypes, config, defaults."""
    header = read_header(path)
    found = identify_all(header)
    main = found[0]
    try:
        quant = quantization(header, main)
        scheme = quant.scheme
    except ValueError as err:
        quant, scheme = Quant("unknown"), "unsupported"
        main.supported, main.note = False, str(err)
    weights = [v for k, v in header.tensors.items()
               if k.startswith(main.prefix) and k not in quant.aux and not k.endswith("spiece_model")]
    dtypes = Counter()
    for v in weights:
        dtypes[v.dtype] += v.numel
    info = {
        "file": str(header.path), "bytes": header.size, "format": "safetensors",
        "family": main.family, "kind": main.kind, "variant": main.variant, "supported": main.supported,
        "note": main.note, "prefix": main.prefix, "parameters": sum(dtypes.values()),
        "dtypes": dict(dtypes.most_common()), "quantization": scheme, "config": main.config,
        "also": [c.label() for c in found[1:]],
    }
    latent = main.config.get("out_channels", main.config.get("latent_channels"))
    if latent is not None:
        info["latent_channels"] = latent
    if main.kind == "diffusion_model" and main.family == "wan":
        from .dit import recipe_for

        recipe = recipe_for(main.variant)
        if recipe is not None:
            info["defaults"] = recipe.as_dict()
    return info


def _human(n: float, unit: str = "") -> str:
    for suffix, scale in (("T", 1e12), ("G" if unit else "B", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f}{suffix}{unit}"
    return f"{n:.0f}{unit}"


def format_description(info: dict) -> str:
    """`describe`'s answer as the lines `python -m sora_core inspect` prints."""
    total = max(1, info["parameters"])
    dtypes = ", ".join(f"{d} {100 * n / total:.0f}%" if len(info["dtypes"]) > 1 else d for d, n in info["dtypes"].items())
    config = ", ".join(f"{k} {'x'.join(map(str, v)) if isinstance(v, (tuple, list)) else v}"
                       for k, v in info["config"].items())
    rows = [
        ("file", f"{info['file']} ({_human(info['bytes'], 'B')})"),
        ("family", info["family"]), ("kind", KINDS.get(info["kind"], info["kind"])), ("variant", info["variant"]),
        ("supported", "yes" if info["supported"] else "no"), ("note", info["note"]),
        ("parameters", f"{info['parameters']:,} ({_human(info['parameters'])})"), ("dtype", dtypes or "-"),
        ("quantization", info["quantization"]), ("prefix", info["prefix"] or "(none)"),
        ("latent", f"{info['latent_channels']} channels" if "latent_channels" in info else ""), ("config", config or "-"),
    ]
    if "defaults" in info:
        rows.append(("defaults", ", ".join(f"{k} {v}" for k, v in info["defaults"].items() if k != "negative_prompt")))
    if info["also"]:
        rows.append(("also holds", "; ".join(info["also"])))
    return "\n".join(f"{k + ':':<14}{v}" for k, v in rows if v != "")
