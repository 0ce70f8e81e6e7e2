"""Eval's contact sheets: labelled clips, still (frames spread over each clip) or playing."""

from pathlib import Path

import pytest

from sora_core.eval.sheets import contact_sheet
from sora_core.io import read_video

FIXTURES = Path(__file__).parent / "fixtures" / "clips"


def test_contact_sheet_png_and_gif(tmp_path):
    snow, _ = read_video(FIXTURES / "fox_snow.webp")
    fox, _ = read_video(FIXTURES / "fox_portrait.gif")
    rows = [("landscape: fox in snow", snow), ("portrait", fox)]
    sheet = contact_sheet(rows, tmp_path / "s.png", columns=4, cell_height=48, label_width=100, gap=2)
    assert sheet.ndim == 3 and sheet.shape[0] == 2 + 2 * 50
    assert (sheet[2:50, :100] < 128).any(), "label text drawn"
    assert read_video(tmp_path / "s.png")[0].shape == (1, *sheet.shape)
    anim = contact_sheet(rows, tmp_path / "s.gif", cell_height=48, fps=8)
    assert anim.shape[0] == 12  # the longest row plays fully
    assert read_video(tmp_path / "s.gif")[0].shape[0] == 12
    with pytest.raises(ValueError, match="at least one"):
        contact_sheet([], tmp_path / "e.png")
