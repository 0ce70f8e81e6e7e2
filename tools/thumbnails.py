"""Template-browser thumbnails made from each workflow's real output.

    python3 tools/build_workflows.py --thumbnails

ComfyUI's frontend asks for a custom pack's template thumbnail as `<workflow name>.jpg` beside the
workflow's JSON. Each workflow is run headless here (UI -> API as the frontend converts it, core
nodes replaced by the small doubles in tests/workflow_api.py) with the default model (or SORA_MODEL),
and every clip its Sora Save nodes save becomes part of a small square contact sheet: a video as
frames spread over its length, an image as itself. A workflow for weights that cannot be had here
(Wan) gets a title card instead: what it does, its model and the files it needs, drawn as text.
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from nodes import NODE_CLASS_MAPPINGS, host
from sora_core.fsutil import atomic_write
from tests.workflow_api import CORE_DOUBLES, class_specs, execute, ui_to_api

SIDE = 320  # pixels; the browser shows cards at about 200-300 px
GUTTER = 4
BACKGROUND = (24, 24, 27)
QUALITY = 85


def _cell(frame: torch.Tensor, width: int, height: int) -> Image.Image:
    """A (H, W, 3) frame in [0, 1] scaled to fit width x height, centred on the background."""
    image = Image.fromarray((frame.clamp(0, 1).numpy() * 255 + 0.5).astype(np.uint8))
    scale = min(width / image.width, height / image.height)
    image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.BICUBIC)
    cell = Image.new("RGB", (width, height), BACKGROUND)
    cell.paste(image, ((width - image.width) // 2, (height - image.height) // 2))
    return cell


def contact_sheet(videos: list[torch.Tensor], side: int = SIDE) -> Image.Image:
    """A square sheet of `videos` ((T, H, W, 3) in [0, 1]), one row each, frames spread over time.
    One video fills the sheet as a 2x2 grid of frames; n videos get n frames each (a single image, one)."""
    if not videos:
        raise ValueError("a thumbnail needs at least one saved output")
    n = len(videos)
    per = 4 if n == 1 else n
    cols = 2 if n == 1 else n
    rows = math.ceil(per / cols) * n
    cw, ch = (side - GUTTER * (cols - 1)) // cols, (side - GUTTER * (rows - 1)) // rows
    sheet = Image.new("RGB", (side, side), BACKGROUND)
    if n == 1 and videos[0].shape[0] == 1:
        sheet.paste(_cell(videos[0][0], side, side))
        return sheet
    slot = 0
    for video in videos:
        count = min(per, video.shape[0])
        picks = [round(i * (video.shape[0] - 1) / max(1, count - 1)) for i in range(count)]
        for i, t in enumerate(picks):
            r, c = divmod(slot + i, cols)
            sheet.paste(_cell(video[t], cw, ch), (c * (cw + GUTTER), r * (ch + GUTTER)))
        slot += math.ceil(per / cols) * cols
    return sheet


SAVE_NODES = ("SoraSaveVideo", "SoraSaveImage")


def saved_outputs(workflow: dict) -> list[torch.Tensor]:
    """Run a UI-format workflow headless; the frames of every file it saves, in graph order (not previews).
    The save nodes write their files into host.OUTPUT_DIR."""
    classes = {**NODE_CLASS_MAPPINGS, **CORE_DOUBLES}
    prompt = ui_to_api(workflow, class_specs(classes))
    outputs, _ = execute(prompt, classes)
    return [outputs[nid][0] for nid in sorted(prompt, key=int) if prompt[nid]["class_type"] in SAVE_NODES]


def write_thumbnails(folder: Path, names: list[str]) -> list[Path]:
    """<name>.jpg for each <name>.json in `folder`; returns the files written."""
    written = []
    saved_to = host.OUTPUT_DIR
    with tempfile.TemporaryDirectory() as scratch:
        host.OUTPUT_DIR = Path(scratch)  # the workflows' own saved files are not wanted
        try:
            for name in names:
                sheet = contact_sheet(saved_outputs(json.loads((folder / f"{name}.json").read_text())))
                written.append(atomic_write(folder / f"{name}.jpg",
                                            lambda tmp: sheet.save(tmp, "JPEG", quality=QUALITY, optimize=True)))
        finally:
            host.OUTPUT_DIR = saved_to
    return written


CARD_ACCENT = (63, 120, 158)  # the loader groups' colour in the workflows


def title_card(title: str, model: str, files: list[str], side: int = SIDE) -> Image.Image:
    """A square card: the workflow's title, the model it runs and the files it needs (`folder/name`
    under ComfyUI/models), in Pillow's own font (no system fonts needed; Pillow 10.1 or later)."""
    card = Image.new("RGB", (side, side), BACKGROUND)
    draw = ImageDraw.Draw(card)
    margin = side // 16
    # The template browser lays its "Node graph" badge over the top left corner: the band under it is
    # only colour, and the model's name starts below it.
    band = side // 7
    draw.rectangle([0, 0, side, band], fill=CARD_ACCENT)
    y = band + margin // 2
    draw.text((margin, y), model, font=ImageFont.load_default(side // 11), fill=(120, 180, 220))
    y += side // 8
    big = ImageFont.load_default(side // 13)
    for line in _wrap(draw, title, big, side - 2 * margin):
        draw.text((margin, y), line, font=big, fill=(236, 236, 236))
        y += side // 11
    small = ImageFont.load_default(side // 27)
    y = side - margin - len(files) * (side // 22) - side // 18
    draw.text((margin, y), "a title card, not an output; needs in ComfyUI/models:", font=small, fill=(160, 160, 168))
    for f in files:
        y += side // 22
        draw.text((margin, y), f, font=small, fill=(200, 200, 208))
    return card


def _wrap(draw: ImageDraw.ImageDraw, text: str, font, width: int) -> list[str]:
    lines: list[str] = []
    for word in text.split():
        if lines and draw.textlength(f"{lines[-1]} {word}", font=font) <= width:
            lines[-1] += f" {word}"
        else:
            lines.append(word)
    return lines


def card_comment(title: str, model: str, files: list[str]) -> str:
    """The card's text, also kept in the JPEG's comment so a test can tell a stale card from the pixels' fonts."""
    return "\n".join([title, model, *files])


def write_title_card(path: Path, title: str, model: str, files: list[str]) -> Path:
    card = title_card(title, model, files)
    comment = card_comment(title, model, files)
    return atomic_write(path, lambda tmp: card.save(tmp, "JPEG", quality=QUALITY, optimize=True, comment=comment))
