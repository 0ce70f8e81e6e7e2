"""Native-aspect buckets: shapes, assignment, token-budget batch sizes, batching and DDP shards."""

import random

import pytest
import torch

from sora_core.data.buckets import Bucket, BucketBatcher, BucketConfig, collate

CFG = BucketConfig(resolutions=("64px", "128px"), frames=(1, 9, 17, 33), tokens_per_batch=2048)


def test_buckets_are_patchable_and_near_target_area():
    bs = CFG.buckets()
    assert len(bs) == len(set(bs)) > 0
    for b in bs:
        assert b.width % 8 == 0 and b.height % 8 == 0
        assert (b.frames - 1) % 4 == 0
        side = 64 if b.width * b.height < 96 * 96 else 128
        assert 0.8 < b.width * b.height / side**2 < 1.25, b
    aspects = {round(b.aspect, 2) for b in bs}
    assert min(aspects) < 0.6 and max(aspects) > 1.7  # 9:16 .. 16:9 covered


def test_parsing_and_validation():
    assert BucketConfig(resolutions=(64, "128px"), aspect_ratios=("1:1", 1.5)).buckets()
    with pytest.raises(ValueError, match=r"frame count 8 .*1 \+ 4k"):
        BucketConfig(frames=(1, 8))
    with pytest.raises(ValueError, match=r"resolution 'huge'"):
        BucketConfig(resolutions=("huge",))
    with pytest.raises(ValueError, match=r"aspect ratio '16:0'"):
        BucketConfig(aspect_ratios=("16:0",))
    with pytest.raises(ValueError, match="width=0"):
        CFG.nearest(0, 10, 1)


def test_nearest_keeps_native_aspect_no_square_crop():
    wide = CFG.nearest(1920, 1080, 40)
    assert wide.frames == 33 and wide.width > wide.height
    assert wide.aspect == pytest.approx(16 / 9, rel=0.12)
    assert wide.width * wide.height > 100 * 100  # the big resolution: clip is large enough
    tall = CFG.nearest(1080, 1920, 20)
    assert (tall.width, tall.height, tall.frames) == (wide.height, wide.width, 17)
    square = CFG.nearest(500, 500, 9)
    assert square.width == square.height and square.frames == 9
    assert CFG.nearest(4000, 3000, 1).aspect == pytest.approx(4 / 3, rel=0.1)


def test_nearest_resolution_and_frame_rounding():
    # 100x100 cannot hold 128px (128x128) without upscaling: stays at 64px.
    assert CFG.nearest(100, 100, 16) == Bucket(64, 64, 9)
    # smaller than every resolution: smallest one (upscaled) rather than dropped
    assert CFG.nearest(20, 20, 1) == Bucket(64, 64, 1)
    no_images = BucketConfig(frames=(9, 17))
    assert no_images.nearest(64, 64, 8) is None  # too short for any frame count


def test_batch_sizes_follow_token_budget():
    for b in CFG.buckets():
        n, tok = CFG.batch_size(b), CFG.tokens(b)
        assert 1 <= n <= CFG.max_batch_size
        if 1 < n < CFG.max_batch_size:
            assert n * tok <= CFG.tokens_per_batch < (n + 1) * tok
    small, big = Bucket(64, 64, 1), Bucket(128, 128, 33)
    assert CFG.tokens(big) == 16 * 16 * 9
    assert CFG.batch_size(small) > CFG.batch_size(big) == 1


def stream(n=300, seed=0):
    rng = random.Random(seed)
    bs = CFG.buckets()
    return [(rng.choice(bs), i) for i in range(n)]


def test_batcher_emits_same_bucket_batches_covering_stream():
    items = stream()
    batches = list(BucketBatcher(CFG)(items))
    seen = [i for batch in batches for _, i in batch]
    assert sorted(seen) == list(range(len(items)))
    for batch in batches:
        assert len({b for b, _ in batch}) == 1
        assert len(batch) <= CFG.batch_size(batch[0][0])
    full = list(BucketBatcher(CFG, drop_last=True)(items))
    assert all(len(b) == CFG.batch_size(b[0][0]) for b in full)
    assert list(BucketBatcher(CFG)(items)) == batches  # deterministic


def test_batcher_ddp_shards_are_disjoint_and_even():
    items = stream(500)
    shards = [list(BucketBatcher(CFG, rank=r, world_size=3)(items)) for r in range(3)]
    ids = [{i for batch in s for _, i in batch} for s in shards]
    assert not (ids[0] & ids[1]) and not (ids[0] & ids[2]) and not (ids[1] & ids[2])
    assert len({len(s) for s in shards}) == 1 and len(shards[0]) > 0
    with pytest.raises(ValueError, match=r"rank=3 .*world_size=3"):
        BucketBatcher(CFG, rank=3, world_size=3)


def test_collate_stacks_same_bucket_and_rejects_mixed():
    b = Bucket(16, 8, 1)
    samples = [
        {"video": torch.zeros(3, 1, 8, 16), "caption": f"c{i}", "prompt": f"c{i}", "path": f"p{i}", "bucket": b}
        for i in range(3)
    ]
    out = collate(samples)
    assert out["video"].shape == (3, 3, 1, 8, 16)
    assert out["caption"] == ["c0", "c1", "c2"] and out["bucket"] == b
    samples[1]["video"] = torch.zeros(3, 1, 16, 8)
    with pytest.raises(ValueError, match="same-bucket.*p1"):
        collate(samples)
