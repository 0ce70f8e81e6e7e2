"""Contact sheets: labelled clips laid out so a person can look at what eval's numbers describe."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from ..io import to_uint8_frames, video_tensor_to_frames, write_video


def contact_sheet(
    rows: Sequence[tuple[str, object]],
    path: str | os.PathLike | None = None,
    *,
    columns: int = 8,
    cell_height: int = 96,
    label_width: int = 160,
    fps: float = 8.0,
    gap: int = 4,
) -> np.ndarray:
    """Lay out labelled clips so a person can eyeball samples per capability.

    Each row is ``(label, frames)`` with frames as accepted by :func:`write_video`
    (or a ``[3,T,H,W]`` tensor in [-1,1]). For a still target (.png/.jpg, or
    ``path=None``) every row shows ``columns`` frames spread evenly over the clip
    and the result is one ``uint8 [H,W,3]`` image. For an animated target
    (.gif/.webp/.mp4) every row shows its clip playing; shorter clips hold their
    last frame; the result is ``uint8 [T,H,W,3]``. Cells keep each clip's aspect
    ratio (height ``cell_height``). Returns the array and writes it if ``path``.
    """
    if not rows:
        raise ValueError("contact_sheet needs at least one (label, frames) row; got none")
    if columns < 1 or cell_height < 8 or label_width < 0 or gap < 0:
        raise ValueError(
            f"contact_sheet: columns={columns}, cell_height={cell_height}, label_width={label_width}, "
            f"gap={gap}; need columns>=1, cell_height>=8, label_width>=0, gap>=0"
        )
    animated = path is not None and Path(path).suffix.lower() in (".gif", ".webp", ".mp4", ".webm", ".apng")
    clips = []
    for i, row in enumerate(rows):
        if not (isinstance(row, (tuple, list)) and len(row) == 2):
            raise ValueError(f"contact_sheet row {i} is {type(row).__name__}; expected (label, frames)")
        label, frames = row
        a = _as_frames(frames, name=f"row {i} ({label!r}) frames")
        w = max(1, round(a.shape[2] * cell_height / a.shape[1]))
        clips.append((str(label), np.stack([_resize(f, w, cell_height) for f in a])))

    if animated:
        n_t = max(len(c) for _, c in clips)
        width = label_width + max(c.shape[2] for _, c in clips) + 2 * gap
        sheet = np.full((n_t, gap + len(clips) * (cell_height + gap), width, 3), 255, np.uint8)
        for r, (label, c) in enumerate(clips):
            y = gap + r * (cell_height + gap)
            idx = np.minimum(np.arange(n_t), len(c) - 1)
            sheet[:, y : y + cell_height, label_width + gap : label_width + gap + c.shape[2]] = c[idx]
            _draw_label(sheet[0], label, y, label_width, cell_height)
            sheet[1:, y : y + cell_height, :label_width] = sheet[0, y : y + cell_height, :label_width]
    else:
        picked = []
        for label, c in clips:
            idx = np.unique(np.linspace(0, len(c) - 1, num=min(columns, len(c))).round().astype(int))
            picked.append((label, c[idx]))
        width = label_width + gap + max(len(c) * (c.shape[2] + gap) for _, c in picked)
        sheet = np.full((gap + len(clips) * (cell_height + gap), width, 3), 255, np.uint8)
        for r, (label, c) in enumerate(picked):
            y = gap + r * (cell_height + gap)
            x = label_width + gap
            for f in c:
                sheet[y : y + cell_height, x : x + f.shape[1]] = f
                x += f.shape[1] + gap
            _draw_label(sheet, label, y, label_width, cell_height)
    if path is not None:
        write_video(path, sheet, fps)
    return sheet


def _as_frames(frames, *, name: str) -> np.ndarray:
    shape = tuple(getattr(frames, "shape", ()))
    if len(shape) in (4, 5) and shape[-1] not in (1, 3) and shape[-4] == 3:
        return video_tensor_to_frames(frames)
    return to_uint8_frames(frames, name=name)


def _resize(img: np.ndarray, w: int, h: int) -> np.ndarray:
    if img.shape[1] == w and img.shape[0] == h:
        return img
    shrink = w < img.shape[1] or h < img.shape[0]
    return cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_NEAREST)


def _draw_label(img: np.ndarray, label: str, y: int, width: int, height: int) -> None:
    """Word-wrap ASCII text into the ``width x height`` label panel at row ``y``.
    Drawn on a separate panel and pasted, so text never spills onto the clips
    (cv2 fonts have no non-ASCII glyphs, so those become '?')."""
    if width <= 8:
        return
    text = label.encode("ascii", "replace").decode("ascii")
    font, scale, thick = cv2.FONT_HERSHEY_SIMPLEX, 0.4, 1
    (_, th), base = cv2.getTextSize("Ag", font, scale, thick)
    line_h = th + base + 2
    fits = lambda s: cv2.getTextSize(s, font, scale, thick)[0][0] <= width - 8  # noqa: E731
    lines: list[str] = []
    for para in text.splitlines() or [""]:
        cur = ""
        for word in para.split(" "):
            cand = f"{cur} {word}".strip()
            if fits(cand):
                cur = cand
                continue
            if cur:
                lines.append(cur)
            while word and not fits(word):  # a word wider than the panel: hard-break it
                cut = 1
                while cut < len(word) and fits(word[: cut + 1]):
                    cut += 1
                lines.append(word[:cut])
                word = word[cut:]
            cur = word
        lines.append(cur)
    panel = np.full((height, width, 3), 255, np.uint8)
    for j, line in enumerate(lines[: max(1, (height - 4) // line_h)]):
        cv2.putText(panel, line, (4, 2 + th + j * line_h), font, scale, (0, 0, 0), thick, cv2.LINE_AA)
    img[y : y + height, :width] = panel
