"""A dataset over a folder of real clips, bucketed at their native aspect ratio.

Point it at a folder of mp4/webm/mov/mkv/gif/animated-webp clips (optionally
still images as 1-frame videos) with captions from, in order of precedence:

1. a sidecar ``<stem>.txt`` next to the clip;
2. ``captions.jsonl`` in the root: one object per line with the clip under
   ``path``/``file``/``video``/``filename`` and the text under
   ``caption``/``text``/``prompt``;
3. ``captions.csv`` in the root with the same column names.

Paths in the caption files may be relative to the root, or bare file names.
A clip with no caption gets ``""`` and is counted in ``missing_captions`` (one
warning for the whole folder), because an unconditional sample is still useful
training data (classifier-free guidance drops captions anyway).

Every clip is probed once at construction (cheap: container headers, WebP
frame headers) and assigned a :class:`~sora_core.data.buckets.Bucket`:

* with a ``BucketConfig`` (default), the nearest bucket to its native size and
  length at the chosen ``fps`` — a clip too short for a 17-frame bucket drops to
  9 frames, or 1; a clip shorter than every configured frame count is skipped;
* with ``size=(W, H)`` and ``frames=T``, one fixed bucket; clips with fewer than
  T frames at ``fps`` are skipped.

Skipped and unreadable files are listed in ``skipped`` as ``(path, reason)``.

Frames are resized to *cover* the bucket keeping their aspect ratio and the
small excess is centre-cropped — never a square crop of a 16:9 clip, which is
the point of native-aspect training. Items match the synthetic dataset:
``{"video": float32 [3,T,H,W] in [-1,1], "caption", "prompt", "path"}`` plus
``"bucket"`` (for :class:`BucketBatcher`/:func:`collate`) and ``"fps"``.
"""

from __future__ import annotations

import csv
import json
import math
import numbers
import random
import warnings
from pathlib import Path
import cv2
import numpy as np
import torch

from ..io import CONTAINER_EXTENSIONS, VideoInfo, probe_video, read_video
from .buckets import Bucket, BucketConfig

__all__ = ["VideoFolderDataset", "load_captions", "resize_cover", "frames_to_tensor", "VIDEO_EXTENSIONS"]

VIDEO_EXTENSIONS = CONTAINER_EXTENSIONS + (".gif", ".webp", ".apng")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp")
_PATH_KEYS = ("path", "file", "video", "filename", "file_name")
_TEXT_KEYS = ("caption", "text", "prompt")


class VideoFolderDataset(torch.utils.data.Dataset):
    """Map-style dataset of bucketed real clips. See the module docstring."""

    def __init__(
        self,
        root: str | Path,
        *,
        buckets: BucketConfig | None = None,
        size: tuple[int, int] | None = None,
        frames: int | None = None,
        fps: float | None = None,
        train: bool = True,
        seed: int = 0,
        recursive: bool = True,
        include_images: bool = False,
    ):
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"video folder not found: {str(self.root)!r} is not a directory")
        if fps is not None and not (isinstance(fps, numbers.Real) and math.isfinite(fps) and fps > 0):
            raise ValueError(f"fps={fps!r} is not allowed: use a positive number or None for native rate")
        if size is not None:
            if buckets is not None:
                raise ValueError("give either buckets=BucketConfig(...) or size=(W, H), not both")
            if not (isinstance(size, (tuple, list)) and len(size) == 2 and all(isinstance(s, int) and s > 0 for s in size)):
                raise ValueError(f"size={size!r} is not allowed: use (width, height) positive ints")
            frames = 17 if frames is None else frames
            if not isinstance(frames, int) or frames < 1:
                raise ValueError(f"frames={frames!r} is not allowed: use a positive int (1 + 4k for the VAE)")
            self.fixed: Bucket | None = Bucket(int(size[0]), int(size[1]), frames)
        elif frames is not None:
            raise ValueError(
                f"frames={frames!r} needs size=(W, H); with bucketing, frame counts come from BucketConfig(frames=...)"
            )
        else:
            self.fixed = None
        self.config = buckets if buckets is not None or self.fixed else BucketConfig()
        self.fps, self.train, self.seed, self.epoch = fps, train, seed, 0

        exts = VIDEO_EXTENSIONS + (IMAGE_EXTENSIONS if include_images else ())
        files = sorted(
            p for p in (self.root.rglob("*") if recursive else self.root.iterdir())
            if p.is_file() and p.suffix.lower() in exts and not p.name.startswith(".")
        )
        captions = load_captions(self.root)

        self.items: list[tuple[Path, VideoInfo, Bucket, int]] = []  # path, info, bucket, frames available
        self.skipped: list[tuple[str, str]] = []
        self.missing_captions = 0
        self._captions: list[str] = []
        for p in files:
            try:
                info = probe_video(p)
            except (OSError, ValueError) as e:
                self.skipped.append((str(p), f"unreadable: {e}"))
                continue
            avail = info.frames_at(fps)
            bucket = self._assign(info, avail)
            if bucket is None:
                self.skipped.append((str(p), f"only {avail} frames at fps={fps}; too short for any bucket"))
                continue
            cap = _lookup_caption(p, self.root, captions)
            if cap is None:
                self.missing_captions += 1
                cap = ""
            self.items.append((p, info, bucket, avail))
            self._captions.append(cap)
        if self.missing_captions:
            warnings.warn(
                f"{self.missing_captions} of {len(self.items)} clips in {str(self.root)!r} have no caption "
                "(no sidecar .txt and no entry in captions.jsonl/csv); using empty captions",
                stacklevel=2,
            )

    def _assign(self, info: VideoInfo, avail: int) -> Bucket | None:
        if self.fixed is not None:
            return self.fixed if avail >= self.fixed.frames else None
        return self.config.nearest(info.width, info.height, avail)

    @property
    def buckets(self) -> list[Bucket]:
        """Bucket of every item, for :class:`BucketBatcher` (see `train.data.folder_batches`)."""
        return [b for _, _, b, _ in self.items]

    def set_epoch(self, epoch: int) -> None:
        """Vary training clip windows per epoch (the window is seeded by seed, epoch, index)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} clips in {str(self.root)!r}")
        index %= len(self)
        path, info, bucket, avail = self.items[index]
        slack = max(0, avail - bucket.frames)
        if self.train:
            start = random.Random(f"{self.seed}:{self.epoch}:{index}").randint(0, slack)
        else:
            start = slack // 2  # deterministic: the middle of the clip
        frames, _ = read_video(path, fps=self.fps, start=start, max_frames=bucket.frames)
        if len(frames) < bucket.frames:
            # Container frame counts can be off by one or two; hold the last frame.
            pad = np.repeat(frames[-1:], bucket.frames - len(frames), axis=0)
            frames = np.concatenate([frames, pad])
        frames = np.stack([resize_cover(f, bucket.width, bucket.height) for f in frames])
        caption = self._captions[index]
        return {
            "video": frames_to_tensor(frames),
            "caption": caption,
            "prompt": caption,
            "path": str(path),
            "bucket": bucket,
            "fps": float(self.fps if self.fps is not None else info.fps),
        }


def resize_cover(img: np.ndarray, width: int, height: int) -> np.ndarray:
    """Scale ``img`` (H, W, C) to cover ``width x height`` keeping its aspect ratio,
    then centre-crop the excess. Area interpolation when shrinking (no aliasing),
    bicubic when enlarging."""
    h, w = img.shape[:2]
    scale = max(width / w, height / h)
    nw, nh = max(width, round(w * scale)), max(height, round(h * scale))
    if (nw, nh) != (w, h):
        interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
        img = cv2.resize(img, (nw, nh), interpolation=interp)
    x, y = (nw - width) // 2, (nh - height) // 2
    return img[y : y + height, x : x + width]


def frames_to_tensor(frames: np.ndarray) -> torch.Tensor:
    """uint8 [T,H,W,3] -> float32 [3,T,H,W] in [-1, 1] (the model's layout)."""
    t = torch.from_numpy(np.ascontiguousarray(frames)).permute(3, 0, 1, 2).float()
    return t.div_(127.5).sub_(1.0)


def load_captions(root: str | Path) -> dict[str, str]:
    """Captions from ``captions.jsonl`` then ``captions.csv`` in ``root`` (jsonl wins),
    keyed by the path as written there (POSIX separators). Malformed lines are
    reported with file and line number."""
    root = Path(root)
    out: dict[str, str] = {}
    csv_path, jsonl_path = root / "captions.csv", root / "captions.jsonl"
    if csv_path.is_file():
        with open(csv_path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            fields = [c.strip().lower() for c in reader.fieldnames or []]
            pk = next((k for k in _PATH_KEYS if k in fields), None)
            tk = next((k for k in _TEXT_KEYS if k in fields), None)
            if pk is None or tk is None:
                raise ValueError(
                    f"{str(csv_path)!r} has columns {reader.fieldnames}; need one of {list(_PATH_KEYS)} "
                    f"and one of {list(_TEXT_KEYS)}"
                )
            for row in reader:
                row = {(k or "").strip().lower(): v for k, v in row.items()}
                if row.get(pk):
                    out[_norm(row[pk])] = (row.get(tk) or "").strip()
    if jsonl_path.is_file():
        with open(jsonl_path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as e:
                    raise ValueError(f"{str(jsonl_path)!r} line {n} is not valid JSON: {e}") from e
                pk = next((k for k in _PATH_KEYS if isinstance(obj, dict) and k in obj), None)
                tk = next((k for k in _TEXT_KEYS if isinstance(obj, dict) and k in obj), None)
                if pk is None or tk is None:
                    raise ValueError(
                        f"{str(jsonl_path)!r} line {n} is {line.strip()[:80]!r}; need an object with one of "
                        f"{list(_PATH_KEYS)} and one of {list(_TEXT_KEYS)}"
                    )
                out[_norm(obj[pk])] = str(obj[tk]).strip()
    return out


def _norm(p: str) -> str:
    return str(p).strip().replace("\\", "/").removeprefix("./")


def _lookup_caption(path: Path, root: Path, captions: dict[str, str]) -> str | None:
    side = path.with_suffix(".txt")
    if side.is_file():
        return side.read_text(encoding="utf-8").strip()
    rel = path.relative_to(root).as_posix()
    for key in (rel, path.name, str(path)):
        if key in captions:
            return captions[key]
    return None

