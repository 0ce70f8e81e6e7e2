"""Native-aspect bucketing: train on clips at (close to) their own shape and length.

The Sora report trains on videos at their native aspect ratio, resolution and
duration instead of square-cropping them, which improves framing and lets one
model sample widescreen, vertical and square video. The practical recipe (as in
Open-Sora) is to snap every clip to the nearest *bucket* — a (width, height,
frames) triple from a small menu — and batch only clips of the same bucket so a
batch is one dense tensor.

Buckets come from a grid of

* resolutions, named by pixel area: "64px" is any W x H with W*H ~ 64*64;
* aspect ratios (width / height) from 9:16 to 16:9;
* frame counts 1 + 4k (1 = an image, which the causal VAE encodes alone, and
  every further 4 frames become one latent frame);

with W and H rounded to ``size_multiple`` (8 = the VAE's 4x spatial stride times
the DiT's 2x2 patch, so every bucket patchifies exactly). Because a 16:9 clip at
33 frames has far more tokens than a 1-frame square image, each bucket gets its
own batch size so every batch holds about ``tokens_per_batch`` tokens — that
keeps step time and memory roughly constant across buckets.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable, Iterable, Iterator, NamedTuple, Sequence

__all__ = [
    "Bucket",
    "BucketConfig",
    "BucketBatcher",
    "collate",
    "ASPECT_RATIOS",
    "parse_resolution",
    "parse_aspect_ratio",
]

# width:height, portrait to landscape.
ASPECT_RATIOS = ("9:16", "2:3", "3:4", "1:1", "4:3", "3:2", "16:9")


class Bucket(NamedTuple):
    """One training shape. A NamedTuple so it is hashable (dict key), sortable and
    survives torch's default_collate and pickling into DataLoader workers."""

    width: int
    height: int
    frames: int

    @property
    def aspect(self) -> float:
        return self.width / self.height

    @property
    def pixels(self) -> int:
        return self.width * self.height * self.frames

    def __str__(self) -> str:
        return f"{self.width}x{self.height}x{self.frames}"


def parse_resolution(value: int | str) -> int:
    """'64px', '64', 64 -> 64 (the side of the square with the same area)."""
    raw = value
    if isinstance(value, str):
        value = value.strip().lower().removesuffix("px")
        try:
            value = int(value)
        except ValueError:
            value = None
    if not isinstance(value, int) or isinstance(value, bool) or value < 8:
        raise ValueError(f"resolution {raw!r} is not allowed: use an int >= 8 or a string like '64px'")
    return value


def parse_aspect_ratio(value: float | str) -> float:
    """'16:9' -> 1.777..., 0.75 -> 0.75 (always width / height)."""
    raw = value
    try:
        if isinstance(value, str):
            w, _, h = value.partition(":")
            value = float(w) / float(h) if h else float(w)
        value = float(value)
    except (ValueError, ZeroDivisionError):
        value = float("nan")
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"aspect ratio {raw!r} is not allowed: use 'W:H' like '16:9' or a positive float W/H")
    return value


def _round_to(x: float, m: int) -> int:
    return max(m, int(round(x / m)) * m)


@dataclass(frozen=True)
class BucketConfig:
    """A menu of buckets plus the batch-size rule.

    Tokens of a bucket = ``(W / spatial_stride) * (H / spatial_stride) *
    (1 + (frames - 1) // temporal_stride)`` — the spacetime patches the DiT sees
    with the default 4x VAE + 2x2 patch (8) and 4x temporal compression. The
    batch size is ``tokens_per_batch // tokens``, clamped to
    ``[1, max_batch_size]``.
    """

    resolutions: tuple = ("64px",)
    aspect_ratios: tuple = ASPECT_RATIOS
    frames: tuple = (1, 9, 17)
    size_multiple: int = 8
    tokens_per_batch: int = 4096
    max_batch_size: int = 64
    spatial_stride: int = 8
    temporal_stride: int = 4
    _res: tuple = field(init=False, repr=False, compare=False)
    _ars: tuple = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        res = tuple(sorted({parse_resolution(r) for r in _as_tuple(self.resolutions, "resolutions")}))
        ars = tuple(sorted({parse_aspect_ratio(a) for a in _as_tuple(self.aspect_ratios, "aspect_ratios")}))
        frames = _as_tuple(self.frames, "frames")
        for f in frames:
            if not isinstance(f, int) or f < 1 or (f - 1) % self.temporal_stride:
                raise ValueError(
                    f"frame count {f!r} in frames={frames!r} is not allowed: use 1 + "
                    f"{self.temporal_stride}k (1, {1 + self.temporal_stride}, {1 + 2 * self.temporal_stride}, ...)"
                )
        for name in ("size_multiple", "tokens_per_batch", "max_batch_size", "spatial_stride", "temporal_stride"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"{name}={v!r} is not allowed: use a positive int")
        if self.size_multiple % self.spatial_stride and self.spatial_stride % self.size_multiple:
            raise ValueError(
                f"size_multiple={self.size_multiple} and spatial_stride={self.spatial_stride} must divide one another"
            )
        object.__setattr__(self, "frames", tuple(sorted(set(frames))))
        object.__setattr__(self, "_res", res)
        object.__setattr__(self, "_ars", ars)

    # ----------------------------------------------------------------- shapes

    def size(self, resolution: int | str, aspect: float | str) -> tuple[int, int]:
        """(W, H) with W*H ~ resolution**2, W/H ~ aspect, both multiples of size_multiple."""
        r, a = parse_resolution(resolution), parse_aspect_ratio(aspect)
        m = self.size_multiple
        return _round_to(r * math.sqrt(a), m), _round_to(r / math.sqrt(a), m)

    def buckets(self) -> list[Bucket]:
        """Every distinct bucket, sorted. Nearby aspect ratios can round to the same
        size at small resolutions; those are merged."""
        out = {
            Bucket(*self.size(r, a), f) for r in self._res for a in self._ars for f in self.frames
        }
        return sorted(out)

    def nearest(self, width: int, height: int, frames: int = 1) -> Bucket | None:
        """The bucket a native ``width x height x frames`` clip trains in.

        Aspect: the configured ratio nearest in log space (so 2:1 and 1:2 are
        equally far from 1:1). Resolution: the largest whose bucket fits inside
        the clip, so clips are only downscaled; a clip smaller than every
        resolution gets the smallest one (upscaled) rather than being dropped.
        Frames: the largest configured count <= ``frames`` (rounded down to
        1 + 4k); None when the clip is shorter than every configured count, so
        callers can skip it.
        """
        for name, v in (("width", width), ("height", height), ("frames", frames)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name}={v!r} is not allowed: use a positive int")
        fits = [f for f in self.frames if f <= frames]
        if not fits:
            return None
        log_a = math.log(width / height)
        aspect = min(self._ars, key=lambda a: (abs(math.log(a) - log_a), -a))
        best = None
        for r in self._res:
            w, h = self.size(r, aspect)
            if best is None or (w <= width and h <= height):
                best = (w, h)
        return Bucket(best[0], best[1], fits[-1])

    def resolution_of(self, bucket: Bucket) -> int:
        """The configured resolution a bucket was made from (nearest by area)."""
        return min(self._res, key=lambda r: abs(math.log(bucket.width * bucket.height / r**2)))

    def weight(self, bucket: Bucket, weights: dict) -> float:
        """How often to draw `bucket`: weights keyed by frame count (17) and / or resolution ('32px'),
        multiplied; missing keys count 1."""
        return float(weights.get(bucket.frames, 1.0)) * float(weights.get(f"{self.resolution_of(bucket)}px", 1.0))

    # ------------------------------------------------------------- batching

    def tokens(self, bucket: Bucket) -> int:
        s, t = self.spatial_stride, self.temporal_stride
        return max(1, bucket.width // s) * max(1, bucket.height // s) * (1 + (bucket.frames - 1) // t)

    def batch_size(self, bucket: Bucket) -> int:
        """Samples per batch so a batch holds ~tokens_per_batch tokens (at least 1)."""
        return max(1, min(self.max_batch_size, self.tokens_per_batch // self.tokens(bucket)))


def _as_tuple(v, name: str) -> tuple:
    t = (v,) if isinstance(v, (str, int, float)) else tuple(v)
    if not t:
        raise ValueError(f"{name} is empty; give at least one value")
    return t


# ---------------------------------------------------------------------- batching


class BucketBatcher:
    """Group a stream into same-bucket batches, shardable across DDP ranks.

    Keeps one small buffer per bucket and emits a buffer as soon as it holds
    ``batch_size(bucket)`` items, so memory is bounded by the sum of batch sizes
    however long the stream is. Output is a pure function of the input order.

    DDP: every rank feeds the *same* stream (cheap when items are indices) and
    the global batch sequence is dealt round-robin — batch ``b`` goes to rank
    ``b % world_size``. Ranks therefore see disjoint items, and because a rank
    only releases its batch once the whole round of ``world_size`` batches is
    complete, all ranks yield the same number of batches (a DDP step never
    waits on a rank that ran dry). Leftover partial buffers at the end of the
    stream are emitted as short batches unless ``drop_last``; an incomplete
    final round is dropped when world_size > 1.
    """

    def __init__(
        self,
        batch_size: Callable[[Bucket], int] | BucketConfig | int,
        *,
        key: Callable[[Any], Hashable] | None = None,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = False,
    ):
        if isinstance(batch_size, BucketConfig):
            batch_size = batch_size.batch_size
        elif isinstance(batch_size, int):
            if batch_size < 1:
                raise ValueError(f"batch_size={batch_size!r} is not allowed: use a positive int")
            fixed = batch_size
            batch_size = lambda _b: fixed  # noqa: E731
        if not isinstance(world_size, int) or world_size < 1:
            raise ValueError(f"world_size={world_size!r} is not allowed: use an int >= 1")
        if not isinstance(rank, int) or not 0 <= rank < world_size:
            raise ValueError(f"rank={rank!r} is not allowed: use an int in [0, world_size={world_size})")
        self.batch_size = batch_size
        self.key = key or _default_key
        self.rank, self.world_size, self.drop_last = rank, world_size, drop_last

    def __call__(self, items: Iterable[Any]) -> Iterator[list[Any]]:
        buffers: dict[Hashable, list] = {}
        round_: list[list] = []

        def deal(batch):  # collect a full round, then release this rank's share
            round_.append(batch)
            if len(round_) == self.world_size:
                mine = round_[self.rank]
                round_.clear()
                return mine
            return None

        for item in items:
            k = self.key(item)
            buf = buffers.setdefault(k, [])
            buf.append(item)
            if len(buf) >= self.batch_size(k):
                del buffers[k]
                mine = deal(buf)
                if mine is not None:
                    yield mine
        if not self.drop_last:
            for k in sorted(buffers, key=repr):  # deterministic flush order
                mine = deal(buffers[k])
                if mine is not None:
                    yield mine


def _default_key(item):
    if isinstance(item, dict):
        return item["bucket"]
    if isinstance(item, tuple) and len(item) == 2:
        return item[0]
    raise TypeError(
        f"BucketBatcher cannot find the bucket of a {type(item).__name__}: pass key=..., "
        "or feed dicts with a 'bucket' entry or (bucket, item) pairs"
    )


# ---------------------------------------------------------------------- collate


def collate(samples: Sequence[dict]) -> dict:
    """Stack same-bucket samples: ``video`` -> ``[B,3,T,H,W]``; string fields and
    anything else -> lists; ``bucket`` -> the shared Bucket. Mixed shapes are an
    error (they mean the sampler was not bucketed), reported with the paths."""
    import torch

    if not samples:
        raise ValueError("collate got an empty batch")
    shapes = {tuple(s["video"].shape) for s in samples}
    if len(shapes) != 1:
        detail = ", ".join(f"{s.get('path', i)}: {tuple(s['video'].shape)}" for i, s in enumerate(samples))
        raise ValueError(f"collate needs same-bucket samples but got video shapes {sorted(shapes)} ({detail})")
    out: dict[str, Any] = {"video": torch.stack([s["video"] for s in samples])}
    for k in samples[0]:
        if k == "video":
            continue
        vals = [s.get(k) for s in samples]
        out[k] = vals[0] if k == "bucket" else vals
    return out
