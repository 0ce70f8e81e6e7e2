"""Video reading and writing for sora_core, with no ComfyUI dependency.

Frames travel as ``uint8`` numpy arrays shaped ``[T, H, W, 3]`` in RGB order:
that is what people, Pillow and ComfyUI's IMAGE type (after a /255) expect, and it
is cheap to turn into the model's ``[3, T, H, W]`` float tensors in the dataset.

Containers (mp4/webm/mov/mkv/avi) go through ``cv2.VideoCapture``/``VideoWriter``;
GIF, animated WebP and animated PNG go through Pillow (imported lazily so that
importing this module never needs it), because only Pillow exposes their
per-frame durations. Still images are one-frame videos, which is how the Sora
report trains on images and videos together.

Resampling to a target ``fps`` picks, for every output time ``k / fps``, the
source frame that is on screen at that moment (its start time <= t < its end
time). That honours variable per-frame durations in GIF/WebP and never blends
frames, so a resampled clip contains only real frames.

Writers are atomic: they write to a temporary file in the destination folder and
``os.replace`` it into place, so a crash never leaves a half-written video. What they write
carries a C2PA manifest saying it is AI-generated (see :mod:`sora_core.provenance`).
"""

from __future__ import annotations

import contextlib
import importlib.util
import math
import numbers
import os
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import cv2
import numpy as np

from .fsutil import atomic_write
from .provenance import Provenance

__all__ = [
    "VideoInfo",
    "probe_video",
    "read_video",
    "write_video",
    "check_output",
    "to_uint8_frames",
    "video_tensor_to_frames",
    "mp4_codec",
    "READ_EXTENSIONS",
    "WRITE_EXTENSIONS",
]

CONTAINER_EXTENSIONS = (".mp4", ".webm", ".mov", ".mkv", ".avi", ".m4v")
ANIMATED_EXTENSIONS = (".gif", ".webp", ".png", ".apng")
STILL_EXTENSIONS = (".jpg", ".jpeg", ".bmp")
READ_EXTENSIONS = CONTAINER_EXTENSIONS + ANIMATED_EXTENSIONS + STILL_EXTENSIONS
WRITE_EXTENSIONS = (".mp4", ".webm", ".mov", ".mkv", ".avi", ".gif", ".webp", ".png", ".jpg", ".jpeg")

# GIF/WebP frames that declare no (or zero) duration are shown for 100 ms by browsers.
_DEFAULT_FRAME_MS = 100.0
# Used when a container reports no frame rate at all.
_FALLBACK_FPS = 25.0
# Float tolerance when comparing sample times against frame boundaries.
_EPS = 1e-9


# --------------------------------------------------------------------------- probing


@dataclass(frozen=True)
class VideoInfo:
    """What a file holds, known without decoding every pixel where possible."""

    path: str
    width: int
    height: int
    num_frames: int
    fps: float  # native average rate; 1.0 for stills (they have no timebase)
    duration: float  # seconds: sum of frame durations

    def frames_at(self, fps: float | None) -> int:
        """How many frames ``read_video(path, fps=fps)`` returns."""
        if fps is None or self.num_frames <= 1:
            return self.num_frames
        return _count_at(self.duration, fps)


def _count_at(duration: float, fps: float) -> int:
    # Output times k/fps that fall strictly inside [0, duration).
    return max(1, math.ceil((duration - _EPS) * fps)) if duration > 0 else 1


def probe_video(path: str | os.PathLike) -> VideoInfo:
    """Size, frame count, native fps and duration of a readable file.

    Animated WebP is probed by reading its RIFF frame headers, which is ~1000x
    faster than decoding (a folder of 80 template clips probes in milliseconds
    instead of ~12 s); anything the fast path cannot parse falls back to decoding.
    """
    p = _check_readable(path)
    ext = p.suffix.lower()
    if ext in CONTAINER_EXTENSIONS:
        cap = _open_capture(p)
        try:
            width = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH))
            height = int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
            fps = _capture_fps(cap)
            n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
            if n <= 0:  # some streams do not store a count: count by grabbing
                n = 0
                while cap.grab():
                    n += 1
        finally:
            cap.release()
        if n <= 0:
            raise ValueError(f"video {str(p)!r} has no decodable frames")
        return VideoInfo(str(p), width, height, n, fps, n / fps)
    if ext == ".webp":
        info = _probe_webp_riff(p)
        if info is not None:
            return info
    if ext in ANIMATED_EXTENSIONS:
        with _open_pillow(p) as im:
            width, height = im.size
            durations = list(_pillow_durations(im))
        return _info_from_durations(p, width, height, durations)
    img = _read_still(p)
    return VideoInfo(str(p), img.shape[1], img.shape[0], 1, 1.0, 1.0)


def _info_from_durations(p: Path, width: int, height: int, durations_ms: Sequence[float]) -> VideoInfo:
    n = len(durations_ms)
    if n <= 1:
        return VideoInfo(str(p), width, height, 1, 1.0, 1.0)
    total = sum(durations_ms) / 1000.0
    return VideoInfo(str(p), width, height, n, n / total, total)


def _probe_webp_riff(p: Path) -> VideoInfo | None:
    """Parse VP8X canvas size and ANMF frame durations; None if not animated/parsable."""
    try:
        with open(p, "rb") as f:
            head = f.read(12)
            if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WEBP":
                return None
            width = height = None
            durations: list[float] = []
            while True:
                chunk = f.read(8)
                if len(chunk) < 8:
                    break
                fourcc, size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
                if fourcc == b"VP8X":
                    data = f.read(size)
                    width = 1 + int.from_bytes(data[4:7], "little")
                    height = 1 + int.from_bytes(data[7:10], "little")
                    size -= len(data)
                elif fourcc == b"ANMF":
                    data = f.read(16)
                    ms = int.from_bytes(data[12:15], "little")
                    durations.append(float(ms) if ms > 0 else _DEFAULT_FRAME_MS)
                    size -= len(data)
                f.seek(size + (size & 1), os.SEEK_CUR)  # chunks are padded to even length
    except (OSError, struct.error):
        return None
    if width is None or len(durations) < 2:
        return None
    return _info_from_durations(p, width, height, durations)


# --------------------------------------------------------------------------- reading


def read_video(
    path: str | os.PathLike,
    *,
    fps: float | None = None,
    max_frames: int | None = None,
    start: int = 0,
) -> tuple[np.ndarray, float]:
    """Decode a video, animation or still image into ``uint8 [T, H, W, 3]`` RGB.

    ``fps``: resample to this rate by picking the frame on screen at each time
    ``k / fps`` (None keeps every native frame). ``start``: index of the first
    frame to return, counted in the *output* timeline (after resampling), so a
    dataset can pick a clip window in target-fps frames. ``max_frames`` caps
    the count. Returns ``(frames, fps)`` where fps is the requested rate, or the
    native average rate (1.0 for stills).
    """
    if fps is not None and not _positive(fps):
        raise ValueError(f"fps={fps!r} is not allowed: use a positive number or None for the native rate")
    if max_frames is not None and not (isinstance(max_frames, numbers.Integral) and max_frames >= 1):
        raise ValueError(f"max_frames={max_frames!r} is not allowed: use a positive int or None for all frames")
    if not (isinstance(start, numbers.Integral) and start >= 0):
        raise ValueError(f"start={start!r} is not allowed: use an int >= 0")
    fps = None if fps is None else float(fps)
    max_frames, start = (None if max_frames is None else int(max_frames)), int(start)
    p = _check_readable(path)
    ext = p.suffix.lower()

    if ext in CONTAINER_EXTENSIONS:
        frames, native = _read_capture(p, fps, max_frames, start)
    elif ext in ANIMATED_EXTENSIONS:
        frames, native = _read_pillow(p, fps, max_frames, start)
    else:
        frames, native = [_read_still(p)], 1.0
        frames = frames[start : start + (max_frames or 1)]

    if not frames:
        avail = probe_video(p).frames_at(fps)
        raise ValueError(
            f"start={start} is past the end of {str(p)!r}: it has {avail} frames"
            + (f" at fps={fps}" if fps else "")
        )
    return np.stack(frames), float(fps if fps is not None else native)


def _positive(x) -> bool:
    """A finite number > 0 (numpy scalars included, bools excluded)."""
    return isinstance(x, numbers.Real) and not isinstance(x, bool) and math.isfinite(x) and x > 0


def _check_readable(path: str | os.PathLike) -> Path:
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"video file not found: {str(p)!r}")
    if p.is_dir():
        raise IsADirectoryError(f"expected a video file but {str(p)!r} is a directory")
    if p.suffix.lower() not in READ_EXTENSIONS:
        raise ValueError(
            f"unsupported video file {str(p)!r} (extension {p.suffix or '<none>'!r}); "
            f"supported extensions: {', '.join(READ_EXTENSIONS)}"
        )
    return p


def _unreadable(p: Path, why: str = "") -> ValueError:
    return ValueError(
        f"could not decode {str(p)!r}{': ' + why if why else ''}; it may be corrupt or use a codec "
        f"this OpenCV/Pillow build lacks (supported extensions: {', '.join(READ_EXTENSIONS)})"
    )


def _resample(
    timeline: Iterator[tuple[float, float, Callable[[], np.ndarray]]],
    fps: float | None,
    max_frames: int | None,
    start: int,
) -> list[np.ndarray]:
    """Pick frames from ``(t_start, t_end, decode)`` triples; decode only picked ones."""
    out: list[np.ndarray] = []
    limit = max_frames if max_frames is not None else math.inf
    k = start  # index into the output timeline
    if limit <= 0:
        return out
    for i, (t0, t1, decode) in enumerate(timeline):
        if fps is None:
            if i >= start:
                out.append(decode())
        else:
            frame = None
            while len(out) < limit and k / fps < t1 - _EPS:
                if k / fps >= t0 - _EPS:  # frame i is on screen at time k/fps
                    frame = decode() if frame is None else frame
                    out.append(frame)
                k += 1
        if len(out) >= limit:  # stop before decoding another source frame
            break
    return out


def _open_capture(p: Path) -> "cv2.VideoCapture":
    cap = cv2.VideoCapture(str(p))
    if not cap.isOpened():
        cap.release()
        raise _unreadable(p, "OpenCV could not open it")
    return cap


def _capture_fps(cap: "cv2.VideoCapture") -> float:
    fps = float(cap.get(cv2.CAP_PROP_FPS))
    return fps if fps > 0 and math.isfinite(fps) else _FALLBACK_FPS


def _read_capture(p: Path, fps, max_frames, start) -> tuple[list[np.ndarray], float]:
    cap = _open_capture(p)
    try:
        native = _capture_fps(cap)

        def timeline():
            i = 0
            while cap.grab():  # grab() skips colour conversion for frames we drop
                def decode(i=i):
                    ok, bgr = cap.retrieve()
                    if not ok:
                        raise _unreadable(p, f"frame {i} failed to decode")
                    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)

                yield i / native, (i + 1) / native, decode
                i += 1
            if i == 0:
                raise _unreadable(p, "no frames")

        frames = _resample(timeline(), fps, max_frames, start)
    finally:
        cap.release()
    return frames, native


def _open_pillow(p: Path):
    from PIL import Image, UnidentifiedImageError

    try:
        return Image.open(p)
    except (UnidentifiedImageError, OSError) as e:
        raise _unreadable(p, f"Pillow: {e}") from e


def _pillow_durations(im) -> Iterator[float]:
    """Per-frame display time in ms. Pillow composites GIF/APNG disposal for us on
    seek, and only ``load()`` fills ``info['duration']``, so this decodes."""
    for i in range(getattr(im, "n_frames", 1)):
        im.seek(i)
        im.load()
        ms = im.info.get("duration") or 0
        yield float(ms) if ms > 0 else _DEFAULT_FRAME_MS


def _read_pillow(p: Path, fps, max_frames, start) -> tuple[list[np.ndarray], float]:
    with _open_pillow(p) as im:
        n = getattr(im, "n_frames", 1)
        total_ms = [0.0]

        def timeline():
            t = 0.0
            for ms in _pillow_durations(im):  # leaves `im` on the current frame
                t0, t = t, t + ms / 1000.0
                total_ms[0] += ms
                yield t0, t, (lambda: np.asarray(im.convert("RGB")))

        try:
            frames = _resample(timeline(), fps, max_frames, start)
        except (OSError, EOFError) as e:
            raise _unreadable(p, f"Pillow: {e}") from e
    # Native rate is only known when we walked every frame; otherwise probe cheaply.
    if n <= 1:
        native = 1.0
    elif fps is None and max_frames is None:
        native = n / (total_ms[0] / 1000.0)
    else:
        native = probe_video(p).fps if fps is None else float(fps)
    return frames, native


def _read_still(p: Path) -> np.ndarray:
    bgr = cv2.imread(str(p), cv2.IMREAD_COLOR)
    if bgr is None:
        raise _unreadable(p, "OpenCV could not read the image")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


# --------------------------------------------------------------------------- writing


def to_uint8_frames(frames, *, name: str = "frames") -> np.ndarray:
    """Normalise ``[T,H,W,3]`` / ``[H,W,3]`` (uint8, or float in 0..1; numpy or a CPU
    torch tensor) to contiguous ``uint8 [T,H,W,3]``. Grey ``[T,H,W,1]`` is expanded."""
    a = np.asarray(frames.detach().cpu() if hasattr(frames, "detach") else frames)
    if a.ndim == 3 and a.shape[-1] in (1, 3):
        a = a[None]
    if a.ndim != 4 or a.shape[-1] not in (1, 3) or 0 in a.shape:
        raise ValueError(
            f"{name} has shape {tuple(a.shape)}; expected [T,H,W,3] or [H,W,3] with T,H,W >= 1"
        )
    if a.shape[-1] == 1:
        a = np.repeat(a, 3, axis=-1)
    if a.dtype == np.uint8:
        return np.ascontiguousarray(a)
    if a.dtype.kind == "f":
        if not np.isfinite(a).all():
            raise ValueError(f"{name} contains NaN or inf; expected floats in 0..1")
        return np.ascontiguousarray(np.round(np.clip(a, 0.0, 1.0) * 255.0).astype(np.uint8))
    if a.dtype.kind in "iu" or a.dtype == bool:
        if a.min() < 0 or a.max() > 255:
            raise ValueError(f"{name} has integer values outside 0..255 (dtype {a.dtype})")
        return np.ascontiguousarray(a.astype(np.uint8))
    raise ValueError(f"{name} has dtype {a.dtype}; expected uint8 or float in 0..1")


def video_tensor_to_frames(video) -> np.ndarray:
    """Model/dataset layout ``[3,T,H,W]`` (or ``[B,3,T,H,W]`` with B=1) in [-1,1]
    -> ``uint8 [T,H,W,3]``, the inverse of the dataset's normalisation."""
    a = np.asarray(video.detach().float().cpu() if hasattr(video, "detach") else video, dtype=np.float32)
    if a.ndim == 5 and a.shape[0] == 1:
        a = a[0]
    if a.ndim != 4 or a.shape[0] != 3:
        raise ValueError(f"video has shape {tuple(a.shape)}; expected [3,T,H,W] (channels first) in [-1,1]")
    return to_uint8_frames((a.transpose(1, 2, 3, 0) + 1.0) / 2.0, name="video")


_MP4_CODEC: str | None = None


@contextlib.contextmanager
def _quiet_stderr():
    """Silence FFmpeg's C-level chatter (e.g. "h264_v4l2m2m: Could not find a valid
    device" while probing avc1, or VP80 tag warnings) by pointing fd 2 at /dev/null
    for the duration. Only wrapped around encoder opens, which take milliseconds."""
    try:
        saved = os.dup(2)
    except OSError:  # no real stderr (embedded interpreters): nothing to silence
        yield
        return
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)



def mp4_codec() -> str:
    """FourCC used for .mp4: 'avc1' (H.264, plays in browsers) when this OpenCV build
    can encode it, else 'mp4v' (MPEG-4 Part 2, plays in VLC/ffmpeg but not in most
    browsers). The pip opencv wheels ship no H.264 encoder, so expect 'mp4v'.
    Probed once per process; ``SORA_MP4_CODEC`` overrides."""
    global _MP4_CODEC
    if _MP4_CODEC is None:
        forced = os.environ.get("SORA_MP4_CODEC")
        if forced:
            _MP4_CODEC = forced
        else:
            _MP4_CODEC = "mp4v"
            with tempfile.TemporaryDirectory() as d, _quiet_stderr():
                w = cv2.VideoWriter(os.path.join(d, "probe.mp4"), cv2.VideoWriter_fourcc(*"avc1"), 8, (16, 16))
                if w.isOpened():
                    _MP4_CODEC = "avc1"
                w.release()
    return _MP4_CODEC


def _write_cv2(tmp: str, frames: np.ndarray, fps: float, ext: str, quality: int) -> None:
    fourcc = {".mp4": mp4_codec(), ".m4v": mp4_codec(), ".webm": "VP80", ".avi": "MJPG"}.get(ext, "mp4v")
    t, h, w, _ = frames.shape
    with _quiet_stderr():
        writer = cv2.VideoWriter(tmp, cv2.VideoWriter_fourcc(*fourcc), float(fps), (w, h))
    if not writer.isOpened():
        writer.release()
        raise ValueError(f"OpenCV cannot encode {ext} with codec {fourcc!r} at {w}x{h} in this build")
    try:
        for f in frames:
            writer.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    finally:
        writer.release()


def _write_pillow(tmp: str, frames: np.ndarray, fps: float, ext: str, quality: int) -> None:
    from PIL import Image

    images = [Image.fromarray(f, "RGB") for f in frames]
    duration = max(1, int(round(1000.0 / fps)))
    if ext in (".jpg", ".jpeg"):
        images[0].save(tmp, format="JPEG", quality=quality)
    elif len(images) == 1 and ext == ".png":
        images[0].save(tmp, format="PNG")
    elif ext == ".gif":
        # GIF stores delays in 1/100 s, so e.g. 12 fps (83 ms) plays at 12.5 fps.
        images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:],
                       duration=duration, loop=0, disposal=1)
    elif ext == ".webp":
        images[0].save(tmp, format="WEBP", save_all=len(images) > 1, append_images=images[1:],
                       duration=duration, loop=0, quality=quality, method=4)
    else:  # .png/.apng with several frames -> animated PNG (lossless, Pillow reads it back)
        images[0].save(tmp, format="PNG", save_all=True, append_images=images[1:],
                       duration=duration, loop=0)


_WRITERS: dict[str, Callable[[str, np.ndarray, float, str, int], None]] = {
    **{e: _write_cv2 for e in (".mp4", ".m4v", ".webm", ".mov", ".mkv", ".avi")},
    **{e: _write_pillow for e in (".gif", ".webp", ".png", ".apng", ".jpg", ".jpeg")},
}


_GENERATED = Provenance()


def check_output(path: str | os.PathLike, fps: float, *, frames: int | None = None, quality: int = 90) -> Path:
    """What `write_video` would refuse, checked before any work: the extension, fps, quality, several
    frames for a JPEG (`frames` None: not known yet), Pillow for its formats, and a place to write."""
    p = Path(path)
    ext = p.suffix.lower()
    if ext not in _WRITERS:
        raise ValueError(
            f"cannot write {str(p)!r}: extension {p.suffix or '<none>'!r} is not supported; "
            f"use one of {', '.join(WRITE_EXTENSIONS)}"
        )
    if not _positive(fps):
        raise ValueError(f"fps={fps!r} is not allowed for {str(p)!r}: use a positive number")
    if isinstance(quality, bool) or not (isinstance(quality, int) and 1 <= quality <= 100):
        raise ValueError(f"quality={quality!r} is not allowed: use an int in 1..100")
    if ext in (".jpg", ".jpeg") and frames is not None and frames > 1:
        raise ValueError(f"cannot write {frames} frames to {str(p)!r}: JPEG holds one frame; use .png/.gif/.webp/.mp4")
    if _WRITERS[ext] is _write_pillow and importlib.util.find_spec("PIL") is None:
        raise ValueError(f"writing {ext} files needs Pillow, which is not installed: pip install pillow")
    if p.is_dir():
        raise IsADirectoryError(f"output {str(p)!r} is a directory; give a file name, e.g. {str(p / ('out' + '.mp4'))!r}")
    folder = p.parent.absolute()
    while not folder.exists():  # atomic_write makes missing folders
        folder = folder.parent
    if not folder.is_dir():
        raise NotADirectoryError(f"cannot write {str(p)!r}: {str(folder)!r} is a file, not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise PermissionError(f"cannot write {str(p)!r}: the folder {str(folder)!r} is not writable")
    return p


def write_video(path: str | os.PathLike, frames, fps: float, *, quality: int = 90,
                provenance: Provenance | None = _GENERATED) -> Path:
    """Write frames to ``path``, the format chosen by its extension, atomically.

    .mp4 (see :func:`mp4_codec`), .webm (VP8), .mov/.mkv (mp4v), .avi (MJPG);
    .gif / .webp animated and looping forever; .png one frame as PNG, several as
    an animated PNG; .jpg one frame only. ``frames``: uint8 or float 0..1,
    ``[T,H,W,3]`` or ``[H,W,3]``. ``quality`` applies to WebP and JPEG.
    ``provenance``: the C2PA manifest to embed (default: AI-generated by sora-nodes,
    no model or prompt recorded); None writes none.
    """
    arr = to_uint8_frames(frames)
    p = check_output(path, fps, frames=len(arr), quality=quality)
    ext = p.suffix.lower()
    if ext in (".mp4", ".m4v", ".mov", ".mkv") and (arr.shape[1] % 2 or arr.shape[2] % 2):
        # MPEG encoders want even sizes; pad by edge replication rather than fail.
        arr = np.pad(arr, ((0, 0), (0, arr.shape[1] % 2), (0, arr.shape[2] % 2), (0, 0)), mode="edge")
    def encode(tmp: str) -> None:
        _WRITERS[ext](tmp, arr, float(fps), ext, quality)

    _atomic_write(p, encode if provenance is None else lambda tmp: provenance.write(p, tmp, encode))
    return p


def _atomic_write(p: Path, write: Callable[[str], None]) -> None:
    """`fsutil.atomic_write`, refusing an empty result (an encoder that silently wrote nothing)."""

    def checked(tmp: str) -> None:
        write(tmp)
        if os.path.getsize(tmp) == 0:
            raise ValueError(f"writing {str(p)!r} produced an empty file")

    atomic_write(p, checked)
