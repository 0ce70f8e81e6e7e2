"""sora_core.io: round trips, fps resampling, errors checked before any work, atomic writes."""

from pathlib import Path

import numpy as np
import pytest

from sora_core import io as vio
from sora_core.data.real_clips import find_template_clips
from sora_core.io import (
    check_output,
    probe_video,
    read_video,
    to_uint8_frames,
    video_tensor_to_frames,
    write_video,
)

FIXTURES = Path(__file__).parent / "fixtures" / "clips"


def ramp(t=10, h=32, w=48):
    """Frame k is flat grey 20*k with a white left half: easy to identify after lossy coding."""
    frames = np.zeros((t, h, w, 3), np.uint8)
    for k in range(t):
        frames[k] = 20 * k
        frames[k, :, : w // 2, 1] = 255
    return frames


def frame_ids(frames):
    """Recover k from the red channel of the right half (20*k)."""
    return [int(round(f[:, -8:, 0].mean() / 20)) for f in frames]


@pytest.mark.parametrize("ext,tol", [("mp4", 6), ("webm", 6), ("gif", 1), ("webp", 6), ("png", 0), ("mkv", 6)])
def test_round_trip(tmp_path, ext, tol):
    frames = ramp()
    path = write_video(tmp_path / f"clip.{ext}", frames, fps=10)
    out, fps = read_video(path)
    assert out.shape == frames.shape and out.dtype == np.uint8
    assert fps == pytest.approx(10.0)
    assert np.abs(out.astype(int) - frames).mean() <= tol
    assert frame_ids(out) == list(range(10))
    info = probe_video(path)
    assert (info.width, info.height, info.num_frames) == (48, 32, 10)
    assert info.duration == pytest.approx(1.0)


@pytest.mark.parametrize("ext", ["mp4", "gif"])
def test_fps_resampling_picks_frames_on_screen(tmp_path, ext):
    path = write_video(tmp_path / f"c.{ext}", ramp(), fps=10)  # 1.0 s
    half, fps = read_video(path, fps=5)
    assert fps == 5.0 and frame_ids(half) == [0, 2, 4, 6, 8]
    double, _ = read_video(path, fps=20)
    assert frame_ids(double) == [k // 2 for k in range(20)]
    assert probe_video(path).frames_at(5) == 5 and probe_video(path).frames_at(20) == 20
    # start counts output frames, after resampling
    window, _ = read_video(path, fps=5, start=2, max_frames=2)
    assert frame_ids(window) == [4, 6]


def test_variable_gif_durations_are_honoured(tmp_path):
    from PIL import Image

    frames = ramp(3)
    path = tmp_path / "var.gif"
    imgs = [Image.fromarray(f) for f in frames]
    imgs[0].save(path, save_all=True, append_images=imgs[1:], duration=[100, 300, 100], loop=0)
    out, _ = read_video(path, fps=10)
    assert frame_ids(out) == [0, 1, 1, 1, 2]
    assert probe_video(path).frames_at(10) == 5


def test_stills_and_float_input(tmp_path):
    img = np.random.default_rng(0).random((20, 30, 3))  # float 0..1
    write_video(tmp_path / "a.png", img, fps=1)
    write_video(tmp_path / "b.jpg", (img * 255).astype(np.uint8), fps=1)
    out, fps = read_video(tmp_path / "a.png")
    assert out.shape == (1, 20, 30, 3) and fps == 1.0
    assert np.abs(out[0].astype(int) - to_uint8_frames(img)[0]).max() <= 0
    assert read_video(tmp_path / "b.jpg", fps=8)[0].shape == (1, 20, 30, 3)


def test_multi_frame_png_is_animated(tmp_path):
    write_video(tmp_path / "seq.png", ramp(4), fps=4)
    out, fps = read_video(tmp_path / "seq.png")
    assert out.shape[0] == 4 and fps == pytest.approx(4.0)


def test_fixture_clips_read():
    snow, fps = read_video(FIXTURES / "fox_snow.webp")
    assert snow.shape == (12, 36, 64, 3) and fps == pytest.approx(8.0)
    fox, fps = read_video(FIXTURES / "fox_portrait.gif")
    assert fox.shape == (9, 64, 36, 3) and fps == pytest.approx(10.0)
    assert snow.std() > 20  # real footage, not a flat test pattern


def test_read_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.mp4"):
        read_video(tmp_path / "nope.mp4")
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(ValueError, match=r"notes\.txt.*supported extensions: .*\.mp4.*\.gif"):
        read_video(tmp_path / "notes.txt")
    (tmp_path / "junk.mp4").write_bytes(b"\x00garbage" * 50)
    with pytest.raises(ValueError, match="could not decode.*junk.mp4"):
        read_video(tmp_path / "junk.mp4")
    (tmp_path / "junk.gif").write_bytes(b"GIF89a not really")
    with pytest.raises(ValueError, match="junk.gif"):
        read_video(tmp_path / "junk.gif")
    with pytest.raises(ValueError, match="fps=0"):
        read_video(FIXTURES / "fox_snow.webp", fps=0)
    with pytest.raises(ValueError, match="start=99 is past the end.*12 frames"):
        read_video(FIXTURES / "fox_snow.webp", start=99)


def test_write_errors(tmp_path):
    with pytest.raises(ValueError, match=r"\.xyz.*use one of"):
        write_video(tmp_path / "a.xyz", ramp(), 8)
    with pytest.raises(ValueError, match=r"shape \(4, 5\)"):
        write_video(tmp_path / "a.gif", np.zeros((4, 5)), 8)
    with pytest.raises(ValueError, match="JPEG holds one frame"):
        write_video(tmp_path / "a.jpg", ramp(2), 8)
    with pytest.raises(ValueError, match="fps=-1"):
        write_video(tmp_path / "a.gif", ramp(2), -1)
    with pytest.raises(ValueError, match="NaN"):
        write_video(tmp_path / "a.gif", np.full((2, 4, 4, 3), np.nan), 8)
    assert list(tmp_path.iterdir()) == []


def test_output_is_checked_before_any_frames_exist(tmp_path):
    check_output(tmp_path / "new" / "folder" / "a.gif", 8, frames=9)  # missing folders are made when writing
    with pytest.raises(ValueError, match=r"extension '\.mp3' is not supported"):
        check_output(tmp_path / "a.mp3", 8)
    with pytest.raises(ValueError, match="fps=0 is not allowed"):
        check_output(tmp_path / "a.gif", 0)
    with pytest.raises(ValueError, match="fps=nan is not allowed"):
        check_output(tmp_path / "a.gif", float("nan"))
    with pytest.raises(ValueError, match="cannot write 17 frames .*JPEG holds one frame"):
        check_output(tmp_path / "a.jpg", 8, frames=17)
    (tmp_path / "dir.gif").mkdir()
    with pytest.raises(IsADirectoryError, match="is a directory"):
        check_output(tmp_path / "dir.gif", 8)
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError, match="is a file, not a folder"):
        check_output(tmp_path / "file" / "a.gif", 8)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir.gif", "file"]  # nothing made


def test_atomic_write_keeps_old_file_and_no_temp(tmp_path, monkeypatch):
    target = tmp_path / "out.gif"
    write_video(target, ramp(3), 8)
    before = target.read_bytes()

    def half_then_crash(tmp, frames, fps, ext, quality):
        Path(tmp).write_bytes(b"GIF89a half-written")
        raise RuntimeError("disk on fire")

    monkeypatch.setitem(vio._WRITERS, ".gif", half_then_crash)
    with pytest.raises(RuntimeError, match="disk on fire"):
        write_video(target, ramp(5), 8)
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["out.gif"]


def test_odd_sizes_are_padded_for_mp4(tmp_path):
    out, _ = read_video(write_video(tmp_path / "odd.mp4", ramp(3, 17, 23), 8))
    assert out.shape == (3, 18, 24, 3)


def test_tensor_layout_helpers():
    torch = pytest.importorskip("torch")
    from sora_core.data.video_folder import frames_to_tensor

    frames = ramp(3)
    t = frames_to_tensor(frames)
    assert t.shape == (3, 3, 32, 48) and t.min() >= -1 and t.max() <= 1
    assert np.array_equal(video_tensor_to_frames(t), frames)
    assert np.array_equal(video_tensor_to_frames(t[None]), frames)
    with pytest.raises(ValueError, match=r"\[3,T,H,W\]"):
        video_tensor_to_frames(torch.zeros(2, 3, 4, 4, 4))


def test_template_clips_lookup():
    assert find_template_clips(package="no_such_package_for_sora_tests") == []
    clips = find_template_clips()
    if not clips:
        pytest.skip("comfyui-workflow-templates-media-video not installed")
    info = probe_video(clips[0])
    assert info.num_frames > 1 and info.width >= 300
    frames, _ = read_video(clips[0], fps=4, max_frames=2)
    assert frames.shape == (2, info.height, info.width, 3)
