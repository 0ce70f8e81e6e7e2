"""`python -m sora_core`: the command line an artist or a script uses, run as a real process, and its
errors (one line, exit status 2, before any work) through the same `main`."""

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sora_core.__main__ import main
from sora_core.io import read_video, write_video
from sora_core.recaption import plan
from sora_core.pipeline import Pipeline

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
    # the default: the clip's end crossfades into the transition (4 frames), its start stays (it follows the
    # transition on repeat), and the transition's second half eases into the clip's first frame instead
    assert np.array_equal(soft[:5], source[:5]) and not np.array_equal(soft[5:9], source[5:])
    assert np.array_equal(soft[9:11], hard[9:11])
    w = np.array([1, 2]).reshape(2, 1, 1, 1) / 3
    eased = hard[11:].astype(float) * (1 - w) + source[:1].astype(float) * w
    assert np.abs(soft[11:].astype(float) - eased).max() <= 1.0


def test_a_bad_blend_is_refused_by_name_in_one_line(clip, tmp_path):
    r = cli("extend", clip, "x", "-o", tmp_path / "x.png", "--new-frames", 4, "--context-frames", 4,
            "--blend-frames", -1, *FAST)
    assert r.returncode == 2 and r.stderr.splitlines()[-1].startswith("error: blend_frames=-1 is not allowed")
    assert "Traceback" not in r.stderr and not (tmp_path / "x.png").exists()
    r = cli("connect", clip, clip, "x", "-o", tmp_path / "x.png", "--transition-frames", 4, "--context-frames", 4,
            "--strength", 1.5, *FAST)
    assert r.returncode == 2 and r.stderr.splitlines()[-1].startswith("error: strength=1.5 is not allowed")
    assert not (tmp_path / "x.png").exists()


# -- errors: one line, exit status 2, before any work (in-process: the same main() the process runs) ------

def run_main(capsys, *args):
    status = main([str(a) for a in args])
    return status, capsys.readouterr().err


@pytest.mark.parametrize("args,message", [
    (["-o", "x.xyz"], r"error: cannot write '.*x\.xyz': extension '\.xyz' is not supported; use one of"),
    (["-o", "x.gif", "--fps", 0], r"error: fps=0\.0 is not allowed for '.*x\.gif': use a positive number"),
    (["-o", "x.jpg", "--frames", 17], r"error: cannot write 17 frames to '.*x\.jpg': JPEG holds one frame"),
    (["-o", "x.gif", "--shift", 0], r"error: shift=0\.0 is not allowed: use a number > 0"),
    (["-o", "x.gif", "--shift", -3], r"error: shift=-3\.0 is not allowed"),
    (["-o", "x.gif", "--seed", -1], r"error: seed=-1 is not allowed: use an integer from 0 to 2\*\*64 - 1"),
    (["-o", "x.gif", "--seed", 2**64], r"error: seed=18446744073709551616 is not allowed"),
    (["-o", "x.gif", "--steps", 0], r"error: steps=0 is not allowed"),
    (["-o", "x.gif", "--layout-cfg", -2], r"error: layout_cfg=-2\.0 is not allowed: use a number >= 0"),
    (["-o", "x.gif", "--max-memory", "lots"], r"error: --max-memory: memory size 'lots' is not allowed"),
    (["-o", "x.gif", "--max-tokens", 0], r"error: --max-tokens=0 is not allowed"),
])
def test_errors_found_before_any_work_are_one_line_and_exit_2(capsys, tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(Pipeline, "load", lambda *a, **k: pytest.fail("loaded the model"))
    status, err = run_main(capsys, "generate", "a red ball", *args, "--no-recaption")
    assert status == 2 and re.fullmatch(message + ".*\n", err) and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("variable,message", [
    ("SORA_MAX_TOKENS", "error: SORA_MAX_TOKENS='lots' is not allowed: use a positive integer\n"),
    ("SORA_MAX_MEMORY", "error: SORA_MAX_MEMORY: memory size 'lots' is not allowed: use a positive size such as 16GB, "
                        "512MB or 1.5T\n"),
])
def test_a_bad_limit_in_the_environment_is_named_before_loading(capsys, tmp_path, monkeypatch, variable, message):
    monkeypatch.setenv(variable, "lots")
    monkeypatch.setattr(Pipeline, "load", lambda *a, **k: pytest.fail("loaded the model"))
    status, err = run_main(capsys, "generate", "x", "-o", tmp_path / "x.gif", "--no-recaption", "--no-provenance")
    assert status == 2 and err == message


def test_a_missing_input_file_is_named_before_loading(capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(Pipeline, "load", lambda *a, **k: pytest.fail("loaded the model"))
    status, err = run_main(capsys, "animate", tmp_path / "still.png", "x", "-o", tmp_path / "x.gif")
    assert status == 2 and err == f"error: video file not found: '{tmp_path / 'still.png'}'\n"


def test_an_absurd_size_is_refused_before_sampling(capsys, tmp_path, micro_checkpoint, monkeypatch):
    monkeypatch.delenv("SORA_MAX_TOKENS", raising=False)
    status, err = run_main(capsys, "generate", "x", "-o", tmp_path / "x.gif", "--width", 65536, "--height", 65536,
                           "--model", micro_checkpoint, "--no-recaption", "--no-provenance")
    assert status == 2 and err.startswith("error: generate: 65536x65536 px x 17 frames is 335,544,320 DiT tokens; "
                                          "the limit is 65,536") and err.count("\n") == 1
    status, err = run_main(capsys, "generate", "x", "-o", tmp_path / "x.gif", "--width", 32, "--height", 32,
                           "--max-tokens", 10, "--model", micro_checkpoint, "--no-recaption", "--no-provenance")
    assert status == 2 and "32x32 px x 17 frames is 80 DiT tokens; the limit is 10 (as asked" in err
    assert list(tmp_path.iterdir()) == []


def test_an_edit_into_a_jpeg_is_refused_before_sampling_once_its_length_is_known(capsys, tmp_path, micro_checkpoint,
                                                                                 monkeypatch):
    source = tmp_path / "clip.png"
    write_video(source, np.random.default_rng(0).integers(0, 255, (9, 16, 16, 3), dtype=np.uint8), 8, provenance=None)
    monkeypatch.setattr(Pipeline, "edit", lambda *a, **k: pytest.fail("sampled"))
    status, err = run_main(capsys, "edit", source, "x", "-o", tmp_path / "x.jpg", "--model", micro_checkpoint,
                           "--no-recaption", "--no-provenance")
    assert status == 2 and err == f"error: cannot write 9 frames to '{tmp_path / 'x.jpg'}': JPEG holds one frame; use .png/.gif/.webp/.mp4\n"


def test_debug_shows_the_traceback_instead(capsys, tmp_path):
    for args in (["--debug", "generate", "x", "-o", tmp_path / "x.xyz"], ["generate", "x", "-o", tmp_path / "x.xyz", "--debug"]):
        with pytest.raises(ValueError, match="extension '.xyz' is not supported"):
            main([str(a) for a in args])


def test_argument_errors_are_one_line_too(capsys):
    with pytest.raises(SystemExit) as exit:
        main(["generate", "x", "-o", "x.gif", "--frames", "many"])
    err = capsys.readouterr().err
    assert exit.value.code == 2
    assert err == "error: argument --frames: invalid int value: 'many' (see python -m sora_core generate --help)\n"


def test_ctrl_c_is_one_line_and_exit_130(capsys, tmp_path, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(Pipeline, "load", interrupted)
    status, err = run_main(capsys, "generate", "x", "-o", tmp_path / "x.gif", "--no-recaption", "--no-provenance")
    assert status == 130 and err == "interrupted\n"


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
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            # as in a terminal: a test run started in the background inherits SIGINT ignored
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
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


@pytest.mark.parametrize("args,message", [
    (["--seconds", 0], r"error: --seconds=0\.0 is not allowed: use a positive number of seconds"),
    (["--frames", 1], r"error: --frames=1 is 1 frame\(s\); a long video needs more \(e\.g\. --seconds 60\)"),
    (["--drift", "sideways"], r"error: argument --drift: invalid choice: 'sideways'.*"),
    (["-o", "x.jpg"], r"error: cannot write 480 frames to '.*x\.jpg': JPEG holds one frame.*"),
])
def test_long_refuses_bad_settings_in_one_line_before_loading(capsys, tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(Pipeline, "load", lambda *a, **k: pytest.fail("loaded the model"))
    try:
        status = main(["long", "x", "-o", "x.mp4", *map(str, args), "--no-recaption"])
    except SystemExit as exit:  # argparse's own errors
        status = exit.code
    err = capsys.readouterr().err
    assert status == 2 and re.fullmatch(message + "\n", err), err
    assert list(tmp_path.iterdir()) == []


def test_long_refuses_what_the_model_cannot_chain_before_writing_anything(capsys, tmp_path, micro_checkpoint):
    for args, message in ((["--frames", 17], "error: frames=17 is not allowed: a long video is longer than its "
                                             "opening (17 frames); use at least 18"),
                          (["--new-frames", 6], "error: new_frames=6 is not allowed: use a multiple of 4 frames")):
        status, err = run_main(capsys, "long", "x", "-o", tmp_path / "x.mp4", *args, "--model", micro_checkpoint,
                               "--no-recaption", "--no-provenance")
        assert status == 2 and err.startswith(message) and err.count("\n") == 1, err
    assert list(tmp_path.iterdir()) == []


def test_generate_recaptions_and_hands_the_shipped_model_the_plan(tmp_path):
    out = tmp_path / "planned.png"
    r = cli("generate", "a red ball moving right", "-o", out, "--width", 32, "--height", 32, "--frames", 5,
            "--steps", "2", "--seed", 3)
    assert r.returncode == 0, r.stderr[-2000:]
    caption, scene = plan("a red ball moving right", seed=3, frames=5)  # planned for the clip's 5 frames
    assert f"caption: {caption}" in r.stderr and "layout: red circle right" in r.stderr
    assert [(o.color, o.motion) for o in scene.objects] == [("red", "right")]
    loose = tmp_path / "loose.png"  # the same plan, without guidance toward it
    r = cli("generate", "a red ball moving right", "-o", loose, "--width", 32, "--height", 32, "--frames", 5,
            "--steps", "2", "--seed", 3, "--layout-cfg", 0)
    assert r.returncode == 0 and not np.array_equal(read_video(out)[0], read_video(loose)[0]), r.stderr[-2000:]
    r = cli("generate", "a red ball moving right", "-o", out, "--width", 32, "--height", 32, "--frames", 5, *FAST)
    assert r.returncode == 0 and "layout:" not in r.stderr  # a caption as written has no plan
    long = tmp_path / "planned.mp4"  # a long video's opening follows the plan too
    r = cli("long", "a red ball moving right", "-o", long, "--width", 32, "--height", 32, "--frames", 25,
            "--steps", "1", "--seed", 3, "--no-provenance")
    assert r.returncode == 0 and "layout: red circle right" in r.stderr, r.stderr[-2000:]
