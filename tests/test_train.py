"""Training: the condition-mask mix, caption choice, a loss that falls, and multi-process DDP."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from sora_core.checkpoint import SoraModel, load_checkpoint, save_checkpoint
from sora_core.config import preset
from sora_core.flow import sample_training_t
from sora_core.text import tokenize
from sora_core.train.dit import MASK_MIX, Denoiser, condition_mask, pick_texts, warm_start

REPO = Path(__file__).resolve().parents[1]


def test_the_mask_mix_covers_every_task_with_valid_masks():
    rng = np.random.default_rng(0)
    seen = {}
    for _ in range(2000):
        task, s = condition_mask(5, rng)
        seen[task] = seen.get(task, 0) + 1
        assert set(s.unique().tolist()) <= {0.0, 1.0}
        assert s.max() == 1.0  # something is always generated
        if task == "i2v_head":
            assert s.tolist() == [0, 1, 1, 1, 1]
        if task == "tail":
            assert s[-1] == 0 and s[0] == 1
    assert set(seen) == set(MASK_MIX)
    assert abs(seen["t2v"] / 2000 - MASK_MIX["t2v"]) < 0.05


def test_images_are_always_text_to_image():
    task, s = condition_mask(1, np.random.default_rng(0))
    assert task == "t2v" and s.tolist() == [1.0]


def test_captions_are_mostly_detailed_sometimes_short_sometimes_dropped():
    batch = {"caption": ["long"] * 3000, "prompt": ["short"] * 3000}
    texts = pick_texts(batch, np.random.default_rng(0), drop=0.1, short=0.2)
    share = {t: texts.count(t) / 3000 for t in ("", "short", "long")}
    assert abs(share[""] - 0.1) < 0.02 and abs(share["short"] - 0.2) < 0.03 and abs(share["long"] - 0.7) < 0.03


def test_training_steps_lower_the_flow_loss_on_a_fixed_batch():
    torch.manual_seed(0)
    model = SoraModel(preset("micro"))
    den = Denoiser(model)
    g = torch.Generator().manual_seed(0)
    z = torch.randn(4, 4, 3, 4, 4, generator=g)
    noise = torch.randn(z.shape, generator=g)
    t = sample_training_t(4, generator=g)
    strength = torch.ones(4, 3)
    strength[0, 0] = 0
    ids, mask = tokenize(["a red circle"] * 4, 512, 32)
    opt = torch.optim.Adam(den.parameters(), lr=2e-3)
    losses = []
    for _ in range(15):
        loss = den(z, t, strength, noise, ids, mask)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]


@pytest.fixture(scope="module")
def micro_vae(tmp_path_factory):
    path = tmp_path_factory.mktemp("vae") / "vae.safetensors"
    save_checkpoint(SoraModel(preset("micro"), parts=("vae",)), path)
    return path


def _cli(args, env=None, timeout=300):
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def test_train_dit_writes_a_loadable_model_log_and_loss_curve_and_resumes(tmp_path, micro_vae):
    out = tmp_path / "run"
    args = ["-m", "sora_core", "train", "dit", "--vae", str(micro_vae), "--preset", "micro", "--out", str(out),
            "--frames", "1,5", "--tokens-per-batch", "128", "--save-every", "4", "--threads", "1"]
    r = _cli(args + ["--steps", "4"])
    assert r.returncode == 0, r.stderr[-2000:]
    model = load_checkpoint(out / "model.safetensors")
    assert model.parts == ("vae", "text", "dit")
    r = _cli(args + ["--steps", "6", "--resume"])
    assert r.returncode == 0, r.stderr[-2000:]
    steps = [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()]
    assert max(steps) == 6  # resumed at step 4, not from scratch
    assert torch.load(out / "dit_state.pt", weights_only=True)["step"] == 6


def test_init_parts_starts_only_the_named_parts_from_the_checkpoint(tmp_path, micro_vae):
    args = ["-m", "sora_core", "train", "dit", "--vae", str(micro_vae), "--preset", "micro", "--frames", "1,5",
            "--tokens-per-batch", "128", "--threads", "1", "--lr", "0", "--warmup", "0", "--steps", "1"]
    r = _cli(args + ["--out", str(tmp_path / "a"), "--seed", "1"])
    assert r.returncode == 0, r.stderr[-2000:]
    source = load_checkpoint(tmp_path / "a" / "model.safetensors")
    r = _cli(args + ["--out", str(tmp_path / "b"), "--seed", "2", "--init", str(tmp_path / "a" / "model.safetensors"),
                     "--init-parts", "text"])
    assert r.returncode == 0, r.stderr[-2000:]
    got = load_checkpoint(tmp_path / "b" / "model.safetensors")
    same = lambda a, b: all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert same(got.text, source.text)  # lr 0: the started part is exactly the checkpoint's
    assert not same(got.dit, source.dit)  # the DiT is fresh (another seed's init)
    r = _cli(args + ["--out", str(tmp_path / "c"), "--init", str(tmp_path / "a" / "model.safetensors"),
                     "--init-parts", "text,vae"])
    assert r.returncode != 0 and "--init-parts='text,vae' is not allowed" in r.stderr


def test_train_vae_then_decoder_only_keeps_the_encoder_and_its_latents(tmp_path):
    base = ["-m", "sora_core", "train", "vae", "--preset", "micro", "--frames", "1,5", "--crop", "16",
            "--tokens-per-batch", "64", "--steps", "3", "--threads", "1"]
    r = _cli(base + ["--out", str(tmp_path / "a")])
    assert r.returncode == 0, r.stderr[-2000:]
    first = load_checkpoint(tmp_path / "a" / "vae.safetensors", parts=("vae",))
    assert first.config.vae.latent_std is not None  # statistics measured after training

    r = _cli(base + ["--out", str(tmp_path / "b"), "--init", str(tmp_path / "a" / "vae.safetensors"),
                     "--decoder-only", "--lr", "1e-2"])
    assert r.returncode == 0, r.stderr[-2000:]
    second = load_checkpoint(tmp_path / "b" / "vae.safetensors", parts=("vae",))
    for name, value in first.vae.encoder.state_dict().items():
        assert torch.equal(value, second.vae.encoder.state_dict()[name]), name
    assert second.config.vae.latent_mean == first.config.vae.latent_mean
    assert second.config.vae.latent_std == first.config.vae.latent_std
    changed = [n for n, v in first.vae.decoder.state_dict().items() if not torch.equal(v, second.vae.decoder.state_dict()[n])]
    assert changed, "the decoder did not train"
    video = torch.rand(1, 3, 5, 16, 16) * 2 - 1
    assert torch.equal(first.vae.encode(video), second.vae.encode(video))

    r = _cli(base + ["--out", str(tmp_path / "c"), "--decoder-only"])
    assert r.returncode != 0 and "--decoder-only needs --init" in r.stderr
    r = _cli(base + ["--out", str(tmp_path / "d"), "--depth-to-time-level", "0"])
    assert r.returncode != 0 and "--depth-to-time-level needs --init and --decoder-only" in r.stderr


def test_the_latent_anchor_holds_synthetic_latents_while_the_encoder_trains(tmp_path):
    from sora_core.eval.run import heldout

    base = ["-m", "sora_core", "train", "vae", "--preset", "micro", "--frames", "1,5", "--crop", "16",
            "--tokens-per-batch", "64", "--threads", "1"]
    r = _cli(base + ["--out", str(tmp_path / "a"), "--steps", "3"])
    assert r.returncode == 0, r.stderr[-2000:]
    start = tmp_path / "a" / "vae.safetensors"
    clips = torch.stack([s["video"] for s in heldout(4, 16, 16, 5, 1)])
    with torch.no_grad():
        before = load_checkpoint(start, parts=("vae",)).vae.encode(clips)
    change = {}
    for weight in ("0", "1000"):
        out = tmp_path / f"w{weight}"
        r = _cli(base + ["--out", str(out), "--init", str(start), "--anchor-weight", weight, "--steps", "20",
                         "--lr", "2e-3", "--warmup", "1", "--ema", "0"])
        assert r.returncode == 0, r.stderr[-2000:]
        got = load_checkpoint(out / "vae.safetensors", parts=("vae",))
        with torch.no_grad():
            change[weight] = float((got.vae.encode(clips) - before).pow(2).mean().sqrt())
        if weight != "0":  # anchored latents keep the statistics the DiT was trained with
            assert got.config.vae.latent_std == load_checkpoint(start, parts=("vae",)).config.vae.latent_std
    assert change["0"] > 0.05, change  # the encoder does train ...
    assert change["1000"] < change["0"] / 3, change  # ... and the anchor holds its synthetic latents

    r = _cli(base + ["--out", str(tmp_path / "c"), "--init", str(start), "--decoder-only", "--anchor-weight", "1"])
    assert r.returncode != 0 and "--anchor-weight=1.0 needs --init and a trained encoder" in r.stderr
    r = _cli(base + ["--out", str(tmp_path / "d"), "--anchor-weight", "-1"])
    assert r.returncode != 0 and "--anchor-weight=-1.0 is not allowed" in r.stderr


def test_two_process_ddp_on_cpu_trains_in_step(tmp_path, micro_vae):
    out = tmp_path / "ddp"
    r = _cli(["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "sora_core", "train", "dit",
              "--vae", str(micro_vae), "--preset", "micro", "--out", str(out), "--frames", "1,5",
              "--tokens-per-batch", "128", "--steps", "3", "--save-every", "3", "--device", "cpu", "--threads", "1"])
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-3000:])
    assert (out / "model.safetensors").exists()
    assert "ddp: 2 ranks, identical weights" in r.stdout  # the trainer compares checksums across ranks
    assert torch.load(out / "dit_state.pt", weights_only=True)["step"] == 3


def test_the_loss_curve_is_a_png(tmp_path):
    import cv2

    from sora_core.train.common import plot_curve

    plot_curve(list(range(1, 101)), [1 / s for s in range(1, 101)], tmp_path / "curve.png", "loss")
    img = cv2.imread(str(tmp_path / "curve.png"))
    assert img is not None and img.shape == (400, 800, 3) and img.std() > 5


def test_train_default_runs_the_whole_recipe_vae_then_dit_and_resumes_without_retraining_the_vae(tmp_path):
    out = tmp_path / "default"
    args = ["-m", "sora_core", "train", "default", "--profile", "micro", "--out", str(out), "--data-workers", "0",
            "--threads", "1"]
    r = _cli(args)
    assert r.returncode == 0, r.stderr[-2000:]
    model = load_checkpoint(out / "model.safetensors")
    assert model.parts == ("vae", "text", "dit") and model.config.dit.abs_pos and model.config.dit.grounding
    vae = load_checkpoint(out / "vae" / "vae.safetensors", parts=("vae",))
    for name, value in vae.vae.state_dict().items():  # the DiT stage ran on the VAE the first stage made
        assert torch.equal(value.half().float(), model.vae.state_dict()[name].float()), name
    vae_written = (out / "vae" / "vae.safetensors").stat().st_mtime_ns

    r = _cli(args + ["--resume", "--dit-steps", "3"])
    assert r.returncode == 0, r.stderr[-2000:]
    assert (out / "vae" / "vae.safetensors").stat().st_mtime_ns == vae_written
    assert torch.load(out / "dit" / "dit_state.pt", weights_only=True)["step"] == 3

    r = _cli(args + ["--dit-steps", "0"])
    assert r.returncode != 0 and "--dit-steps=0 is not allowed" in r.stderr
    r = _cli(args + ["--init", str(out / "model.safetensors")])
    assert r.returncode != 0 and "--init is not allowed with --profile micro" in r.stderr


def test_warm_start_carries_a_model_into_a_grown_config_and_computes_the_same():
    from dataclasses import replace

    old_cfg = preset("micro")
    new_cfg = replace(old_cfg, text=replace(old_cfg.text, max_tokens=old_cfg.text.max_tokens + 16),
                      dit=replace(old_cfg.dit, abs_pos=True))
    torch.manual_seed(0)
    old, new = SoraModel(old_cfg), SoraModel(new_cfg)
    for p in old.parameters():  # trained-looking weights: nothing left at its zero init
        p.data.normal_(0, 0.2)
    assert "grown" in warm_start(new.text, old.text.state_dict())
    report = warm_start(new.dit, old.dit.state_dict())
    assert "pos_embed.weight" in report
    ids, mask = tokenize(["a red ball moves left"], old_cfg.text.vocab_size, old_cfg.text.max_tokens)
    ids2, mask2 = tokenize(["a red ball moves left"], new_cfg.text.vocab_size, new_cfg.text.max_tokens)
    x, t = torch.randn(1, old_cfg.dit.latent_channels, 2, 4, 4), torch.full((1, 2), 0.5)
    with torch.no_grad():
        ref = old.dit(x, t, old.text(ids, mask), mask)
        got = new.dit(x, t, new.text(ids2, mask2), mask2)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
    with torch.no_grad():  # and training can move the new embedding: it is a real parameter
        new.dit.pos_embed.weight.normal_(0, 0.5)
        assert not torch.allclose(new.dit(x, t, new.text(ids2, mask2), mask2), ref)


def test_warm_start_refuses_shapes_it_cannot_carry():
    from dataclasses import replace

    cfg = preset("micro")
    wider = SoraModel(replace(cfg, dit=replace(cfg.dit, dim=cfg.dit.dim + 16)))
    with pytest.raises(ValueError, match=r"--init: .* has shape"):
        warm_start(SoraModel(cfg).dit, wider.dit.state_dict())


def test_the_lr_decay_follows_the_clock_under_a_time_limit():
    from sora_core.train.common import lr_at

    assert lr_at(500, 1.0, 100, 100_000) > 0.99  # far from the step budget: still at the peak
    assert lr_at(500, 1.0, 100, 100_000, time_frac=0.5) == pytest.approx(0.55)  # half the time: half-way down
    assert lr_at(500, 1.0, 100, 100_000, time_frac=1.0) == pytest.approx(0.1)
    assert lr_at(50, 1.0, 100, 100_000, time_frac=0.9) == pytest.approx(0.51)  # the warm-up is in steps


def test_a_time_limit_stops_training_early_and_saves_where_it_stopped(tmp_path, micro_vae):
    out = tmp_path / "run"
    r = _cli(["-m", "sora_core", "train", "dit", "--vae", str(micro_vae), "--preset", "micro", "--out", str(out),
              "--frames", "1", "--resolutions", "16px", "--tokens-per-batch", "64", "--steps", "1000000",
              "--save-every", "1000000", "--threads", "1", "--time-limit", "0.05"])
    assert r.returncode == 0, r.stderr[-2000:]
    step = torch.load(out / "dit_state.pt", weights_only=True)["step"]
    assert 10 <= step < 1_000_000  # stopped by the clock (3 s), not by the step budget, and saved there
    assert json.loads((out / "log.jsonl").read_text().splitlines()[-1])["step"] == step
    assert load_checkpoint(out / "model.safetensors").parts == ("vae", "text", "dit")
    r = _cli(["-m", "sora_core", "train", "vae", "--preset", "micro", "--out", str(tmp_path / "v"),
              "--time-limit", "0"])
    assert r.returncode != 0 and "--time-limit=0.0 is not allowed" in r.stderr


def test_train_default_side_by_side_takes_the_new_decoder_and_the_dit_trained_on_the_kept_encoder(tmp_path):
    torch.manual_seed(0)
    init = SoraModel(preset("micro"))
    save_checkpoint(init, tmp_path / "init.safetensors")
    out = tmp_path / "default"
    r = _cli(["-m", "sora_core", "train", "default", "--profile", "micro-parallel", "--init",
              str(tmp_path / "init.safetensors"), "--out", str(out), "--data-workers", "0", "--threads", "1"])
    assert r.returncode == 0, r.stderr[-2000:]
    final = load_checkpoint(out / "model.safetensors")
    vae = load_checkpoint(out / "vae" / "vae.safetensors", parts=("vae",))
    dit = load_checkpoint(out / "dit" / "model.safetensors")
    for name, value in final.vae.state_dict().items():  # the decoder trained beside the DiT...
        assert torch.equal(value, vae.vae.state_dict()[name].half().float()), name
    for name, value in init.vae.encoder.state_dict().items():  # ...on the encoder the DiT saw
        assert torch.equal(value.half().float(), final.vae.encoder.state_dict()[name]), name
    assert final.config.vae.depth_to_time_level == 0  # a decoder rebuilt to split frames lower down
    assert init.config.vae.depth_to_time_level is None
    for name, value in final.dit.state_dict().items():
        assert torch.equal(value, dit.dit.state_dict()[name]), name
    assert torch.load(out / "dit" / "dit_state.pt", weights_only=True)["step"] == 3  # batch reuse 2 made 3 steps


def test_mask_mix_option_draws_only_the_named_tasks_and_refuses_bad_mixes():
    from sora_core.train.dit import parse_mask_mix

    mix = parse_mask_mix('{"t2v": 1, "head": 3}')
    rng = np.random.default_rng(0)
    tasks = [condition_mask(5, rng, mix)[0] for _ in range(400)]
    assert set(tasks) == {"t2v", "head"} and 0.65 < tasks.count("head") / 400 < 0.85
    assert parse_mask_mix("") == MASK_MIX
    for bad in ('{"t2v": -1}', '{"jump": 1}', '{"t2v": 0}', "[1]", "t2v"):
        with pytest.raises(ValueError, match="--mask-mix="):
            parse_mask_mix(bad)


def test_layouts_train_a_grounded_dit_and_are_refused_for_one_that_cannot_read_them(tmp_path, micro_vae):
    args = ["-m", "sora_core", "train", "dit", "--vae", str(micro_vae), "--preset", "micro", "--frames", "1,5",
            "--tokens-per-batch", "128", "--threads", "1", "--steps", "6", "--warmup", "0", "--lr", "1e-2",
            "--layouts", "1"]
    r = _cli(args + ["--out", str(tmp_path / "a")])
    assert r.returncode != 0 and "--layouts=1.0 needs a DiT that reads layouts" in r.stderr
    r = _cli(args + ["--out", str(tmp_path / "b"), "--dit", '{"grounding": true}', "--ema", "0"])
    assert r.returncode == 0, r.stderr[-2000:]
    model = load_checkpoint(tmp_path / "b" / "model.safetensors")
    assert model.config.dit.grounding and model.dit.ground.weight.abs().sum() > 0  # zero at the start
