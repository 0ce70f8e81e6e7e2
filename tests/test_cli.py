"""`python -m sora_core`: the command line an artist or a script uses, run as a real process."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sora_core.io import read_video

REPO = Path(__file__).resolve().parents[1]
FAST = ["--steps", "2", "--no-recaption"]


def cli(*args):
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "sora_core", *map(str, args)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "clip.png"  # animated PNG: lossless, so frames compare exactly
    r = cli("generate", "a red ball moving right", "-o", path, "--width", 32, "--height", 32, "--frames", 9, *FAST)
    assert r.returncode == 0, r.stderr[-2000:]
    return path


def test_generate_writes_the_asked_size_and_length(clip):
    frames, _ = read_video(clip)
    assert frames.shape == (9, 32, 32, 3) and frames.std() > 1  # a picture, not a flat fill


def test_loop_keeps_the_clip_and_crossfades_only_next_to_the_joins(clip, tmp_path):
    source, _ = read_video(clip)
    r = cli("loop", clip, "x", "-o", tmp_path / "hard.png", "--transition-frames", 4, "--context-frames", 4,
            "--blend-frames", 0, *FAST)
    assert r.returncode == 0, r.stderr[-2000:]
    hard, _ = read_video(tmp_path / "hard.png")
    assert hard.shape[0] == 9 + 4 and np.array_equal(hard[:9], source)
    r = cli("loop", clip, "x", "-o", tmp_path / "soft.png", "--transition-frames", 4, "--context-frames", 4, *FAST)
    assert r.returncode == 0, r.stderr[-2000:]
    soft, _ = read_video(tmp_path / "soft.png")
    assert np.array_equal(soft[4], source[4]) and np.array_equal(soft[9:], hard[9:])
    assert not np.array_equal(soft[:4], source[:4])  # the default blends 4 frames at each end


def test_a_bad_blend_is_refused_by_name(clip, tmp_path):
    r = cli("extend", clip, "x", "-o", tmp_path / "x.png", "--new-frames", 4, "--context-frames", 4,
            "--blend-frames", -1, *FAST)
    assert r.returncode != 0 and "blend_frames=-1" in r.stderr
    assert not (tmp_path / "x.png").exists()
