"""Run UI-format workflows without a ComfyUI server: convert them to API format the way the
frontend does, check widget values the way the server does, and execute the graph in
topological order. Core nodes are replaced by the small doubles below."""

from __future__ import annotations

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


def reduced(prompt: dict) -> dict:
    """The API prompt with REDUCED applied (a copy)."""
    out = {}
    for nid, node in prompt.items():
        inputs = dict(node["inputs"], **REDUCED.get(node["class_type"], {}))
        out[nid] = {**node, "inputs": inputs}
    return out


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


class SaveAnimatedWEBP(Recorder):
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"images": ("IMAGE",), "filename_prefix": ("STRING", {}),
                             "fps": ("FLOAT", {"min": 0.01, "max": 1000.0}), "lossless": ("BOOLEAN", {}),
                             "quality": ("INT", {"min": 0, "max": 100}),
                             "method": (["default", "fastest", "slowest"],)}}


class SaveImage(Recorder):
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"images": ("IMAGE",), "filename_prefix": ("STRING", {})}}


class PreviewImage(Recorder):
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


CORE_DOUBLES = {c.__name__: c for c in (SaveAnimatedWEBP, SaveImage, PreviewImage, ImageScale)}
