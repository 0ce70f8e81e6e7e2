"""Train the diffusion transformer (and the small text encoder) on frozen VAE latents.

Each sample gets a condition mask from a mix of tasks (Open-Sora 1.3's recipe), so one model
learns text-to-video and every temporal capability at once: given frames sit at t=0 and are
left out of the loss. Captions are dropped 10% of the time so classifier-free guidance has an
unconditional model to push against.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel as DDP

from ..checkpoint import SoraModel, load_checkpoint, save_checkpoint
from ..config import preset
from ..data.buckets import BucketConfig
from ..engine import num_tokens
from ..flow import flow_loss, resolution_shift, sample_training_t
from ..preview import METADATA_KEY, fit_latent_rgb
from ..grounding import layout, grounding
from ..text import tokenize
from .common import (EMA, Clock, Logger, check_time_limit, cleanup_distributed, lr_at, resume_training_state,
                     save_training_state, setup_distributed, use_bfloat16)
from .data import folder_batches, prefetched, synthetic_batches

# Task -> probability. Tasks needing several latent frames fall back to text-to-video for images.
MASK_MIX = {
    "t2v": 0.35,
    "i2v_head": 0.20,  # animate an image (first frame given)
    "i2v_tail": 0.05,  # the image is the last frame
    "head": 0.15,  # extend forward: the first k latent frames given
    "tail": 0.10,  # extend backward: the last k latent frames given
    "head_tail": 0.15,  # connect / loop: both ends given
}


def condition_mask(latent_t: int, rng: np.random.Generator, mix: dict[str, float] = MASK_MIX) -> tuple[str, torch.Tensor]:
    """Draw a task from `mix` and its per-frame strength (1 = generate, 0 = given) for a clip of `latent_t` frames."""
    strength = torch.ones(latent_t)
    if latent_t < 2:
        return "t2v", strength
    tasks = list(mix)
    task = tasks[rng.choice(len(tasks), p=np.array(list(mix.values())) / sum(mix.values()))]
    if task == "i2v_head":
        strength[0] = 0
    elif task == "i2v_tail":
        strength[-1] = 0
    elif task == "head":
        strength[: rng.integers(1, latent_t)] = 0
    elif task == "tail":
        strength[latent_t - rng.integers(1, latent_t) :] = 0
    elif task == "head_tail" and latent_t >= 3:
        k_head = int(rng.integers(1, latent_t - 1))
        k_tail = int(rng.integers(1, latent_t - k_head))
        strength[:k_head] = 0
        strength[latent_t - k_tail :] = 0
    return task, strength


class Denoiser(nn.Module):
    """Text encoder + DiT as one trainable module (what DDP wraps); returns the flow loss."""

    def __init__(self, model: SoraModel):
        super().__init__()
        self.text, self.dit = model.text, model.dit

    def forward(self, z, t, strength, noise, ids, mask, layouts=None):
        ctx = self.text(ids, mask)
        g = None
        if layouts is not None and any(lay is not None for lay in layouts):
            g = grounding(self.text, layouts, num_tokens(self.dit, z))
        return flow_loss(lambda x, tt: self.dit(x, tt, ctx, mask, g), z, t, strength, noise)


def pick_texts(batch: dict, rng: np.random.Generator, drop: float, short: float) -> list[str]:
    """Mostly the detailed caption (the report's recipe), sometimes the short prompt, sometimes nothing."""
    texts = []
    for caption, prompt in zip(batch["caption"], batch["prompt"]):
        u = rng.random()
        texts.append("" if u < drop else prompt if u < drop + short else caption)
    return texts


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True)
    p.add_argument("--vae", required=True, help="trained VAE checkpoint (.safetensors)")
    p.add_argument("--preset", default="tiny", help="sizes of the text encoder and DiT")
    p.add_argument("--data", default="synthetic")
    p.add_argument("--steps", type=int, default=10000)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument("--resolutions", default="64px")
    p.add_argument("--frames", default="1,9,17")
    p.add_argument("--bucket-weights", default="",
                   help="how often to draw buckets, by frame count and/or resolution (multiplied), "
                        "e.g. '1:1,17:3,32px:2'")
    p.add_argument("--tokens-per-batch", type=int, default=2048)
    p.add_argument("--text-dropout", type=float, default=0.1)
    p.add_argument("--short-prompts", type=float, default=0.1)
    p.add_argument("--ema", type=float, default=0.999)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save-every", type=int, default=500)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--init", default=None, help="start text encoder + DiT from this checkpoint")
    p.add_argument("--init-parts", default="text,dit",
                   help="which of --init's parts to start from (the others start fresh): 'text,dit', 'text' or "
                        "'dit'. A fresh DiT on a trained text encoder learns motion far sooner than the shipped "
                        "DiT can be taught it (docs/training.md, section 6)")
    p.add_argument("--device", default=None)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--data-workers", type=int, default=0,
                   help="processes rendering / decoding batches in the background (0: in the training loop)")
    p.add_argument("--gradient-checkpointing", action="store_true")
    p.add_argument("--scene", default="", help="JSON options for the synthetic world's sample_scene, e.g. "
                   "'{\"n_objects\": 1, \"camera\": \"still\"}' for a quick probe")
    p.add_argument("--dit", default="", help="JSON overrides of the preset's DiT config, e.g. '{\"depth\": 4}'")
    p.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto",
                   help="bf16 autocast (fp32 master weights); auto = bf16 on CUDA and on CPUs with native bf16 "
                        "matmuls (AVX512-BF16 / AMX), else fp32")
    p.add_argument("--compile", action="store_true", help="torch.compile the DiT (minutes to compile; faster steps)")
    p.add_argument("--time-limit", type=float, default=None,
                   help="stop after this many minutes (saving first); the LR decay follows the clock too")
    p.add_argument("--mask-mix", default="",
                   help=f"JSON task weights replacing the default mix {MASK_MIX}, e.g. '{{\"t2v\": 1}}'")
    p.add_argument("--batch-reuse", type=int, default=1,
                   help="train on each rendered batch this many times, with new noise, timesteps and masks "
                        "each time (for a device faster than the data workers)")
    p.add_argument("--layouts", type=float, default=0.0,
                   help="share of synthetic samples given their scene's layout (docs/training.md section 16); "
                        "needs a DiT with grounding, e.g. --dit '{\"grounding\": true}'")
    p.add_argument("--shift", type=float, default=None,
                   help="timestep shift for training (default: by token count, as at inference)")


def run(args: argparse.Namespace) -> Path:
    init_parts = tuple(part.strip() for part in args.init_parts.split(","))
    if args.batch_reuse < 1:
        raise ValueError(f"--batch-reuse={args.batch_reuse} is not allowed: use 1 or more")
    check_time_limit(args.time_limit)
    if not 0 <= args.layouts <= 1:
        raise ValueError(f"--layouts={args.layouts!r} is not allowed: use a share from 0 to 1")
    mix = parse_mask_mix(args.mask_mix)
    if not set(init_parts) <= {"text", "dit"} or len(set(init_parts)) != len(init_parts):
        raise ValueError(f"--init-parts={args.init_parts!r} is not allowed: use 'text,dit', 'text' or 'dit'")
    if args.threads:
        torch.set_num_threads(args.threads)
    d = setup_distributed(args.device)
    out = Path(args.out)
    vae_model = load_checkpoint(args.vae, parts=("vae",))
    config = preset(args.preset)
    dit_options = json.loads(args.dit) if args.dit else {}
    config = replace(config, vae=vae_model.config.vae,
                     dit=replace(config.dit, latent_channels=vae_model.config.vae.latent_channels, **dit_options))
    config.validate()
    if args.layouts and not config.dit.grounding:
        raise ValueError(f"--layouts={args.layouts} needs a DiT that reads layouts: add --dit '{{\"grounding\": true}}'")
    torch.manual_seed(args.seed)
    model = SoraModel(config)
    model.vae.load_state_dict(vae_model.vae.state_dict())
    if args.init:
        init = load_checkpoint(args.init, parts=init_parts)
        for name in init_parts:
            print(f"--init {name}: {warm_start(getattr(model, name), getattr(init, name).state_dict())}")
    model.to(d.device)
    model.vae.requires_grad_(False).eval()
    preview = fit_latent_rgb(model.vae)  # latent -> RGB factors for live previews, stored with the model
    model.dit.gradient_checkpointing = args.gradient_checkpointing
    denoiser = Denoiser(model)
    if args.compile:
        model.dit.compile(dynamic=True)  # in place: parameter names (checkpoints, EMA) stay the same
    ema = EMA(denoiser, args.ema)
    opt = torch.optim.AdamW(denoiser.parameters(), lr=args.lr, betas=(0.9, 0.99), weight_decay=0.01, fused=True)
    state_path = out / "dit_state.pt"
    step = resume_training_state(state_path, denoiser, opt, ema) if args.resume else 0
    net = DDP(denoiser) if d.world > 1 else denoiser
    frames = tuple(int(f) for f in args.frames.split(","))
    weights = parse_bucket_weights(args.bucket_weights)
    buckets = BucketConfig(resolutions=tuple(args.resolutions.split(",")), frames=frames,
                           size_multiple=config.pixel_multiple, tokens_per_batch=args.tokens_per_batch,
                           spatial_stride=config.pixel_multiple, temporal_stride=config.vae.temporal_factor)
    scene = json.loads(args.scene) if args.scene else None

    # On the CPU the background workers also run the frozen VAE encoder, so the training process does
    # nothing but the DiT; on a GPU the encoder stays in the training process.
    encode_in_workers = args.data_workers > 0 and d.device.type == "cpu"

    def make_batches(worker: int, workers: int):
        rank, world = d.rank * workers + worker, d.world * workers
        if args.data == "synthetic":
            source = synthetic_batches(buckets, seed=args.seed, rank=rank, world=world, bucket_weights=weights,
                                       scene_options=scene)
        else:
            source = folder_batches(args.data, buckets, seed=args.seed, rank=rank, world=world)
        for batch in source:
            if encode_in_workers:
                with torch.no_grad():
                    batch["latents"] = model.vae.encode(batch.pop("video"))
            yield batch

    batches = prefetched(make_batches, args.data_workers)
    batch: dict = {}
    rng = np.random.default_rng([args.seed, d.rank, 11])
    gen = torch.Generator().manual_seed(args.seed * 1000 + d.rank)
    log = Logger(out, args.steps, enabled=d.main)
    use_bf16 = use_bfloat16(args.precision, d.device)
    clock = Clock(args.time_limit)  # the limit counts from the first step, after loading and setup
    used = 0.0  # share of the time limit, read every 10 steps (all ranks agree on it)
    while step < args.steps and used < 1.0:
        if step % args.batch_reuse == 0 or "latents" not in batch:
            batch = next(batches)
            if "latents" not in batch:
                with torch.no_grad():
                    batch["latents"] = model.vae.encode(batch.pop("video").to(d.device))  # (B, C, T, h, w)
        z = batch["latents"].to(d.device)
        b, _, lt, lh, lw = z.shape
        strength = torch.stack([condition_mask(lt, rng, mix)[1] for _ in range(b)]).to(d.device)
        ids, mask = tokenize(pick_texts(batch, rng, args.text_dropout, args.short_prompts),
                             config.text.vocab_size, config.text.max_tokens)
        tokens = lt * (lh // config.dit.patch[1]) * (lw // config.dit.patch[2])
        shift = args.shift if args.shift is not None else resolution_shift(tokens)
        t = sample_training_t(b, shift=shift, generator=gen).to(d.device)
        noise = torch.randn(z.shape, generator=gen).to(d.device)
        for group in opt.param_groups:
            group["lr"] = lr_at(step, args.lr, args.warmup, args.steps, time_frac=used)
        layouts = None
        if args.layouts and batch.get("scene"):
            layouts = [layout(scene, config, (lt, lh, lw)) if rng.random() < args.layouts else None
                       for scene in batch["scene"]]
        with torch.autocast(d.device.type, dtype=torch.bfloat16, enabled=use_bf16):
            loss = net(z, t, strength, noise, ids.to(d.device), mask.to(d.device), layouts)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(denoiser.parameters(), 1.0)
        opt.step()
        ema.update(denoiser, step)
        step += 1
        if step % 10 == 0:
            used = clock.fraction(d)
        last = step == args.steps or used >= 1.0
        if step % 10 == 0 or last:
            log.log(step, loss=loss.item(), grad_norm=float(grad_norm), lr=opt.param_groups[0]["lr"])
        if d.main and (step % args.save_every == 0 or last):
            save_training_state(state_path, denoiser, opt, ema, step)
            export(model, denoiser, ema, out / "model.safetensors", {"dit_steps": step, METADATA_KEY: preview.to_json()})
    log.close("loss")
    if d.world > 1:
        check_ranks_agree(denoiser, d)
    cleanup_distributed()
    return out / "model.safetensors"


@torch.no_grad()
def warm_start(module: nn.Module, source: dict[str, torch.Tensor]) -> str:
    """Start `module` from an older checkpoint's weights where they fit, so a config change does not
    throw away what was learned. A tensor of the same shape is copied; one whose first dimension grew
    (a text encoder reading more tokens) keeps the old rows and zeros the new ones; a tensor the old
    model lacks (a new embedding, e.g. the DiT's absolute position) is zeroed, so the warm-started
    network computes exactly what the old one did until training moves it. Other shapes are refused.
    """
    copied, grown, zeroed = 0, 0, []
    for name, param in module.state_dict().items():
        old = source.get(name)
        if old is None:
            param.zero_()
            zeroed.append(name)
        elif old.shape == param.shape:
            param.copy_(old)
            copied += 1
        elif old.dim() == param.dim() and old.shape[1:] == param.shape[1:] and old.shape[0] < param.shape[0]:
            param.zero_()
            param[: old.shape[0]].copy_(old)
            grown += 1
        else:
            raise ValueError(f"--init: {name} has shape {tuple(old.shape)} in the checkpoint, "
                             f"{tuple(param.shape)} in the model being trained; only growth of the first "
                             f"dimension is allowed")
    unused = sorted(set(source) - set(module.state_dict()))
    if unused:
        raise ValueError(f"--init: the checkpoint has tensors this model does not: {unused[:5]}")
    return f"{copied} copied, {grown} grown, {len(zeroed)} new and zeroed {zeroed}"


def parse_mask_mix(text: str) -> dict[str, float]:
    """`--mask-mix` JSON -> task weights (empty: the default mix)."""
    if not text:
        return MASK_MIX
    try:
        mix = json.loads(text)
    except json.JSONDecodeError:
        mix = None
    if (not isinstance(mix, dict) or not mix or not set(mix) <= set(MASK_MIX)
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0 for v in mix.values())
            or sum(mix.values()) <= 0):
        raise ValueError(f"--mask-mix={text!r} is not allowed: use a JSON object of task weights >= 0 "
                         f"(not all 0) over {sorted(MASK_MIX)}")
    return {k: float(v) for k, v in mix.items()}


def parse_bucket_weights(text: str) -> dict:
    """'1:1,17:3,32px:2' -> {1: 1.0, 17: 3.0, '32px': 2.0}."""
    out: dict = {}
    for item in filter(None, (kv.strip() for kv in text.split(","))):
        key, sep, value = item.partition(":")
        try:
            out[key if key.endswith("px") else int(key)] = float(value)
        except ValueError:
            raise ValueError(f"--bucket-weights entry {item!r} is not allowed: use FRAMES:WEIGHT or RESpx:WEIGHT, "
                             f"e.g. '17:3' or '32px:2'") from None
        if not sep or out[key if key.endswith("px") else int(key)] < 0:
            raise ValueError(f"--bucket-weights entry {item!r} is not allowed: use FRAMES:WEIGHT or RESpx:WEIGHT "
                             f"with a weight >= 0")
    return out


def check_ranks_agree(module: nn.Module, d) -> None:
    """DDP must leave every rank with the same weights; a cheap checksum proves it."""
    import torch.distributed as dist

    total = torch.stack([p.detach().double().sum() for p in module.parameters()]).sum().reshape(1).to(d.device)
    sums = [torch.zeros_like(total) for _ in range(d.world)]
    dist.all_gather(sums, total)
    if any(not torch.equal(s, sums[0]) for s in sums):
        raise RuntimeError(f"DDP ranks diverged: parameter checksums {[s.item() for s in sums]}")
    if d.main:
        print(f"ddp: {d.world} ranks, identical weights (checksum {sums[0].item():.6f})")


def export(model: SoraModel, denoiser: Denoiser, ema: EMA, path: Path, extra: dict) -> None:
    """Write the EMA weights as a complete model (VAE + text + DiT) in fp16, leaving training weights alone."""
    live = {k: v.clone() for k, v in denoiser.state_dict().items()}
    ema.copy_to(denoiser)
    save_checkpoint(model, path, dtype=torch.float16, extra=extra)
    denoiser.load_state_dict(live)
