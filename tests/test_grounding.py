"""Layout grounding: a planned scene's objects, token by token, read by a DiT trained with them."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from sora_core.checkpoint import SoraModel
from sora_core.config import preset
from sora_core.data.world import Scene, SceneObject
from sora_core.data.render import render
from sora_core.grounding import grounding, latent_frame_spans, layout, occupancy, silhouettes
from sora_core.pipeline import Pipeline
from sora_core.recaption import plan, recaption
from sora_core.train.dit import Denoiser


def _scene(frames=17, motion="right", vx=0.03, vy=0.0, x=0.2, y=0.5, **kw):
    obj = SceneObject(shape="square", color="red", size="small", x=x, y=y, motion=motion, vx=vx, vy=vy)
    return Scene(width=64, height=64, frames=frames, background="black", objects=[obj], **kw)


def _centre_x(cells: np.ndarray) -> float:
    return float(np.nonzero(cells)[1].mean())


def test_latent_frames_cover_frame_zero_alone_then_four_frames_each():
    assert latent_frame_spans(17, 4) == [range(0, 1), range(1, 5), range(5, 9), range(9, 13), range(13, 17)]
    assert latent_frame_spans(1, 4) == [range(0, 1)]


def test_an_object_moving_right_covers_cells_further_right_in_every_latent_frame():
    occ = occupancy(_scene(), 17, 64, 64, 4, 8)  # (objects, T', H', W')
    assert occ.shape == (1, 5, 8, 8)
    xs = [_centre_x(occ[0, k]) for k in range(5)]
    assert all(b > a for a, b in zip(xs, xs[1:])), xs
    rows = np.nonzero(occ[0].any(axis=(0, 2)))[0]  # it stays on its row
    assert rows.min() >= 2 and rows.max() <= 5
    # a small object (radius 6.4 px) touches a few 8-px cells, not the frame
    assert 1 <= occ[0, 0].sum() <= 9


def test_a_plan_at_another_length_and_size_is_stretched_over_the_clip():
    scene = _scene(frames=33, vx=0.015)  # the same path over twice the frames
    a = occupancy(_scene(), 17, 64, 64, 4, 8)
    b = occupancy(scene, 17, 64, 64, 4, 8)
    assert np.array_equal(a[:, 0], b[:, 0]) and np.array_equal(a[:, -1], b[:, -1])
    wide = occupancy(_scene(), 17, 64, 128, 4, 8)  # places are fractions of the frame
    assert wide.shape == (1, 5, 8, 16)
    assert abs(_centre_x(wide[0, 0]) / 16 - _centre_x(a[0, 0]) / 8) < 0.1


def test_an_object_off_screen_covers_nothing():
    occ = occupancy(_scene(x=3.0, vx=0.0, motion="still"), 9, 64, 64, 4, 8)
    assert not occ.any()


def test_grounding_sums_each_objects_phrase_over_its_cells_and_nothing_elsewhere():
    model = SoraModel(preset("micro"))
    scene = _scene()
    lay = layout(scene.to_dict(), preset("micro"), (5, 16, 16))
    names, occ, sil = lay
    assert sil is None  # a DiT without silhouette reads none
    assert names == ["red square"] and occ.shape == (1, 5 * 8 * 8)
    with torch.no_grad():
        g = grounding(model.text, [lay, None], occ.shape[1])
    assert g.shape == (2, 320, 24)
    assert torch.all(g[1] == 0)  # no layout: nothing
    covered = occ[0]
    assert torch.all(g[0, ~covered] == 0) and torch.all(g[0, covered].abs().sum(-1) > 0)
    assert torch.allclose(g[0, covered], g[0, covered][:1].expand(int(covered.sum()), -1))
    with pytest.raises(ValueError, match="layout covers 320 tokens; the latents have 64"):
        grounding(model.text, [lay], 64)


def test_silhouettes_are_the_outlines_the_renderer_draws():
    obj = SceneObject(shape="star", color="yellow", size="large", x=0.45, y=0.55, angle=10.0)
    scene = Scene(width=64, height=64, frames=1, background="black", objects=[obj])
    drawn = render(scene)[0].astype(np.float32)  # (H, W, 3), yellow on black
    alpha = (drawn[..., 1] - 14) / (215 - 14)  # green channel: 14 (backdrop) -> 215 (yellow)
    one_px = silhouettes(scene, 1, 64, 64, 4, 8, 8)  # sub-cells of 1 px
    assert one_px.shape == (1, 64, 64)
    assert np.abs(one_px[0] - alpha).max() < 0.02
    two_px = silhouettes(scene, 1, 64, 64, 4, 8, 4)  # 2 px: the mean of 2 x 2 pixels
    assert np.allclose(two_px[0], one_px[0].reshape(32, 2, 32, 2).mean(axis=(1, 3)), atol=1e-6)


def test_a_square_and_a_disc_of_one_size_differ_in_their_corners_not_their_cells():
    def still(shape):
        obj = SceneObject(shape=shape, color="red", size="large", x=0.5, y=0.5)
        return Scene(width=64, height=64, frames=1, background="black", objects=[obj])

    r = 0.19 * 64  # a large object's radius, px
    corner = int((32 + 0.8 * r) / 2), int((32 + 0.8 * r) / 2)  # the 2-px sub-cell at 0.8 r right and below
    square, disc = (silhouettes(still(s), 1, 64, 64, 4, 8, 4)[0] for s in ("square", "circle"))
    assert square[corner] > 0.9 and disc[corner] < 0.3
    assert abs(square.sum() * 4 - (1.8 * r) ** 2) < 0.02 * (1.8 * r) ** 2  # areas, px
    assert abs(disc.sum() * 4 - np.pi * r * r) < 0.02 * np.pi * r * r
    cells = [occupancy(still(s), 1, 64, 64, 4, 8) for s in ("square", "circle")]
    assert np.array_equal(*cells)  # the token cells alone cannot tell them apart


def test_a_moving_object_s_silhouette_follows_it_frame_by_frame_and_averages_within_a_latent_frame():
    sil = silhouettes(_scene(motion="right", vx=0.03), 17, 64, 64, 4, 8, 4)  # (5, 32, 32)
    xs = [float((s.sum(0) * np.arange(32)).sum() / s.sum()) for s in sil]
    assert all(b > a for a, b in zip(xs, xs[1:])), xs
    partial = [int(((s > 0.05) & (s < 0.95)).sum()) for s in sil]
    assert all(p > partial[0] for p in partial[1:]), partial  # four frames moving: edges smeared, frame 0 sharp
    assert all(s.sum() == pytest.approx(sil[0].sum(), rel=0.05) for s in sil)  # the same area in every latent frame


def _silhouette_config(sub=4):
    config = preset("micro")
    return replace(config, dit=replace(config.dit, grounding=True, silhouette=sub))


def test_a_layout_for_a_dit_that_reads_outlines_packs_each_token_s_sub_cells_in_patchify_order():
    config = _silhouette_config()
    scene = _scene(frames=9, vx=0.0, motion="still")
    lay = layout(scene, config, (3, 8, 8))  # 9 frames at 32 x 32 px: tokens (3, 4, 4), cells 8 px
    assert lay.silhouette.shape == (3 * 4 * 4, 16)
    cells = silhouettes(scene, 9, 32, 32, 4, 8, 4)  # (3, 16, 16)
    token = 1 * 16 + 2 * 4 + 1  # latent frame 1, token row 2, column 1
    assert torch.allclose(lay.silhouette[token], torch.from_numpy(cells[1, 8:12, 4:8].reshape(-1)))
    touched = lay.silhouette.sum(-1) > 0.05
    assert touched.any() and not (touched & ~lay.occupancy[0]).any()  # outlines lie in the object's cells
    with torch.no_grad():
        g = grounding(SoraModel(config).text, [lay, None], 48)
    assert g.shape == (2, 48, 24 + 16) and torch.equal(g[0, :, 24:], lay.silhouette) and not g[1].any()


def test_a_layout_stretched_over_a_clip_of_another_length_says_so(caplog):
    config = _silhouette_config()
    with caplog.at_level("WARNING", logger="sora_core.grounding"):
        layout(_scene(frames=9), config, (3, 8, 8))  # planned for the clip's 9 frames
        layout(_scene(frames=1), config, (3, 8, 8))  # a still plan: nothing moves
        assert not caplog.records
        layout(_scene(frames=33), config, (3, 8, 8))
    assert "planned for 33 frames and is stretched over this clip's 9" in caplog.text and "4x as fast" in caplog.text


def test_silhouette_settings_are_checked():
    config = preset("micro")
    with pytest.raises(ValueError, match="silhouette=4 is not allowed.*grounding=True"):
        replace(config.dit, silhouette=4).validate()
    with pytest.raises(ValueError, match="silhouette=3 must divide a token's cell of 8 px"):
        _silhouette_config(3).validate()
    dit = SoraModel(_silhouette_config()).dit
    with pytest.raises(ValueError, match="grounding has 24 features per token; this DiT reads 40"):
        dit(torch.randn(1, 4, 1, 4, 4), torch.ones(1, 1), torch.randn(1, 3, 24), torch.ones(1, 3, dtype=torch.bool),
            torch.zeros(1, 4, 24))


def _as_if_trained(model: SoraModel, layouts_too: bool = False) -> SoraModel:
    """A fresh DiT's zero output layer and gates make its velocity zero whatever it is given: fill them."""
    with torch.no_grad():
        for name, p in model.dit.named_parameters():
            if (layouts_too or not name.startswith(("ground", "silhouette"))) and not p.any():
                p.normal_(std=0.05)
    return model


def _grounded_config():
    config = preset("micro")
    return replace(config, dit=replace(config.dit, grounding=True))


@pytest.mark.parametrize("outlines", [False, True])
def test_a_new_grounded_dit_computes_what_it_would_without_a_layout_and_learns_to_read_one(outlines):
    torch.manual_seed(0)
    model = _as_if_trained(SoraModel(_silhouette_config() if outlines else _grounded_config()))
    den = Denoiser(model)
    z = torch.randn(2, 4, 3, 4, 4)  # 9 frames at 16 x 16 px
    t, strength, noise = torch.tensor([0.7, 0.4]), torch.ones(2, 3), torch.randn(2, 4, 3, 4, 4)
    from sora_core.text import tokenize
    ids, mask = tokenize(["a red square", "a red square"], 512, 32)
    lay = layout(_scene(frames=9), model.config, (3, 4, 4))
    with torch.no_grad():
        plain = den(z, t, strength, noise, ids, mask)
    loss = den(z, t, strength, noise, ids, mask, [lay, None])
    assert torch.equal(loss.detach(), plain)  # zero-initialised: the layout adds nothing yet
    loss.backward()
    assert model.dit.ground.weight.grad.abs().sum() > 0  # ... but training moves it
    assert not outlines or model.dit.silhouette.weight.grad.abs().sum() > 0


def test_the_pipeline_follows_a_layout_only_with_a_model_that_reads_one(tmp_path):
    torch.manual_seed(0)
    grounded = _as_if_trained(SoraModel(_grounded_config()), layouts_too=True)
    pipe = Pipeline.from_model(grounded)
    caption, scene = plan("a red square sliding right", seed=1)
    kw = dict(steps=2, cfg=3.0, seed=0)
    a = pipe.generate(caption, 16, 16, 9, **kw)
    b = pipe.generate(caption, 16, 16, 9, layout=scene, **kw)
    c = pipe.generate(caption, 16, 16, 9, layout=scene.to_dict(), **kw)
    assert not torch.equal(a, b) and torch.equal(b, c)
    plain = Pipeline.from_model(_as_if_trained(SoraModel(preset("micro"))))
    assert not plain.reads_layouts and pipe.reads_layouts
    assert torch.equal(plain.generate(caption, 16, 16, 9, **kw), plain.generate(caption, 16, 16, 9, layout=scene, **kw))
    with pytest.raises(TypeError, match="layout must be a planned scene"):
        pipe.generate(caption, 16, 16, 9, layout="left to right", **kw)


def test_the_pipeline_guides_toward_a_layout_by_default_and_budgets_the_third_pass(monkeypatch):
    from sora_core import budget

    torch.manual_seed(0)
    pipe = Pipeline.from_model(_as_if_trained(SoraModel(_grounded_config()), layouts_too=True))
    caption, scene = plan("a red square sliding right", seed=1)
    passes, check = [], budget.check
    monkeypatch.setattr(budget, "check", lambda *a, **kw: (passes.append(kw["passes"]), check(*a, **kw))[1])

    def run(**extra):  # the video, and the passes per step its budget was checked for
        passes.clear()
        video = pipe.generate(caption, 16, 16, 9, steps=2, cfg=3.0, seed=0, **extra)
        return video, set(passes)

    default, two, none = run(layout=scene), run(layout=scene, layout_cfg=2.0), run(layout=scene, layout_cfg=0.0)
    assert pipe.defaults.layout_cfg == 2.0 and torch.equal(default[0], two[0]) and not torch.equal(default[0], none[0])
    assert default[1] == two[1] == {3} and none[1] == {2}
    plain = run(layout_cfg=5.0)  # no layout: nothing to guide toward
    assert torch.equal(plain[0], run()[0]) and plain[1] == {2}
    assert run(layout=scene, sequential_cfg=True)[1] == {1}  # one pass at a time
    with pytest.raises(ValueError, match=r"layout_cfg=-1 is not allowed: use a number >= 0"):
        run(layout=scene, layout_cfg=-1)


def test_the_plan_is_the_offline_recaption_and_the_scene_it_describes():
    caption, scene = plan("two blue circles moving up", seed=4)
    assert caption == recaption("two blue circles moving up", seed=4)
    assert [(o.color, o.shape, o.motion) for o in scene.objects] == [("blue", "circle", "up")] * 2


def test_the_plan_sizes_objects_the_prompt_leaves_unsized_so_their_shapes_read():
    from sora_core.recaption import PLAN_SIZE

    prompt = "a red square and a blue star and a green triangle"
    sizes = {o.size for seed in range(12) for o in plan(prompt, seed=seed)[1].objects}
    assert sizes == {PLAN_SIZE}  # training would have drawn "small" for about half of them
    _, scene = plan("a small red star and a large blue square", seed=3)
    assert [(o.shape, o.size) for o in scene.objects] == [("star", "small"), ("square", "large")]
    # an occlusion keeps a small mover passing behind a large occluder
    _, scene = plan("a red ball passes behind a blue box", seed=2)
    assert [o.size for o in scene.objects] == ["small", "large"]


def test_the_plan_is_made_for_the_clip_s_length_so_its_objects_move_at_training_speeds():
    from sora_core.data.synthetic import BOUNCE_SPEED
    from sora_core.data.world import screen_path
    from sora_core.pipeline import Defaults

    assert plan("a red square", seed=0)[1].frames == Defaults.frames

    def steps(planned: int) -> list[float]:  # each plan's fastest per-frame step (of the frame) shown over 17 frames
        out = []
        for seed in range(16):
            scene = plan("a red ball bouncing", seed=seed, frames=planned)[1]
            assert scene.frames == planned
            x, y = screen_path(scene, scene.objects[0])
            out.append(np.hypot(np.diff(x), np.diff(y)).max() * (planned - 1) / 16)
        return out

    assert max(steps(17)) <= BOUNCE_SPEED[1] + 1e-9  # as fast as training's clips go, no faster
    assert min(steps(33)) > BOUNCE_SPEED[1]  # a 33-frame plan squeezed into 17 frames: faster than any of them
    assert plan("a red square moving right", seed=0, frames=1)[1].frames == 1
    for bad in (0, -3, 2.5, True, "17"):
        with pytest.raises(ValueError, match=f"frames={bad!r} is not allowed"):
            plan("a red square", frames=bad)


def test_a_long_video_follows_the_layout_in_its_opening_window_and_later_windows_carry_on():
    from sora_core.long import LongVideo

    torch.manual_seed(0)
    pipe = Pipeline.from_model(_as_if_trained(SoraModel(_grounded_config()), layouts_too=True))
    caption, scene = plan("a red square sliding right", seed=1)
    grounded, real = [], pipe.sample
    pipe.sample = lambda w, text, neg, **kw: (grounded.append(kw["grounding"] is not None), real(w, text, neg, **kw))[1]
    kw = dict(width=16, height=16, new_frames=8, context_frames=4, steps=1, cfg=1.0, seed=0)
    frames = torch.cat(list(LongVideo(pipe, caption, 33, layout=scene.to_dict(), **kw)))
    assert frames.shape[0] == 33 and len(grounded) >= 3
    assert grounded[0] and not any(grounded[1:])  # extensions continue the frames before them
    opening = pipe.generate(caption, 16, 16, 17, layout=scene, steps=1, cfg=1.0, seed=0)
    assert torch.equal(frames[:12], opening[:12])  # the opening up to its last context + 1 frames, as generated
    plain = torch.cat(list(LongVideo(pipe, caption, 33, **kw)))
    assert not torch.equal(plain[:12], frames[:12])
    with pytest.raises(ValueError, match="layout is for a video drawn from the prompt"):
        LongVideo(pipe, caption, 33, start=opening[:9], layout=scene, **kw)
    with pytest.raises(TypeError, match="layout must be a planned scene"):
        LongVideo(pipe, caption, 33, layout="left to right", **kw)


class _Toy(torch.nn.Module):
    """A denoiser whose velocity is x times the mean of the prompt's valid tokens plus the grounding's mean,
    recording its batch sizes."""

    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(()))
        self.batches = []

    def forward(self, x, t, emb, mask, grounding=None):
        self.batches.append(x.shape[0])
        prompt = (emb * mask[..., None]).sum(dim=(1, 2)) / (mask.sum(dim=1) * emb.shape[2])
        out = x * prompt.view(-1, 1, 1, 1, 1) * self.scale
        return out if grounding is None else out + grounding.mean(dim=(1, 2)).view(-1, 1, 1, 1, 1)


@pytest.mark.parametrize("sequential", [False, True])
def test_layout_guidance_adds_the_pull_of_the_layout_to_the_prompts(sequential):
    from sora_core.engine import guided_velocity

    x, t = torch.randn(2, 1, 3, 2, 2), torch.full((2,), 0.5)
    text, neg = (torch.full((1, 3, 4), 2.0), torch.ones(1, 3, dtype=torch.bool)), \
        (torch.full((1, 1, 4), 0.5), torch.ones(1, 1, dtype=torch.bool))
    ground = torch.full((1, 12, 6), 0.25)
    dit = _Toy()
    v = guided_velocity(dit, text, neg, 4.0, sequential=sequential, grounding=ground, layout_cfg=3.0)(x, t)
    cond, uncond, bare = 2.0 * x + 0.25, 0.5 * x + 0.25, 2.0 * x  # the prompt's, the negative's, the prompt's bare
    assert torch.allclose(v, uncond + 4.0 * (cond - uncond) + 3.0 * (cond - bare))
    assert dit.batches == ([2, 2, 2] if sequential else [6])  # a third pass
    dit.batches.clear()
    v = guided_velocity(dit, text, neg, 4.0, sequential=sequential, grounding=ground, layout_cfg=0.0)(x, t)
    assert torch.allclose(v, uncond + 4.0 * (cond - uncond)) and sum(dit.batches) == 4  # no third pass
    v = guided_velocity(dit, text, None, 4.0, grounding=ground, layout_cfg=3.0)(x, t)
    assert torch.allclose(v, cond + 3.0 * (cond - bare))  # without a negative: the layout's pull alone
    v = guided_velocity(dit, text, neg, 4.0, layout_cfg=3.0)(x, t)
    assert torch.allclose(v, 0.5 * x + 4.0 * 1.5 * x)  # no layout: nothing to pull toward
