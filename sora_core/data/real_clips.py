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

import numpy as np
import torch

__all__ = ["TEMPLATE_PACKAGE", "RealClipBank", "find_template_clips", "split_template_clips"]

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


HELDOUT_EVERY = 7  # every 7th clip (sorted by name) is held out for evaluation
HELDOUT_COUNT = 8


def split_template_clips(*, min_frames: int = 2) -> tuple[list[Path], list[Path]]:
    """(train, heldout) clips: the evaluation's `HELDOUT_COUNT` clips never enter training.

    The held-out set is picked among clips long enough for a 17-frame evaluation, by name, so it is
    the same whatever `min_frames` a trainer asks for.
    """
    heldout = find_template_clips(min_frames=17)[::HELDOUT_EVERY][:HELDOUT_COUNT]
    names = {p.name for p in heldout}
    train = [p for p in find_template_clips(min_frames=min_frames) if p.name not in names]
    return train, heldout


def resize_to_area(frames: np.ndarray, area: int, multiple: int = 8) -> np.ndarray:
    """uint8 (T, H, W, 3) frames resized (INTER_AREA) to about `area` pixels at their own aspect ratio."""
    import cv2

    h, w = frames.shape[1:3]
    scale = (area / (w * h)) ** 0.5
    tw, th = max(multiple, int(w * scale) // multiple * multiple), max(multiple, int(h * scale) // multiple * multiple)
    return np.stack([cv2.resize(f, (tw, th), interpolation=cv2.INTER_AREA) for f in frames])


class RealClipBank:
    """Real clips held in memory at a few scales, served as random spacetime crops (VAE training).

    Each clip is stored at every side in `sides` (the side of a square of the same area), so crops
    see real footage at about the scale evaluation uses (whole frame at ~64x64) and finer.
    """

    def __init__(self, paths: list[Path], sides: tuple[int, ...] = (64, 96), max_frames: int = 160):
        from ..io import read_video

        self.clips: list[np.ndarray] = []
        for path in paths:
            frames, _ = read_video(path, max_frames=max_frames)
            self.clips += [resize_to_area(frames, s * s) for s in sides]
        if not self.clips:
            raise ValueError("RealClipBank got no clips")

    def batch(self, rng: np.random.Generator, count: int, frames: int, height: int, width: int) -> torch.Tensor:
        """(count, 3, frames, height, width) float crops in [-1, 1]; clips too small are padded by reflection."""
        out = []
        for _ in range(count):
            clip = self.clips[int(rng.integers(len(self.clips)))]
            t0 = int(rng.integers(0, max(1, clip.shape[0] - frames + 1)))
            part = clip[t0 : t0 + frames]
            if part.shape[0] < frames:  # a short clip plays back and forth
                part = np.concatenate([part, part[::-1]] * frames)[:frames]
            ph, pw = max(0, height - part.shape[1]), max(0, width - part.shape[2])
            if ph or pw:
                part = np.pad(part, ((0, 0), (0, ph), (0, pw), (0, 0)), mode="reflect")
            y = int(rng.integers(0, part.shape[1] - height + 1))
            x = int(rng.integers(0, part.shape[2] - width + 1))
            part = part[:, y : y + height, x : x + width]
            if rng.random() < 0.5:
                part = part[:, :, ::-1]
            out.append(torch.from_numpy(np.ascontiguousarray(part)).permute(3, 0, 1, 2))
        return torch.stack(out).float() / 127.5 - 1.0
