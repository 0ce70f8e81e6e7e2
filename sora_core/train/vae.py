"""Train the video compression network.

Loss: L1 + MSE on pixels (MSE is what PSNR measures), L1 on spatial and temporal gradients
(keeps edges sharp and motion crisp, the job a perceptual loss would do; no pretrained
perceptual network can be downloaded here), and a small KL term that keeps the latent space
smooth for the DiT. Afterwards the per-channel latent statistics are measured and stored in the
config, so the DiT sees unit-variance latents.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP

from ..checkpoint import SoraModel, load_checkpoint, save_checkpoint
from ..config import preset
from ..vae import CausalConv3d, DepthToTime, VideoVAE
from ..data.buckets import BucketConfig
from .common import (EMA, Clock, Logger, check_time_limit, cleanup_distributed, lr_at, resume_training_state,
                     save_training_state, setup_distributed)
from .data import folder_batches, prefetched, random_crop, synthetic_batches


def gradient_l1(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """L1 between finite differences of (B, C, T, H, W) videos: (along height and width, along time)."""
    spatial = (a.diff(dim=-1) - b.diff(dim=-1)).abs().mean() + (a.diff(dim=-2) - b.diff(dim=-2)).abs().mean()
    temporal = (a.diff(dim=2) - b.diff(dim=2)).abs().mean() if a.shape[2] > 1 else a.new_zeros(())
    return spatial, temporal


def vae_loss(recon, target, mean, logvar, kl_weight: float, temporal_weight: float = 0.5):
    """`temporal_weight` weighs the frame-to-frame changes' L1: raised, it makes the decoder move things
    inside each 4-frame chunk rather than hold them and jump at the next chunk (eval's `vae_stutter`)."""
    l1 = (recon - target).abs().mean()
    mse = F.mse_loss(recon, target)
    spatial, temporal = gradient_l1(recon, target)
    kl = 0.5 * (mean.pow(2) + logvar.exp() - 1 - logvar).mean()
    total = l1 + mse + 0.5 * spatial + temporal_weight * temporal + kl_weight * kl
    return total, {"l1": l1.detach(), "mse": mse.detach(), "grad": spatial.detach(), "temporal": temporal.detach(),
                   "kl": kl.detach()}  # tensors: no sync


@torch.no_grad()
def warm_start_decoder(new: VideoVAE, old: VideoVAE) -> None:
    """Copy `old` (frames split at the output conv) into `new` (split after a lower level): the encoder and
    latent statistics as they are, the decoder's convs in order; the new split conv starts by copying its
    input into every frame, and the output conv, which made a chunk's frames, averages them. The result
    decodes each chunk as the old decoder's frames averaged when no 3x3x3 conv sits above the split, and
    approximately so otherwise (those convs then run over frames instead of latent frames)."""
    if old.config.depth_to_time_level is not None or new.config.depth_to_time_level is None:
        raise ValueError("warm_start_decoder goes from a decoder that splits frames at its output to one that "
                         "splits them lower down")
    new.encoder.load_state_dict(old.encoder.state_dict())
    new.latent_mean.copy_(old.latent_mean)
    new.latent_std.copy_(old.latent_std)
    tf = new.temporal_factor
    layers = list(new.decoder.net)
    given = [m.conv for m in old.decoder.net if isinstance(m, CausalConv3d)]
    for i, layer in enumerate(layers):
        if not isinstance(layer, CausalConv3d):
            continue
        dst = layer.conv
        if i + 1 < len(layers) and isinstance(layers[i + 1], DepthToTime):  # the split: identity into each frame
            dst.weight.zero_()
            dst.bias.zero_()
            centre = dst.weight[:, :, -1, dst.kernel_size[1] // 2, dst.kernel_size[2] // 2]
            for f in range(tf):
                centre[f * dst.in_channels:(f + 1) * dst.in_channels].copy_(torch.eye(dst.in_channels))
            continue
        w, b = given[0].weight, given.pop(0).bias
        if not given:  # the output conv: (f c) channels -> c, averaged over the chunk's frames
            w, b = w.view(tf, -1, *w.shape[1:]).mean(0), b.view(tf, -1).mean(0)
        dst.weight.copy_(w)
        dst.bias.copy_(b)


def latent_anchor(vae: VideoVAE):
    """A function (video, new raw latent mean (N, C, h, w) from `moments`) -> the MSE between those latents and
    what a frozen copy of `vae` encodes, each divided by the stored per-channel std (the DiT's units)."""
    import copy

    frozen = copy.deepcopy(vae).eval().requires_grad_(False)
    std = frozen.latent_std.view(1, -1, 1, 1)

    def anchor(video: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            old, _ = frozen.moments(frozen.to_chunks(video))
        return F.mse_loss(mean / std, old / std)

    return anchor


@torch.no_grad()
def latent_statistics(vae, batches, count: int, device) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of raw (unnormalised) latents over `count` batches."""
    values = []
    for _ in range(count):
        video = next(batches)["video"].to(device)
        mean, _ = vae.moments(vae.to_chunks(video))
        values.append(mean.transpose(0, 1).reshape(mean.shape[1], -1))
    allv = torch.cat(values, dim=1)
    return allv.mean(1).tolist(), allv.std(1).clamp(min=1e-3).tolist()


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="output folder (checkpoints, log, loss curve)")
    p.add_argument("--preset", default="tiny")
    p.add_argument("--data", default="synthetic", help="'synthetic' or a folder of captioned clips")
    p.add_argument("--real-fraction", type=float, default=0.0,
                   help="share of batches cut from real footage (the training split of "
                        "comfyui-workflow-templates-media-video; its evaluation clips are never used)")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--kl-weight", type=float, default=1e-4)
    p.add_argument("--temporal-weight", type=float, default=0.5,
                   help="weight of the L1 on frame-to-frame changes (higher: motion inside each 4-frame chunk "
                        "instead of a hold and a jump at the next; see eval's vae_stutter)")
    p.add_argument("--crop", type=int, default=64, help="largest spatial crop, px")
    p.add_argument("--resolutions", default="64px")
    p.add_argument("--frames", default="1,5,9")
    p.add_argument("--tokens-per-batch", type=int, default=2048, help="latent cells per batch")
    p.add_argument("--ema", type=float, default=0.995)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save-every", type=int, default=500)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--init", default=None, help="start from the VAE of this checkpoint (e.g. the shipped model)")
    p.add_argument("--decoder-only", action="store_true",
                   help="with --init: train only the decoder, so the latents (and a DiT trained on them) stay valid")
    p.add_argument("--anchor-weight", type=float, default=0.0,
                   help="with --init, encoder trained too: weight of an MSE holding the encoder's latents of "
                        "synthetic clips (in the DiT's normalised units) to the checkpoint's, so a DiT trained on "
                        "them stays valid while real footage may encode differently (docs/training.md section 13)")
    p.add_argument("--depth-to-time-level", type=int, default=None,
                   help="with --init --decoder-only: rebuild the decoder so its frames split after this level "
                        "(0: the lowest resolution), warm-started from the checkpoint's decoder; the encoder "
                        "and its latents stay (docs/training.md section 10)")
    p.add_argument("--time-limit", type=float, default=None,
                   help="stop after this many minutes (saving first); the LR decay follows the clock too")
    p.add_argument("--data-workers", type=int, default=0, help="background processes rendering batches (0: inline)")
    p.add_argument("--device", default=None)
    p.add_argument("--threads", type=int, default=None)


def run(args: argparse.Namespace) -> Path:
    if args.threads:
        torch.set_num_threads(args.threads)
    check_time_limit(args.time_limit)
    d = setup_distributed(args.device)
    out = Path(args.out)
    torch.manual_seed(args.seed)
    if not 0.0 <= args.real_fraction <= 1.0:
        raise ValueError(f"--real-fraction={args.real_fraction} is not allowed: use a share between 0 and 1")
    if args.decoder_only and not args.init:
        raise ValueError("--decoder-only needs --init: a checkpoint whose encoder (and latents) to keep")
    if args.anchor_weight < 0:
        raise ValueError(f"--anchor-weight={args.anchor_weight} is not allowed: use 0 (off) or a positive weight")
    if args.anchor_weight and (not args.init or args.decoder_only):
        raise ValueError(f"--anchor-weight={args.anchor_weight} needs --init and a trained encoder (not "
                         "--decoder-only): it holds the encoder's latents to that checkpoint's")
    if args.depth_to_time_level is not None and not args.decoder_only:
        raise ValueError("--depth-to-time-level needs --init and --decoder-only: it rebuilds that checkpoint's decoder")
    if args.init:
        model = load_checkpoint(args.init, parts=("vae",)).train()
        config = model.config
        if args.depth_to_time_level not in (None, config.vae.depth_to_time_level):
            config = replace(config, vae=replace(config.vae, depth_to_time_level=args.depth_to_time_level))
            rebuilt = SoraModel(config, parts=("vae",)).train()
            warm_start_decoder(rebuilt.vae, model.vae)
            model = rebuilt
    else:
        config = preset(args.preset)
        model = SoraModel(config, parts=("vae",))
    vae = model.vae.to(d.device)
    if args.decoder_only:
        vae.encoder.requires_grad_(False)
    anchor = latent_anchor(vae) if args.anchor_weight else None
    trainable = [p for p in vae.parameters() if p.requires_grad]
    ema = EMA(vae, args.ema)
    opt = torch.optim.AdamW(trainable, lr=args.lr, betas=(0.9, 0.99), weight_decay=0.0)
    state_path = out / "vae_state.pt"
    step = resume_training_state(state_path, vae, opt, ema) if args.resume else 0
    net = DDP(vae) if d.world > 1 else vae
    frames = tuple(int(f) for f in args.frames.split(","))
    buckets = BucketConfig(resolutions=tuple(args.resolutions.split(",")), frames=frames,
                           size_multiple=config.vae.spatial_factor * 2, tokens_per_batch=args.tokens_per_batch,
                           spatial_stride=config.vae.spatial_factor, temporal_stride=config.vae.temporal_factor)

    def make_batches(worker: int, workers: int):
        rank, world = d.rank * workers + worker, d.world * workers
        if args.data == "synthetic":
            return synthetic_batches(buckets, seed=args.seed, rank=rank, world=world, captions=False)
        return folder_batches(args.data, buckets, seed=args.seed, rank=rank, world=world)

    batches = prefetched(make_batches, args.data_workers)
    crop_rng = np.random.default_rng([args.seed, d.rank, 7])
    real = real_clip_bank() if args.real_fraction > 0 else None
    log = Logger(out, args.steps, enabled=d.main)
    gen = torch.Generator().manual_seed(args.seed * 1000 + d.rank)
    clock = Clock(args.time_limit)  # the limit counts from the first step
    used = 0.0  # share of the time limit, read every 10 steps (all ranks agree on it)
    while step < args.steps and used < 1.0:
        video = random_crop(next(batches)["video"], args.crop, config.vae.spatial_factor, crop_rng)
        synthetic = not (real is not None and crop_rng.random() < args.real_fraction)
        if not synthetic:
            video = real.batch(crop_rng, *video.shape[:1], *video.shape[2:])
        video = video.to(d.device)
        for group in opt.param_groups:
            group["lr"] = lr_at(step, args.lr, args.warmup, args.steps, time_frac=used)
        recon, mean, logvar = net(video, gen)
        loss, parts = vae_loss(recon, video, mean, logvar, args.kl_weight, args.temporal_weight)
        if anchor is not None and synthetic:
            held = anchor(video, mean)
            loss = loss + args.anchor_weight * held
            parts["anchor"] = held.detach()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        opt.step()
        ema.update(vae, step)
        step += 1
        if step % 10 == 0:
            used = clock.fraction(d)
        last = step == args.steps or used >= 1.0
        if step % 10 == 0 or last:
            parts = {k: float(v) for k, v in parts.items()}
            psnr = 10 * np.log10(4.0 / max(parts["mse"], 1e-10))  # signal range [-1, 1] has peak-to-peak 2
            log.log(step, loss=loss.item(), psnr=psnr, **parts)
        if d.main and (step % args.save_every == 0 or last):
            save_training_state(state_path, vae, opt, ema, step)
    log.close("loss")
    path = out / "vae.safetensors"
    if d.main:
        ema.copy_to(vae)
        vae.eval()
        if args.decoder_only or anchor is not None:  # the same latents: keep the statistics a DiT was trained with
            final = SoraModel(config, parts=("vae",))
            final.vae.load_state_dict(vae.state_dict())
        else:
            mean, std = latent_statistics(vae, batches, 8, d.device)
            final = SoraModel(replace(config, vae=replace(config.vae, latent_mean=tuple(mean), latent_std=tuple(std))),
                              parts=("vae",))
            final.vae.load_state_dict({**vae.state_dict(), "latent_mean": final.vae.latent_mean,
                                       "latent_std": final.vae.latent_std})
        save_checkpoint(final, path)
        stats = final.config.vae
        print(f"saved {path} (latent mean {stats.latent_mean and np.round(stats.latent_mean, 3).tolist()}, "
              f"std {stats.latent_std and np.round(stats.latent_std, 3).tolist()})")
    cleanup_distributed()
    return path


def real_clip_bank():
    from ..data.real_clips import RealClipBank, split_template_clips

    train, _ = split_template_clips()
    if not train:
        raise ValueError("--real-fraction needs the comfyui-workflow-templates-media-video package "
                         "(pip install comfyui-workflow-templates-media-video); it is not installed")
    return RealClipBank(train)
