"""VideoFolderDataset over the tiny real fixture clips: captions, buckets, frames, batching."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from sora_core.data.buckets import Bucket, BucketConfig
from sora_core.data.real_clips import find_template_clips
from sora_core.data.video_folder import VideoFolderDataset, load_captions, resize_cover
from sora_core.train.data import folder_batches

FIXTURES = Path(__file__).parent / "fixtures" / "clips"
SMALL = BucketConfig(resolutions=("32px",), frames=(1, 5, 9))


def by_name(ds):
    return {Path(ds[i]["path"]).name: ds[i] for i in range(len(ds))}


def test_items_match_synthetic_format_and_native_aspect():
    ds = VideoFolderDataset(FIXTURES, buckets=SMALL, train=False)
    assert len(ds) == 2 and ds.missing_captions == 0 and not ds.skipped
    items = by_name(ds)
    snow, fox = items["fox_snow.webp"], items["fox_portrait.gif"]
    for item in (snow, fox):
        v = item["video"]
        assert v.dtype == torch.float32 and v.shape[0] == 3
        assert -1.0 <= v.min() and v.max() <= 1.0 and v.std() > 0.1
        assert item["prompt"] == item["caption"] and item["caption"].startswith("a red fox")
    assert snow["bucket"] == Bucket(40, 24, 9) and snow["video"].shape == (3, 9, 24, 40)  # 16:9 stays wide
    assert fox["bucket"] == Bucket(24, 40, 9) and fox["video"].shape == (3, 9, 40, 24)  # 9:16 stays tall
    assert "fox trots" in snow["caption"]


def test_eval_is_deterministic_train_varies_with_seed_and_epoch():
    ev = VideoFolderDataset(FIXTURES, buckets=SMALL, train=False)
    assert torch.equal(ev[0]["video"], ev[0]["video"])
    tr = VideoFolderDataset(FIXTURES, buckets=SMALL, train=True, seed=0)
    i = [Path(p).name for p, *_ in tr.items].index("fox_snow.webp")  # 12 frames -> 9: 4 windows
    windows = set()
    for epoch in range(8):
        tr.set_epoch(epoch)
        a = tr[i]["video"]
        assert torch.equal(a, tr[i]["video"])  # same epoch, same window
        windows.add(a[:, 0].sum().item())
    assert len(windows) > 1


def test_fps_resampling_picks_smaller_frame_bucket():
    ds = VideoFolderDataset(FIXTURES, buckets=SMALL, fps=4)
    items = by_name(ds)
    # snow: 1.5 s at 4 fps = 6 frames -> 5; portrait: 0.9 s -> 4 frames -> 1
    assert items["fox_snow.webp"]["video"].shape[1] == 5
    assert items["fox_portrait.gif"]["bucket"].frames == 1
    assert items["fox_snow.webp"]["fps"] == 4.0


def test_fixed_size_mode_skips_short_clips():
    ds = VideoFolderDataset(FIXTURES, size=(32, 32), frames=9)
    assert len(ds) == 2 and ds[0]["video"].shape == (3, 9, 32, 32)
    ds = VideoFolderDataset(FIXTURES, size=(32, 32), frames=13)
    assert len(ds) == 0 and len(ds.skipped) == 2 and "too short" in ds.skipped[0][1]
    with pytest.raises(ValueError, match="frames=9 needs size"):
        VideoFolderDataset(FIXTURES, frames=9)


def copy_clips(dst):
    for p in FIXTURES.iterdir():
        if p.suffix in (".webp", ".gif"):
            shutil.copy(p, dst / p.name)


def test_jsonl_and_csv_captions_and_missing(tmp_path):
    copy_clips(tmp_path)
    (tmp_path / "captions.jsonl").write_text(json.dumps({"file": "fox_snow.webp", "caption": "from jsonl"}) + "\n")
    (tmp_path / "captions.csv").write_text("path,text\n./fox_snow.webp,from csv\nfox_portrait.gif,\"portrait, csv\"\n")
    ds = VideoFolderDataset(tmp_path, buckets=SMALL)
    caps = {Path(p).name: c for (p, *_), c in zip(ds.items, ds._captions)}
    assert caps == {"fox_snow.webp": "from jsonl", "fox_portrait.gif": "portrait, csv"}  # jsonl beats csv
    (tmp_path / "fox_snow.txt").write_text("from sidecar\n")
    (tmp_path / "captions.csv").unlink()
    with pytest.warns(UserWarning, match="1 of 2 clips .* no caption"):
        ds = VideoFolderDataset(tmp_path, buckets=SMALL)
    assert ds.missing_captions == 1
    assert {Path(d["path"]).name: d["caption"] for d in map(ds.__getitem__, range(2))} == {
        "fox_snow.webp": "from sidecar",
        "fox_portrait.gif": "",
    }


def test_bad_caption_files_and_unreadable_clips(tmp_path):
    copy_clips(tmp_path)
    (tmp_path / "broken.mp4").write_bytes(b"not a video")
    (tmp_path / "captions.jsonl").write_text('{"file": "fox_snow.webp"}\n')
    with pytest.raises(ValueError, match=r"line 1 .*caption"):
        load_captions(tmp_path)
    (tmp_path / "captions.jsonl").write_text('{"file": "fox_snow.webp", "text": "ok"}\n')
    with pytest.warns(UserWarning):
        ds = VideoFolderDataset(tmp_path, buckets=SMALL)
    assert len(ds) == 2 and any("broken.mp4" in p and "unreadable" in why for p, why in ds.skipped)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        VideoFolderDataset(tmp_path / "nowhere")


def test_resize_cover_keeps_aspect_and_crops_only_excess():
    img = np.zeros((36, 64, 3), np.uint8)
    img[:, :4] = 255  # marks at the far left and right edges
    img[:, -4:] = 128
    out = resize_cover(img, 40, 24)  # 16:9 -> 16:9-ish bucket: both edges survive
    assert out.shape == (24, 40, 3)
    assert out[:, 0].mean() > 100 and out[:, -1].mean() > 50
    square = resize_cover(img, 24, 24)  # only a square bucket would cut the edges off
    assert square[:, 0].max() == 0 and square[:, -1].max() == 0


def test_folder_batches_are_same_bucket_deterministic_and_split_between_ranks():
    one_a_batch = BucketConfig(resolutions=("32px",), frames=(1, 5, 9), tokens_per_batch=1)
    batches = folder_batches(str(FIXTURES), one_a_batch, seed=0)
    first = [next(batches) for _ in range(2)]  # one pass over the two clips
    assert sorted(b["video"].shape[-1] for b in first) == [24, 40]  # one wide, one tall batch
    for b in first:
        assert b["video"].shape[:3] == (1, 3, 9) and isinstance(b["bucket"], Bucket) and b["prompt"] == b["caption"]
    again = folder_batches(str(FIXTURES), one_a_batch, seed=0)
    assert [next(again)["path"] for _ in range(2)] == [b["path"] for b in first]
    ranks = [next(folder_batches(str(FIXTURES), one_a_batch, seed=0, rank=r, world=2))["path"] for r in range(2)]
    assert ranks[0] != ranks[1]


def test_template_clips_as_a_dataset(tmp_path):
    clips = find_template_clips()
    if not clips:
        pytest.skip("comfyui-workflow-templates-media-video not installed")
    wide = next(p for p in clips if p.name.startswith("text_to_video_wan"))
    (tmp_path / wide.name).symlink_to(wide)
    with pytest.warns(UserWarning):  # no captions for template clips
        ds = VideoFolderDataset(tmp_path, buckets=BucketConfig(frames=(9,)), fps=8, train=False)
    item = ds[0]
    assert item["bucket"].width > item["bucket"].height  # 832x480 trains wide
    assert item["video"].shape == (3, 9, item["bucket"].height, item["bucket"].width)
