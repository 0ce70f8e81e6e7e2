"""Save Video / Save Image with Content Credentials: the file carries a C2PA manifest saying it is
AI-generated (see `sora_core.provenance`), written into ComfyUI's output folder like core's save
nodes, with the same UI preview. Core's save nodes keep working; these are the ones that sign."""

from __future__ import annotations

from sora_core.io import write_video
from sora_core.provenance import OPERATIONS, Provenance, ProvenanceError

from . import host

CATEGORY = "Sora/save"
MODES = ["on", "strict", "off"]


def _provenance_inputs() -> tuple[dict, dict]:
    required = {
        "provenance": (MODES, {"default": "on", "tooltip": (
            "on = embed a C2PA manifest (Content Credentials) saying the file is AI-generated, or save it "
            "without one and log a warning if that is impossible; strict = refuse to queue the workflow "
            "when the file cannot be signed (c2pa missing, bad certificate, a format such as webm); "
            "off = no manifest.")}),
        "include_prompt": ("BOOLEAN", {"default": False, "tooltip": (
            "Record the prompt (from the positive input) in the manifest. Off by default: the file then "
            "says it is AI-generated without telling what was asked for.")}),
    }
    optional = {
        "model": ("SORA_DIT", {"tooltip": "The DiT that made the frames: its file name, family and sha256 are recorded."}),
        "positive": ("CONDITIONING", {"tooltip": "The prompt's conditioning; its text is recorded only with include_prompt."}),
        "operation": (list(OPERATIONS), {"default": "generate", "tooltip": (
            "What made the frames. animate / extend / loop / connect record the sources as placed in the "
            "result, edit (SDEdit) as the input the model re-drew.")}),
        "sources": ("STRING", {"default": "", "multiline": True, "tooltip": (
            "The files the frames were made from, one per line, named as LoadImage names them (a file in "
            "the input folder, or 'name [output]'), e.g. the files output of the save node that saved the "
            "source clip. Each is recorded as an ingredient with its own manifest, so an extend of an extend "
            "keeps the whole chain.")}),
    }
    return required, optional


def _check(format: str, allowed: list[str], provenance: str, operation: str, sources: str | None):
    """VALIDATE_INPUTS: runs when the workflow is queued, before any node, so strict fails before any work."""
    if format not in allowed:
        return f"format={format!r} is not allowed; use one of {allowed}"
    if provenance not in MODES:
        return f"provenance={provenance!r} is not allowed; use one of {MODES}"
    if operation not in OPERATIONS:
        return f"operation={operation!r} is not allowed; use one of {list(OPERATIONS)}"
    if _source_names(sources) and OPERATIONS[operation][1] is None:
        return f"sources are given but operation={operation!r} has no input files; pick what made the frames"
    for name in _source_names(sources):
        try:
            if not host.input_file(name).is_file():
                return f"sources: {name!r} was not found in ComfyUI's input folder (or use 'name [output]')"
        except ValueError as err:
            return f"sources: {err}"
    if provenance == "strict":
        try:
            Provenance(strict=True).check(f"check.{format}")
        except ProvenanceError as err:
            return str(err).replace("'check.", "'.")
    return True


def _source_names(sources: str | None) -> list[str]:
    return [line.strip() for line in (sources or "").splitlines() if line.strip()]


def _annotated(entry: dict) -> str:
    """A saved file's name as LoadImage names it, so it can feed another save node's sources."""
    return "/".join(filter(None, (entry["subfolder"], entry["filename"]))) + " [output]"


def _provenance(provenance, include_prompt, model, positive, operation, sources) -> Provenance | None:
    if provenance == "off":
        return None
    prompt = positive[0][1].get("sora_text") if positive else None
    files = [str(host.input_file(name)) for name in _source_names(sources)]
    return Provenance(operation, model=model.path if model is not None else None,
                      family=None if model is None else f"sora-{model.config.name}" if model.family == "sora"
                      else model.config.name,
                      prompt=prompt, include_prompt=include_prompt, sources=files, strict=provenance == "strict")


class SoraSaveVideo:
    DESCRIPTION = ("Saves frames as one video (animated WebP / GIF / PNG, or MP4) in the output folder with a C2PA "
                   "manifest saying it is AI-generated: sora-nodes, the model and its sha256, the input files "
                   "(with their own manifests) and, only if asked, the prompt.")
    CATEGORY = CATEGORY
    FUNCTION = "save"
    OUTPUT_NODE = True
    RETURN_TYPES = ("IMAGE", "STRING")
    RETURN_NAMES = ("images", "files")
    OUTPUT_TOOLTIPS = ("The frames, passed through.", "The saved file as 'name [output]': link it into the "
                       "sources of the save node of a clip made from this one.")
    FORMATS = ["webp", "gif", "png", "mp4", "webm"]

    @classmethod
    def INPUT_TYPES(cls):
        required, optional = _provenance_inputs()
        return {"required": {
            "images": ("IMAGE", {"tooltip": "The frames of one video."}),
            "filename_prefix": ("STRING", {"default": "sora/video", "tooltip": (
                "Name of the file in the output folder; may contain a subfolder and %date:yyyy-MM-dd%-style fields.")}),
            "format": (cls.FORMATS, {"default": "webp", "tooltip": (
                "webp / gif / png (animated) play in the browser; mp4 is MPEG-4 (H.264 where OpenCV has it). "
                "webm cannot carry a C2PA manifest and is saved without one.")}),
            "fps": ("FLOAT", {"default": 8.0, "min": 0.01, "max": 240.0, "step": 0.01, "tooltip": "Frames per second."}),
            "quality": ("INT", {"default": 90, "min": 1, "max": 100, "tooltip": "WebP quality."}),
            **required,
        }, "optional": optional}

    @classmethod
    def VALIDATE_INPUTS(cls, format, provenance, operation="generate", sources=None):
        return _check(format, cls.FORMATS, provenance, operation, sources)

    def save(self, images, filename_prefix, format, fps, quality, provenance, include_prompt, model=None,
             positive=None, operation="generate", sources=""):
        path, entry = host.output_file(filename_prefix, images.shape[2], images.shape[1], f".{format}")
        prov = _provenance(provenance, include_prompt, model, positive, operation, sources)
        write_video(path, images, fps, quality=quality, provenance=prov)
        return {"ui": {"images": [entry], "animated": (True,)}, "result": (images, _annotated(entry))}


class SoraSaveImage:
    DESCRIPTION = ("Saves each image as its own PNG / WebP / JPEG in the output folder with a C2PA manifest saying "
                   "it is AI-generated (the same manifest as Sora Save Video).")
    CATEGORY = CATEGORY
    FUNCTION = "save"
    OUTPUT_NODE = True
    RETURN_TYPES = ("IMAGE", "STRING")
    RETURN_NAMES = ("images", "files")
    OUTPUT_TOOLTIPS = ("The images, passed through.", "The saved files as 'name [output]', one per line, for the "
                       "sources of another save node.")
    FORMATS = ["png", "webp", "jpg"]

    @classmethod
    def INPUT_TYPES(cls):
        required, optional = _provenance_inputs()
        return {"required": {
            "images": ("IMAGE", {"tooltip": "The images to save, one file each."}),
            "filename_prefix": ("STRING", {"default": "sora/image", "tooltip": (
                "Name of the files in the output folder; may contain a subfolder and %date:yyyy-MM-dd%-style fields.")}),
            "format": (cls.FORMATS, {"default": "png", "tooltip": "png is lossless; webp and jpg use quality."}),
            "quality": ("INT", {"default": 95, "min": 1, "max": 100, "tooltip": "WebP / JPEG quality."}),
            **required,
        }, "optional": optional}

    @classmethod
    def VALIDATE_INPUTS(cls, format, provenance, operation="generate", sources=None):
        return _check(format, cls.FORMATS, provenance, operation, sources)

    def save(self, images, filename_prefix, format, quality, provenance, include_prompt, model=None,
             positive=None, operation="generate", sources=""):
        prov = _provenance(provenance, include_prompt, model, positive, operation, sources)
        entries = []
        for image in images:
            path, entry = host.output_file(filename_prefix, image.shape[1], image.shape[0], f".{format}")
            write_video(path, image, 1.0, quality=quality, provenance=prov)
            entries.append(entry)
        return {"ui": {"images": entries}, "result": (images, "\n".join(map(_annotated, entries)))}
