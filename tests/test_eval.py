"""eval's report (sora_core.eval.run) on a tiny random-weight model."""

from __future__ import annotations

import json
import math
import types

import pytest
import torch

from sora_core.eval.run import heldout, stutter, vae_round_trip
from sora_core.pipeline import Pipeline


def test_vae_round_trip_is_null_without_videos_and_numbers_with_them(micro_checkpoint):
    pipe = Pipeline.load(micro_checkpoint)
    assert vae_round_trip(pipe, []) == (None, None)  # no real clips installed: the report says null, never NaN
    assert json.dumps({"vae_psnr_real": vae_round_trip(pipe, [])[0]}) == '{"vae_psnr_real": null}'
    value, jumps = vae_round_trip(pipe, [heldout(1, 32, 32, 9, 3)[0]["video"]])
    assert isinstance(value, float) and math.isfinite(value) and value > 0
    assert isinstance(jumps, float) and math.isfinite(jumps) and jumps > 0
    assert vae_round_trip(pipe, [heldout(1, 32, 32, 1, 3)[0]["video"]])[1] is None  # an image has no frame steps


def test_stutter_is_one_for_steady_motion_and_high_for_a_decoder_that_holds_each_chunk():
    x = torch.arange(32) / 32 * 4 * math.pi  # two whole periods: every shift changes the frame as much
    steady = torch.stack([torch.sin(x + 0.2 * t).expand(3, 32, 32) for t in range(17)], dim=1)  # (3, 17, 32, 32)
    assert stutter(steady, 4) == pytest.approx(1.0, rel=0.05)
    held = steady.clone()
    for t in range(1, 17):  # every frame of chunk k (frames 4k-3 .. 4k) shows the chunk's last frame, nearly
        held[:, t] = steady[:, 4 * ((t + 3) // 4)] + 0.001 * t
    assert stutter(held, 4) > 10
    with pytest.raises(ValueError, match="no steps both at and inside"):
        stutter(steady[:, :2], 4)


def test_probe_tasks_feed_the_animation_the_held_out_or_a_generated_first_frame(micro_checkpoint):
    from sora_core.eval.run import PROBE_SCENE, probe

    pipe = Pipeline.load(micro_checkpoint)
    firsts, generated = [], []
    animate, generate = pipe.animate, pipe.generate
    pipe.animate = lambda first, *a, **k: (firsts.append(first.clone()), animate(first, *a, **k))[1]
    pipe.generate = lambda *a, **k: (generated.append(a[3]), generate(*a, **k))[1]  # a[3]: frames
    kw = dict(n=2, width=32, height=32, frames=9, steps=2)
    for task in ("t2v", "i2v", "two-stage"):
        firsts.clear(), generated.clear()
        out = probe(pipe, task=task, **kw)
        assert set(out) == {"color_acc", "shape_acc", "direction_acc", "moving", "travel"}
        assert all(0 <= out[k] <= 1 for k in ("color_acc", "shape_acc", "direction_acc", "moving"))
        if task == "t2v":
            assert firsts == [] and generated == [9, 9]
        elif task == "i2v":  # the held-out clips' own first frames, (1, H, W, 3) in [0, 1]; nothing generated
            truth = [(item["video"][:, :1].permute(1, 2, 3, 0) + 1) / 2 for item in heldout(2, 32, 32, 9, 7,
                                                                                          **PROBE_SCENE)]
            assert generated == [] and all(torch.equal(f, t) for f, t in zip(firsts, truth, strict=True))
        else:  # a 1-frame image per prompt, then animated
            assert generated == [1, 1] and [f.shape[0] for f in firsts] == [1, 1]
    with pytest.raises(ValueError, match="task='v2v' is not allowed"):
        probe(pipe, task="v2v", **kw)


def test_redraw_at_strength_0_scores_the_vae_round_trip_and_refuses_a_bad_strength(micro_checkpoint):
    from sora_core.conditioning import video_to_frames
    from sora_core.data.synthetic import Scene
    from sora_core.eval.detector import analyse_clip, score_against
    from sora_core.eval.run import redraw
    from sora_core.io import to_uint8_frames

    pipe = Pipeline.load(micro_checkpoint)
    kw = dict(n=3, width=32, height=32, frames=9, steps=2)
    out = redraw(pipe, [0, 1], **kw)
    assert list(out) == ["0", "1"]
    for scores in out.values():
        assert set(scores) == {"color_acc", "shape_acc", "count_acc", "direction_acc"}
        assert all(0 <= v <= 1 for v in scores.values())
    # strength 0 redraws nothing: the scores are the VAE round trip's, clip by clip
    expected = {"color_ok": [], "shape_ok": [], "count_ok": [], "direction_ok": []}
    with torch.no_grad():
        for item in heldout(3, 32, 32, 9, 0, occlusion=False):
            video = video_to_frames(pipe.vae.decode(pipe.vae.encode(item["video"][None])))
            result = score_against(Scene.from_dict(item["scene"]), analyse_clip(to_uint8_frames(video)))
            for k in expected:
                expected[k].append(result[k])
    assert out["0"] == {k.replace("_ok", "_acc"): sum(v) / len(v) for k, v in expected.items()}
    with pytest.raises(ValueError, match="strength=1.5 is not allowed"):
        redraw(pipe, [0.3, 1.5], **kw)


def test_eval_refuses_a_bad_redraw_list_before_loading_a_model(tmp_path):
    import argparse

    from sora_core.eval.run import add_arguments, run

    p = argparse.ArgumentParser()
    add_arguments(p)
    for bad in ("0.3,x", "0.3,2"):
        args = p.parse_args(["--redraw", bad, "--model", str(tmp_path / "missing.safetensors")])
        with pytest.raises(ValueError, match=f"--redraw='{bad}' is not allowed"):
            run(args)


def test_sign_test_is_the_exact_two_sided_binomial_tail():
    from sora_core.eval.run import sign_test

    assert sign_test(0, 0) == 1.0 and sign_test(5, 5) == 1.0
    assert sign_test(10, 0) == sign_test(0, 10) == pytest.approx(2 / 1024)
    assert sign_test(3, 1) == pytest.approx(2 * (1 + 4) / 16)  # P(X <= 1) + P(X >= 3) of Binomial(4, 1/2)
    assert sign_test(15, 10) > 0.4 > sign_test(20, 5)


def test_versus_compares_two_models_clip_by_clip_on_the_same_prompts(micro_checkpoint):
    from sora_core.conditioning import video_to_frames
    from sora_core.eval.run import ADHERENCE, occlusion, score_clip, sign_test, text_to_video, versus

    pipe = Pipeline.load(micro_checkpoint)
    kw = dict(n=4, width=32, height=32, frames=9, steps=2)
    same = versus(pipe, Pipeline.load(micro_checkpoint), **kw, log=lambda _: None)
    assert set(same) == {"color", "shape", "direction", "count", "permanence"}
    for row in same.values():  # a model against itself: the same clips, nothing gained or lost
        assert row["a"] == row["b"] and row["gained"] == row["lost"] == 0 and row["p"] == 1.0
    assert same["color"]["clips"] == 4 and same["permanence"]["clips"] == 4  # max(4, n // 2) occlusion clips

    # b draws every clip exactly as its scene is (the held-out truth, in the order eval asks for them)
    truth = heldout(4, 32, 32, 9, 0, occlusion=False) + heldout(4, 32, 32, 33, 1, occlusion=True)
    queue = [video_to_frames(item["video"][None]) for item in truth]
    oracle = types.SimpleNamespace(generate=lambda *a, **k: queue.pop(0))
    out = versus(pipe, oracle, **kw, log=lambda _: None)
    assert queue == []
    a_t2v = text_to_video(pipe, 4, 32, 32, 9, 0, dict(steps=2, cfg=5.0))
    a_perm = occlusion(pipe, 4, 32, 32, 0, dict(steps=2, cfg=5.0))
    right = [score_clip(item, video_to_frames(item["video"][None])) for item in truth]
    for key in ADHERENCE + ("permanence_ok",):
        a = [r[key] for r in (a_perm if key == "permanence_ok" else a_t2v)]
        b = [r[key] for r in (right[4:] if key == "permanence_ok" else right[:4])]
        row = out[key.replace("_ok", "")]
        assert (row["a"], row["b"]) == (sum(a) / 4, sum(b) / 4)
        assert (row["gained"], row["lost"]) == (sum(y and not x for x, y in zip(a, b)),
                                               sum(x and not y for x, y in zip(a, b)))
        assert row["p"] == pytest.approx(sign_test(row["gained"], row["lost"]), abs=1e-4)
    assert out["color"]["b"] == 1.0 and out["color"]["gained"] == 4 - round(4 * out["color"]["a"]) > 0


def test_eval_refuses_a_missing_versus_checkpoint_before_loading_a_model(tmp_path):
    import argparse

    from sora_core.eval.run import add_arguments, run

    p = argparse.ArgumentParser()
    add_arguments(p)
    args = p.parse_args(["--versus", str(tmp_path / "b.safetensors"), "--model", str(tmp_path / "a.safetensors")])
    with pytest.raises(ValueError, match="--versus=.*b.safetensors' is not allowed: no such checkpoint file"):
        run(args)


def test_text_to_video_hands_the_recaptioners_plan_to_the_model_unless_told_not_to():
    from sora_core.eval.run import text_to_video
    from sora_core.recaption import plan

    calls = []

    def generate(caption, width, height, frames, **kw):
        calls.append((caption, kw["layout"], kw["seed"]))
        return torch.zeros(frames, height, width, 3)

    fake = types.SimpleNamespace(generate=generate)
    text_to_video(fake, 3, 32, 32, 9, 5, dict(steps=2))
    text_to_video(fake, 3, 32, 32, 9, 5, dict(steps=2), plans=False)
    for i, item in enumerate(heldout(3, 32, 32, 9, 5, occlusion=False)):
        caption, scene = plan(item["prompt"], seed=5 + i, frames=9)
        assert calls[i] == (caption, scene, 5 + i)  # the plan of the very caption it is given, for its 9 frames
        assert calls[3 + i] == (caption, None, 5 + i)  # the same caption, no layout
