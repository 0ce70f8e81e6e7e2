"""The synthetic world: sampling, rendering, ground truth, captions, training batches and the held-out split."""

import json

import cv2
import numpy as np
import pytest
import torch

import sora_core.data.synthetic as synthetic
from sora_core.data.buckets import BucketConfig
from sora_core.data.synthetic import (
    BACKGROUNDS,
    PALETTE,
    Scene,
    describe,
    ground_truth,
    heldout_clip,
    render,
    sample_scene,
    short_prompt,
)
from sora_core.train.data import synthetic_batches

TRAIN_SIZES = [(48, 80), (56, 72), (64, 64), (72, 56), (80, 48), (88, 48)]
MOTION_WORDS = {
    "still": ("still", "motionless", "does not move", "in place"),
    "bounce": ("bounce",),
    "rotate": ("rotate", "spin"),
    "grow": ("grow",),
    "shrink": ("shrink",),
}
DIRECTION_WORDS = {
    "left": ("left",), "right": ("right",), "up": ("up",), "down": ("down",),
    "up-left": ("up and to the left",), "up-right": ("up and to the right",),
    "down-left": ("down and to the left",), "down-right": ("down and to the right",),
}


def scene(seed, w=64, h=64, t=17, **kw):
    return sample_scene(np.random.default_rng(seed), w, h, t, **kw)


@pytest.mark.parametrize("w,h,t", [(64, 64, 1), (48, 80, 9), (88, 48, 17), (256, 144, 3)])
def test_render_shape_and_range(w, h, t):
    video = render(scene(1, w, h, t))
    assert video.shape == (t, h, w, 3) and video.dtype == np.uint8


def test_scene_round_trips_through_json():
    s = scene(3, 72, 56, 9, n_objects=3)
    back = Scene.from_dict(json.loads(json.dumps(s.to_dict())))
    assert back == s
    assert np.array_equal(render(back), render(s))


def test_sampling_is_reproducible_and_seed_dependent():
    assert scene(5) == scene(5)
    assert scene(5) != scene(6)


def test_objects_stay_whole_and_in_frame():
    # Without a planned occlusion, every object must be fully visible in every frame.
    for seed in range(40):
        w, h = TRAIN_SIZES[seed % len(TRAIN_SIZES)]
        s = scene(seed, w, h, (17, 33)[seed % 2], occlusion=False)
        truth = ground_truth(s)
        for obj in truth["objects"]:
            vis = [f["visible"] for f in obj["frames"]]
            assert min(vis) > 0.97, (seed, obj["color"], min(vis))
            for f in obj["frames"]:
                x0, y0, x1, y1 = f["box"]
                assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h


def test_colours_in_one_scene_are_distinct():
    for seed in range(30):
        colours = [o.color for o in scene(seed, n_objects=3).objects]
        assert len(set(colours)) == len(colours)


def _lab(rgb):
    return cv2.cvtColor(np.float32([[rgb]]) / 255.0, cv2.COLOR_RGB2Lab)[0, 0]


def test_palette_is_far_from_backgrounds_and_itself():
    # Extremes of the vertical gradient (10% towards white / black) are backgrounds too.
    bgs = []
    for rgb in BACKGROUNDS.values():
        c = np.float32(rgb)
        bgs += [c, c + 0.1 * (255 - c), 0.9 * c]
    pal = [np.float32(v) for v in PALETTE.values()]
    assert min(np.linalg.norm(_lab(p) - _lab(b)) for p in pal for b in bgs) > 30
    assert min(np.linalg.norm(_lab(a) - _lab(b)) for i, a in enumerate(pal) for b in pal[i + 1:]) > 25


def test_edges_are_antialiased_and_area_matches_geometry():
    s = Scene(256, 256, 1, "black", objects=[synthetic.SceneObject("circle", "red", "large", 0.5, 0.5)])
    frame = render(s)[0]
    red = frame[..., 0]
    partial = ((red > 20) & (red < 210)).sum()
    assert partial > 50  # a hard-edged disc would have no intermediate pixels
    area = ground_truth(s)["objects"][0]["frames"][0]["area"]
    r = 0.19 * 256
    assert abs(area - np.pi * r * r) / (np.pi * r * r) < 0.01


@pytest.mark.parametrize("motion", ["left", "right", "up", "down", "up-left", "up-right", "down-left",
                                    "down-right", "rotate", "grow", "shrink", "still"])
def test_clear_motions_read_as_intended(motion):
    for seed in range(5):
        w, h = TRAIN_SIZES[seed]
        s = scene(seed, w, h, 17, objects=[{"motion": motion, "shape": "square"}], camera="still")
        assert ground_truth(s)["objects"][0]["screen_motion"] == motion


def test_bounce_hits_a_wall_and_turns():
    for seed in range(8):
        s = scene(seed, 64, 64, 33, objects=[{"motion": "bounce"}], camera="still")
        truth = ground_truth(s)
        walls = [e for e in truth["events"] if e["event"] == "bounce"]
        assert walls and truth["objects"][0]["screen_motion"] == "bounce"
        assert any(w["wall"] in describe(s, np.random.default_rng(0), truth) for w in walls)


def test_occlusion_hides_and_returns():
    for seed in range(6):
        w, h = TRAIN_SIZES[seed]
        s = scene(seed, w, h, 25, n_objects=2, occlusion=True)
        truth = ground_truth(s)
        hidden = [e for e in truth["events"] if e["event"] == "hidden"]
        assert hidden and hidden[0]["object"] == 0 and hidden[0]["by"] == 1
        assert hidden[0]["seen_before"] and hidden[0]["seen_after"]
        vis = [f["visible"] for f in truth["objects"][0]["frames"]]
        assert vis[0] > 0.95 and vis[-1] > 0.95 and min(vis) < 0.1
        assert "behind" in describe(s, np.random.default_rng(seed), truth)


def test_camera_pan_moves_the_backdrop():
    s = scene(2, 64, 64, 17, camera="left", n_objects=1)
    assert s.texture in ("grid", "dots")  # a pan needs a visible 2-D pattern
    video = render(s).astype(int)
    assert np.abs(video[0] - video[-1]).mean() > 3
    assert "pans" in describe(s, np.random.default_rng(0))


def test_caption_states_every_fact():
    for seed in range(40):
        w, h = TRAIN_SIZES[seed % len(TRAIN_SIZES)]
        s = scene(seed, w, h, (1, 17)[seed % 2])
        truth = ground_truth(s)
        text = describe(s, np.random.default_rng(seed), truth).lower()
        assert s.background in text
        for obj in s.objects:
            assert f"{obj.color} {obj.shape}" in text
            if s.frames > 1:
                words = DIRECTION_WORDS.get(obj.motion) or MOTION_WORDS[obj.motion]
                assert any(word in text for word in words), (obj.motion, text)
        if s.frames == 1:
            assert "image" in text or "picture" in text
            assert not any(w in text for w in ("moves", "slides", "bounces", "spins"))


def test_caption_wording_varies_but_not_facts():
    s = scene(11, n_objects=2)
    truth = ground_truth(s)
    captions = {describe(s, np.random.default_rng(k), truth) for k in range(8)}
    assert len(captions) >= 5
    for c in captions:
        for obj in s.objects:
            assert obj.color in c and obj.shape in c


def test_short_prompt_is_short_and_names_objects():
    synonyms = {"circle": ("circle", "ball", "dot"), "square": ("square", "box", "block"),
                "triangle": ("triangle",), "star": ("star",)}
    for seed in range(30):
        s = scene(seed)
        p = short_prompt(s, np.random.default_rng(seed))
        assert len(p.split()) <= 25
        for obj in s.objects:
            assert obj.color in p
            assert any(w in p for w in synonyms[obj.shape])


def test_invalid_options_name_the_input():
    with pytest.raises(ValueError, match="background='pink'"):
        scene(0, background="pink")
    with pytest.raises(ValueError, match="width=4"):
        scene(0, w=4)
    with pytest.raises(ValueError, match="shape='hexagon'"):
        scene(0, objects=[{"shape": "hexagon"}])


def test_heldout_items_are_valid_and_depend_only_on_seed_and_index():
    item = heldout_clip(2, 64, 48, 9, seed=3)
    assert item["video"].shape == (3, 9, 48, 64) and item["video"].dtype == torch.float32
    assert -1.0 <= float(item["video"].min()) and float(item["video"].max()) <= 1.0
    assert isinstance(item["caption"], str) and isinstance(item["prompt"], str)
    again = heldout_clip(2, 64, 48, 9, seed=3)
    assert torch.equal(again["video"], item["video"]) and again["caption"] == item["caption"]
    assert Scene.from_dict(item["scene"]) == Scene.from_dict(again["scene"])
    assert heldout_clip(1, 64, 48, 9, seed=3)["scene"] != item["scene"]
    assert heldout_clip(2, 64, 48, 9, seed=4)["scene"] != item["scene"]


def test_heldout_split_never_repeats_training_scenes():
    buckets = BucketConfig(resolutions=("64px",), aspect_ratios=("1:1",), frames=(5,), size_multiple=8,
                           tokens_per_batch=4 * 128)  # 64x64 px x 5 frames is 128 tokens: 4 clips a batch
    stream = synthetic_batches(buckets, seed=0)
    train = {bytes(v.numpy()) for _ in range(5) for v in next(stream)["video"]}
    held = {bytes(heldout_clip(i, 64, 64, 5, seed=0)["video"].contiguous().numpy()) for i in range(20)}
    assert len(train) == 20 and len(held) == 20 and not train & held


def test_training_items_are_the_same_clips_as_heldout_items_from_the_same_rng():
    rng_a, rng_b = np.random.default_rng(5), np.random.default_rng(5)
    with_text = synthetic.clip(rng_a, 48, 32, 5)
    without = synthetic.clip(rng_b, 48, 32, 5, captions=False)
    assert torch.equal(with_text["video"], without["video"]) and "caption" not in without
