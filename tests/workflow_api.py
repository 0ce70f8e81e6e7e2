"""Run UI-format workflows without a ComfyUI server: convert them to API format the way the
frontend does, check widget values the way the server does, and execute the graph in
topological order. Core nodes are replaced by the small doubles below; the few core nodes that
have none (CORE_ONLY) are described, not run."""

from __future__ import annotations

import inspect

import torch
import torch.nn.functional as F

WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}  # COMBO: how /object_info spells V3 combos
VIRTUAL_NODES = {"Note", "MarkdownNote"}  # frontend-only; never sent to the server


def input_specs(cls) -> list[tuple[str, tuple]]:
    """(name, spec) of every input in the order the frontend creates widgets: required, then optional."""
    types = cls.INPUT_TYPES()
    return [(name, spec) for section in ("required", "optional") for name, spec in types.get(section, {}).items()]


def object_info_specs(object_info: dict):
    """input_specs from a server's /object_info, for ui_to_api."""
    def specs(class_type: str) -> list[tuple[str, tuple]]:
        info = object_info[class_type]
        return [(name, tuple(info["input"][section][name])) for section in ("required", "optional")
                for name in info["input_order"].get(section, [])]
    return specs


def is_widget(spec: tuple) -> bool:
    opts = spec[1] if len(spec) > 1 else {}
    return (isinstance(spec[0], list) or spec[0] in WIDGET_TYPES) and not opts.get("forceInput")


def extra_widget_values(name: str, spec: tuple) -> int:
    """Values the frontend saves after a widget's own but never sends: seed controls, upload buttons."""
    opts = spec[1] if len(spec) > 1 else {}
    control = opts.get("control_after_generate", spec[0] == "INT" and name in ("seed", "noise_seed"))
    upload = any(opts.get(k) for k in ("image_upload", "video_upload", "audio_upload"))
    return int(bool(control)) + int(upload)


def class_specs(classes: dict):
    """input_specs from node classes, for ui_to_api."""
    return lambda class_type: input_specs(classes[class_type])


def ui_to_api(workflow: dict, specs_of) -> dict:
    """UI workflow -> API prompt {node_id: {"class_type", "inputs"}}; links become [node_id_str, slot].
    `specs_of(class_type)` gives a node's input_specs (see class_specs, object_info_specs)."""
    links = {link[0]: link for link in workflow["links"]}
    prompt = {}
    for node in workflow["nodes"]:
        if node["type"] in VIRTUAL_NODES:
            continue
        assert node.get("mode", 0) == 0, f"node {node['id']} is muted or bypassed"
        values = list(node.get("widgets_values") or [])
        inputs, i = {}, 0
        for name, spec in specs_of(node["type"]):
            if is_widget(spec):
                inputs[name] = values[i]
                i += 1 + extra_widget_values(name, spec)
        assert i == len(values), f"node {node['id']} ({node['type']}) has {len(values)} widget values, expected {i}"
        for inp in node.get("inputs", []):
            if inp.get("link") is not None:
                _, src, slot, *_ = links[inp["link"]]
                inputs[inp["name"]] = [str(src), slot]  # a linked widget takes the link
        prompt[str(node["id"])] = {"class_type": node["type"], "inputs": inputs}
    return prompt


# Workflows too long for a test run at a reduced length: {class_type: inputs to override}.
REDUCED = {"SoraLongVideo": {"seconds": 4.0, "steps": 4}}  # the shipped minute: 32 frames, two windows
# Wan graphs (any node that loads a Wan diffusion model) run on tiny random files at a fraction of their
# native sizes: every size input shrunk the same way (so a prototype stays smaller than its full
# resolution and a vertical video stays vertical), every clip 9 frames (3 latent frames), every
# extension 4 frames, 2 steps.
WAN_LOADERS = {"SoraDiffusionModelLoader", "UNETLoader"}
WAN_REDUCED = {"steps": lambda v: 2, "frames": lambda v: 9 if v > 1 else 1, "length": lambda v: 9 if v > 1 else 1,
               **{k: lambda v: 4 for k in ("new_frames", "transition_frames", "context_frames")},
               # a multiple of 32 (both Wan VAEs' pixel multiple), a sixteenth of the side: 832x480 -> 64x32
               **{k: lambda v: max(32, round(v / 16 / 32) * 32) for k in ("width", "height", "long_side")}}


def reduced(prompt: dict) -> dict:
    """The API prompt with REDUCED applied, and WAN_REDUCED to a Wan graph (a copy)."""
    wan = any(node["class_type"] in WAN_LOADERS for node in prompt.values())
    out = {}
    for nid, node in prompt.items():
        inputs = dict(node["inputs"], **REDUCED.get(node["class_type"], {}))
        if wan:
            inputs |= {k: WAN_REDUCED[k](v) for k, v in inputs.items()
                       if k in WAN_REDUCED and isinstance(v, int) and not isinstance(v, bool)}
        out[nid] = {**node, "inputs": inputs}
    return out


# -- how big the frontend draws a node (litegraph's LGraphNode.computeSize, ComfyUI frontend 1.49) -------

TITLE_H = 30  # NODE_TITLE_HEIGHT: the title bar sits above a node's pos
SLOT_H = 20  # NODE_SLOT_HEIGHT: one row per socket (linked widgets excluded)
WIDGET_H = 20  # NODE_WIDGET_HEIGHT; each widget also gets 4 px, the widget block 8 px, the node 6 px
NODE_W = 140  # NODE_WIDTH; x1.5 for a node with widgets
CHAR_W = 14 * 0.6  # the frontend's own text-width estimate (14 px font); real glyphs are narrower
WIDGET_VALUE_W = 42 + 2 * (15 + 6 + 10)  # minValueWidth + 2 * (margin + arrowMargin + arrowWidth)
DOM_WIDGET_H = 50  # min height of a DOM widget that names none: multiline text, markdown
# web/sora_text.js gives these nodes a text display (a DOM widget of min height 60) and a Markdown /
# Plain text toggle after their own widgets.
TEXT_DISPLAY = {"SoraRecaption", "SoraPatchifyGrid"}
TEXT_DISPLAY_H = 60
VIRTUAL_SPECS = {"Note": [("text", ("STRING", {"multiline": True}))],
                 "MarkdownNote": [("text", ("STRING", {"multiline": True}))]}


def min_node_size(node: dict, specs_of, display_name: str) -> tuple[float, float]:
    """(width, height) the frontend gives a UI-format node at least (it grows smaller ones on load)."""
    specs = VIRTUAL_SPECS.get(node["type"]) or specs_of(node["type"])
    sockets = [i["name"] for i in node.get("inputs", []) if "widget" not in i]
    linked = [i["name"] for i in node.get("inputs", []) if "widget" in i]
    outputs = [o["name"] for o in node.get("outputs", [])]
    heights = []
    for name, spec in specs:
        if is_widget(spec):
            multiline = len(spec) > 1 and spec[1].get("multiline")
            heights += [DOM_WIDGET_H if multiline else WIDGET_H] + [WIDGET_H] * extra_widget_values(name, spec)
    if node["type"] in TEXT_DISPLAY:
        heights += [TEXT_DISPLAY_H, WIDGET_H]
    ins = max((CHAR_W * len(n) for n in sockets), default=0)
    outs = max((CHAR_W * len(n) for n in outputs), default=0)
    width = max(ins + outs + 2 * SLOT_H + (5 if ins and outs else 0),
                max((CHAR_W * len(n) + WIDGET_VALUE_W for n in linked), default=0),
                TITLE_H * 1.33 + CHAR_W * len(node.get("title") or display_name),
                NODE_W * (1.5 if heights else 1))
    rows = max(len(sockets), len(outputs), 1)
    return width, rows * SLOT_H + (sum(h + 4 for h in heights) + 8 if heights else 0) + 6


def validate(node_id: str, cls, inputs: dict) -> None:
    """The server's checks on widget values: combo membership, numeric ranges, required inputs."""
    for name, spec in input_specs(cls):
        required = name in cls.INPUT_TYPES().get("required", {})
        if name not in inputs:
            assert not required, f"node {node_id} ({cls.__name__}) misses required input {name!r}"
            continue
        value = inputs[name]
        if isinstance(value, list) and len(value) == 2 and isinstance(value[0], str):
            continue  # a link
        opts = spec[1] if len(spec) > 1 else {}
        if isinstance(spec[0], list):
            assert value in spec[0], f"node {node_id}: {name}={value!r} not in {spec[0]}"
        elif spec[0] in ("INT", "FLOAT"):
            assert opts.get("min", value) <= value <= opts.get("max", value), f"node {node_id}: {name}={value} out of range"
    if hasattr(cls, "VALIDATE_INPUTS"):  # as the server calls it: with the values it names that are not links
        wanted = inspect.signature(cls.VALIDATE_INPUTS).parameters
        given = {k: v for k, v in inputs.items() if k in wanted and not _is_link(v)}
        result = cls.VALIDATE_INPUTS(**given)
        assert result is True, f"node {node_id} ({cls.__name__}): {result}"


def execute(prompt: dict, classes: dict) -> tuple[dict, dict]:
    """Run every node once, dependencies first. Returns (outputs, ui) keyed by node id."""
    outputs, ui = {}, {}
    pending = dict(prompt)
    while pending:
        ready = [nid for nid, node in pending.items()
                 if all(v[0] in outputs for v in node["inputs"].values() if _is_link(v))]
        assert ready, f"cycle or dangling link among nodes {sorted(pending)}"
        for nid in sorted(ready, key=int):
            node = pending.pop(nid)
            cls = classes[node["class_type"]]
            validate(nid, cls, node["inputs"])
            kwargs = {k: outputs[v[0]][v[1]] if _is_link(v) else v for k, v in node["inputs"].items()}
            result = getattr(cls(), cls.FUNCTION)(**kwargs)
            if isinstance(result, dict):
                ui[nid] = result.get("ui")
                result = result.get("result", ())
            outputs[nid] = tuple(result)
    return outputs, ui


def _is_link(value) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[0], str)


# -- doubles for the core nodes the workflows use ---------------------------------------------------

class Recorder:
    """Base of the output-node doubles: keeps what they were given, by filename prefix."""

    saved: dict[str, torch.Tensor] = {}
    RETURN_TYPES = ("IMAGE",)
    OUTPUT_NODE = True
    FUNCTION = "save"

    def save(self, images, filename_prefix="preview", **_):
        key = filename_prefix
        while key in Recorder.saved:
            key += "+"
        Recorder.saved[key] = images
        return {"ui": {"images": []}, "result": (images,)}


class PreviewImage(Recorder):
    RETURN_NAMES = ("images",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"images": ("IMAGE",)}}


class ImageScale:
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "upscale"
    METHODS = ["nearest-exact", "bilinear", "area", "bicubic", "lanczos"]

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": ("IMAGE",), "upscale_method": (cls.METHODS,),
                             "width": ("INT", {"min": 0, "max": 16384}), "height": ("INT", {"min": 0, "max": 16384}),
                             "crop": (["disabled", "center"],)}}

    def upscale(self, image, upscale_method, width, height, crop):
        mode = {"lanczos": "bicubic"}.get(upscale_method, upscale_method)
        out = F.interpolate(image.movedim(-1, 1), size=(height, width), mode=mode)
        return (out.movedim(1, -1).clamp(0, 1),)


CORE_DOUBLES = {c.__name__: c for c in (PreviewImage, ImageScale)}


# -- core nodes without a double: their inputs and outputs only ----------------------------------------
# The Wan graph that mixes core's loaders, text encoder and KSampler with our nodes runs only in a real
# ComfyUI (tests/test_comfyui_server.py): a double of core's sampler or umt5 would be a fake. These give
# the builder and the layout tests the nodes' interfaces as /object_info lists them (ComfyUI 0.3x); the
# server test checks the shipped graphs against the real /object_info.

class CoreOnly:
    FUNCTION = "run"

    def run(self, **_):
        raise NotImplementedError(f"core's {type(self).__name__} has no headless double: a graph using it runs "
                                  f"in a real ComfyUI (tests/test_comfyui_server.py)")


class UNETLoader(CoreOnly):
    RETURN_TYPES = ("MODEL",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"unet_name": ([],), "weight_dtype": (["default", "fp8_e4m3fn", "fp8_e4m3fn_fast", "fp8_e5m2"],)}}


class CLIPLoader(CoreOnly):
    RETURN_TYPES = ("CLIP",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"clip_name": ([],), "type": (["stable_diffusion", "sd3", "mochi", "ltxv", "wan"],)},
                "optional": {"device": (["default", "cpu"],)}}


class CLIPTextEncode(CoreOnly):
    RETURN_TYPES = ("CONDITIONING",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"text": ("STRING", {"multiline": True, "dynamicPrompts": True}), "clip": ("CLIP",)}}


class EmptyHunyuanLatentVideo(CoreOnly):
    RETURN_TYPES = ("LATENT",)

    @classmethod
    def INPUT_TYPES(cls):
        size = {"min": 16, "max": 16384, "step": 16}
        return {"required": {"width": ("INT", {"default": 848, **size}), "height": ("INT", {"default": 480, **size}),
                             "length": ("INT", {"default": 25, "min": 1, "max": 16384, "step": 4}),
                             "batch_size": ("INT", {"default": 1, "min": 1, "max": 4096})}}


class KSampler(CoreOnly):
    RETURN_TYPES = ("LATENT",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("MODEL",),
            "seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF, "control_after_generate": True}),
            "steps": ("INT", {"default": 20, "min": 1, "max": 10000}),
            "cfg": ("FLOAT", {"default": 8.0, "min": 0.0, "max": 100.0}),
            "sampler_name": (["euler", "dpmpp_2m", "uni_pc"],), "scheduler": (["simple", "normal", "karras"],),
            "positive": ("CONDITIONING",), "negative": ("CONDITIONING",), "latent_image": ("LATENT",),
            "denoise": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0})}}


class VAELoader(CoreOnly):
    RETURN_TYPES = ("VAE",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"vae_name": ([],)}}


class VAEDecode(CoreOnly):
    RETURN_TYPES = ("IMAGE",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"samples": ("LATENT",), "vae": ("VAE",)}}


CORE_ONLY = {c.__name__: c for c in (UNETLoader, CLIPLoader, CLIPTextEncode, EmptyHunyuanLatentVideo, KSampler,
                                     VAELoader, VAEDecode)}
CORE_DISPLAY_NAMES = {"PreviewImage": "Preview Image", "ImageScale": "Upscale Image", "MarkdownNote": "Markdown Note",
                      "UNETLoader": "Load Diffusion Model", "CLIPLoader": "Load CLIP",
                      "CLIPTextEncode": "CLIP Text Encode (Prompt)", "EmptyHunyuanLatentVideo": "Empty HunyuanVideo 1.0 Latent",
                      "KSampler": "KSampler", "VAELoader": "Load VAE", "VAEDecode": "VAE Decode"}
