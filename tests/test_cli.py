"""`python -m sora_core`: the command line an artist or a script uses, run as a real process."""

import os
import signal
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


def test_long_streams_a_video_of_the_asked_length_with_its_provenance(clip, tmp_path):
    out = tmp_path / "long.mp4"
    r = cli("long", "a red ball moving right", "-o", out, "--video", clip, "--frames", 41, "--new-frames", 8,
            "--context-frames", 4, *FAST)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "window 4/4" in r.stderr and "step 2/2" in r.stderr  # progress per window and per step
    frames, _ = read_video(out)
    source, _ = read_video(clip)
    assert frames.shape == (41, 32, 32, 3)
    assert np.abs(frames[:5].astype(int) - source[:5]).mean() < 6  # the clip opens it (mp4 is lossy)
    pytest.importorskip("c2pa")
    from sora_core.provenance import ASSERTION, read_manifest

    manifest = read_manifest(out)
    generation = next(a["data"] for a in manifest["manifests"][manifest["active_manifest"]]["assertions"]
                      if a["label"] == ASSERTION)
    assert generation["operation"] == "long" and manifest["validation_state"] == "Valid"


def test_long_ctrl_c_keeps_the_finished_windows_as_a_shorter_video(clip, tmp_path):
    out = tmp_path / "cut.mp4"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "sora_core", "long", "x", "-o", str(out), "--video", str(clip),
                             "--frames", "201", "--new-frames", "8", "--context-frames", "4", *FAST],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen = ""
    while "window 3/" not in seen:  # windows 1 and 2 are done and written
        char = proc.stderr.read(1)
        assert char, seen[-2000:]
        seen += char
    proc.send_signal(signal.SIGINT)
    stdout, _ = proc.communicate(timeout=300)
    assert proc.returncode == 130 and "cancelled" in stdout
    frames, _ = read_video(out)
    assert frames.shape[0] in (20, 28, 36) and frames.shape[0] < 201  # the clip's 4 settled frames + 8 a window


def test_long_refuses_bad_settings_before_writing_anything(tmp_path):
    r = cli("long", "x", "-o", tmp_path / "x.mp4", "--seconds", 5, "--drift", "sideways", *FAST)
    assert r.returncode != 0 and "invalid choice: 'sideways'" in r.stderr
    r = cli("long", "x", "-o", tmp_path / "x.mp4", "--frames", 17, *FAST)
    assert r.returncode != 0 and "frames=17 is not allowed" in r.stderr
    assert list(tmp_path.iterdir()) == []
