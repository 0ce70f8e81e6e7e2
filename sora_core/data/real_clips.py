"""Locate real video clips shipped by an optional PyPI package, for evaluation.

``comfyui-workflow-templates-media-video`` (MIT, ~100 MB, pulled in by recent
ComfyUI installs) ships the preview animations of ComfyUI's video workflow
templates as animated WebP under ``comfyui_workflow_templates_media_video/
templates/``: 81 files in v0.3.101, 78 animated (25-152 frames, mostly 350x350
at 15-30 fps, a few 512x512, 768x512, 832x480, 1024x576) and 3 stills. That is
real (generated-but-photographic) footage we can measure VAE reconstruction
PSNR on without downloading anything at run time. When the package is absent
the evaluation simply has no real clips: ``find_template_clips()`` returns [].
"""

from __future__ import annotations

import importlib.resources
from pathlib import Path

__all__ = ["TEMPLATE_PACKAGE", "find_template_clips"]

TEMPLATE_PACKAGE = "comfyui_workflow_templates_media_video"


def find_template_clips(*, min_frames: int = 2, package: str = TEMPLATE_PACKAGE) -> list[Path]:
    """Sorted paths of the package's animated WebP clips with >= ``min_frames``
    frames (``min_frames=1`` includes the stills), or [] if it is not installed.

    Frame counts come from the WebP headers (no decoding), so this is fast.
    """
    try:
        root = importlib.resources.files(package) / "templates"
    except (ModuleNotFoundError, TypeError):
        return []
    try:
        candidates = sorted(Path(str(p)) for p in root.iterdir() if p.name.lower().endswith(".webp"))
    except (FileNotFoundError, NotADirectoryError):
        return []
    if min_frames <= 1:
        return candidates
    from ..io import probe_video

    out = []
    for p in candidates:
        try:
            if probe_video(p).num_frames >= min_frames:
                out.append(p)
        except (OSError, ValueError):
            continue  # a damaged asset should not stop evaluation
    return out
