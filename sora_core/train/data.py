"""Training batches at native aspect ratios: every batch is one bucket (width, height, frames).

Synthetic data is rendered on the fly (a new scene every sample, so no epoch ever repeats);
a folder of real clips goes through the same buckets with `BucketBatcher`.
"""

from __future__ import annotations

import os
from typing import Callable, Iterator

import numpy as np
import torch

from ..data.buckets import BucketBatcher, BucketConfig, collate


def synthetic_batches(buckets: BucketConfig, *, seed: int, rank: int = 0, world: int = 1,
                      bucket_weights: dict | None = None, captions: bool = True,
                      scene_options: dict | None = None) -> Iterator[dict]:
    """Endless same-bucket batches of synthetic clips with detailed captions and short prompts.

    Each rank draws from its own seed stream, so ranks never render the same scene. Buckets are
    drawn in proportion to `bucket_weights` (see `BucketConfig.weight`; default: all equally).
    `scene_options` go to `sample_scene` (e.g. one object and four motions for a quick probe).
    """
    from ..data import synthetic

    rng = np.random.default_rng([seed, rank, world])
    choices = buckets.buckets()
    weights = np.array([buckets.weight(b, bucket_weights or {}) for b in choices], dtype=np.float64)
    weights /= weights.sum()
    while True:
        b = choices[rng.choice(len(choices), p=weights)]
        items = [synthetic.clip(rng, b.width, b.height, b.frames, captions=captions, **(scene_options or {}))
                 for _ in range(buckets.batch_size(b))]
        yield {"video": torch.stack([item["video"] for item in items]),
               "caption": [item["caption"] for item in items] if captions else [],
               "prompt": [item["prompt"] for item in items] if captions else [],
               "scene": [item["scene"] for item in items]}


def folder_batches(folder: str, buckets: BucketConfig, *, seed: int, rank: int = 0, world: int = 1,
                   fps: float | None = None) -> Iterator[dict]:
    """Endless same-bucket batches from a folder of captioned clips, reshuffled every pass."""
    from ..data.video_folder import VideoFolderDataset

    dataset = VideoFolderDataset(folder, buckets=buckets, fps=fps)
    if len(dataset) == 0:
        raise ValueError(f"no usable clips in {folder!r}")
    of = dataset.buckets
    batcher = BucketBatcher(buckets, key=lambda i: of[i], rank=rank, world_size=world, drop_last=True)
    epoch = 0
    while True:
        dataset.set_epoch(epoch)
        order = np.random.default_rng([seed, epoch]).permutation(len(dataset)).tolist()
        for indices in batcher(order):
            batch = collate([dataset[i] for i in indices])
            batch.setdefault("prompt", batch["caption"])
            yield batch
        epoch += 1


def random_crop(video: torch.Tensor, size: int, multiple: int, generator: np.random.Generator) -> torch.Tensor:
    """A spatial crop of at most `size` px per side (a multiple of `multiple`), for the VAE only:
    a convolutional VAE learns the same from crops, at a fraction of the cost."""
    h, w = video.shape[-2:]
    ch, cw = min(h, size) // multiple * multiple, min(w, size) // multiple * multiple
    y = int(generator.integers(0, h - ch + 1))
    x = int(generator.integers(0, w - cw + 1))
    return video[..., y : y + ch, x : x + cw]


class _WorkerBatches(torch.utils.data.IterableDataset):
    def __init__(self, make: Callable[[int, int], Iterator[dict]]):
        self.make = make

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        return self.make(info.id, info.num_workers) if info else self.make(0, 1)


def _unpin_worker(_: int) -> None:
    # A trainer pinned to some cores would otherwise keep its data workers on those same cores: move
    # them to the other cores (or, if it has them all, leave them where they are).
    if hasattr(os, "sched_setaffinity"):
        others = set(range(os.cpu_count() or 1)) - os.sched_getaffinity(0)
        if others:
            os.sched_setaffinity(0, others)


def prefetched(make: Callable[[int, int], Iterator[dict]], workers: int) -> Iterator[dict]:
    """Batches from `make(worker, workers)` rendered in `workers` background processes (0: inline),
    so the training step never waits on rendering; each worker must draw its own stream."""
    if workers <= 0:
        return make(0, 1)
    loader = torch.utils.data.DataLoader(_WorkerBatches(make), batch_size=None, num_workers=workers,
                                         prefetch_factor=4, persistent_workers=True, worker_init_fn=_unpin_worker)
    return iter(loader)
