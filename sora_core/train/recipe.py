"""`python -m sora_core train default`: the default model's whole recipe in one command.

Each stage is the ordinary `train vae` / `train dit` run with the arguments below, so the recipe
lives in one place and a GPU runs it with a single command:

    python -m sora_core train default --profile gpu --out runs/default     # 8 min per stage, side by side
    python -m sora_core train default --profile cpu --out runs/default     # ~2 h on 2 CPU cores

`cpu` trains the VAE first, then the text encoder + DiT on its frozen latents. `gpu` starts from the
shipped model: a decoder-only VAE stage keeps the encoder (so the latents stay the same) and runs in a
second process beside the DiT continuing on those latents; the final model takes the new decoder. Stages
resume (`--resume`); `--time-limit` stops each on the clock (docs/training.md sections 8 and 10).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

from ..pipeline import DEFAULT_MODEL

# Arguments of each stage, per profile. `cpu` is the from-scratch recipe for 2 CPU cores (the shipped
# weights came from a warm-started chain of runs: docs/training.md section 4). `gpu` is what one lent
# H100/H200 affords in 10 minutes: the data workers, not the GPU, are the limit there, so it keeps the
# shipped encoder (its latents), continues the shipped text encoder and DiT on them for the time limit
# while the VAE decoder trains beside it on synthetic and real clips (rebuilt to split frames at level 0,
# warm-started, if the shipped one splits them at its output), and reuses each rendered batch twice.
# `micro` exercises every code path in seconds (tests); `micro-parallel` the gpu profile's shape.
SHIPPED = str(DEFAULT_MODEL)
DIT_BUCKETS = ["--resolutions", "32px,64px,128px", "--frames", "1,9,17,33",
               "--bucket-weights", "1:2,9:1,17:3,33:1,32px:0.4,128px:0.3"]
# The DiT's shape: an absolute position embedding, and planned layouts (with outlines) read in 80% of the samples
# (docs/training.md sections 9, 16 and 19).
DIT_SHAPE = ["--dit", '{"abs_pos": true, "grounding": true, "silhouette": 4}', "--layouts", "0.8"]
PROFILES: dict[str, dict[str, list[str]]] = {
    "cpu": {
        "vae": ["--steps", "8000", "--frames", "1,9,17,33", "--real-fraction", "0.3", "--crop", "48", "--lr", "1e-3"],
        "dit": ["--steps", "4400", "--lr", "6e-4", "--warmup", "300", *DIT_SHAPE,
                "--tokens-per-batch", "2048", *DIT_BUCKETS],
    },
    "gpu": {
        "vae": ["--init", SHIPPED, "--decoder-only", "--depth-to-time-level", "0", "--steps", "100000",
                "--frames", "1,9,17,33", "--real-fraction", "0.3", "--crop", "64", "--lr", "3e-4",
                "--tokens-per-batch", "16384"],
        "dit": ["--init", SHIPPED, "--init-parts", "text,dit", "--steps", "100000", "--lr", "5e-4", "--warmup", "100",
                *DIT_SHAPE, "--tokens-per-batch", "16384", "--batch-reuse", "2", *DIT_BUCKETS],
    },
    "micro": {
        "vae": ["--preset", "micro", "--steps", "2", "--frames", "1,5", "--crop", "16", "--tokens-per-batch", "64"],
        "dit": ["--preset", "micro", "--steps", "2", "--frames", "1,5", "--resolutions", "16px",
                *DIT_SHAPE, "--tokens-per-batch", "64"],
    },
    "micro-parallel": {  # the gpu profile's shape at micro size; needs --init with a micro model
        "vae": ["--init", SHIPPED, "--decoder-only", "--depth-to-time-level", "0", "--steps", "2", "--frames", "1,5",
                "--crop", "16", "--tokens-per-batch", "64"],
        "dit": ["--preset", "micro", "--init", SHIPPED, "--init-parts", "text", "--steps", "3", "--frames", "1,5",
                "--resolutions", "16px", *DIT_SHAPE, "--tokens-per-batch", "64", "--batch-reuse", "2"],
    },
}
# A stage list naming a VAE with --decoder-only keeps that VAE's encoder, so the DiT can train on its
# latents at the same time: the two stages run side by side and the final model takes the new decoder.
TIME_LIMITS = {"gpu": 8.0}  # minutes per stage unless --time-limit says otherwise


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="output folder: vae/, dit/ and the final model.safetensors")
    p.add_argument("--profile", choices=sorted(PROFILES), default="cpu")
    p.add_argument("--device", default=None)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--data-workers", type=int, default=None, help="for the DiT stage (default: 1 on CPU, 2 on CUDA)")
    p.add_argument("--resume", action="store_true", help="continue both stages from their saved state")
    p.add_argument("--vae-steps", type=int, default=None, help="override the profile's VAE steps")
    p.add_argument("--dit-steps", type=int, default=None, help="override the profile's DiT steps")
    p.add_argument("--init", default=None,
                   help="the checkpoint the profile's stages start from, for profiles that start from one "
                        "(gpu: the shipped model)")
    p.add_argument("--vae-workers", type=int, default=None, help="data workers of the VAE stage (default: 0)")
    p.add_argument("--time-limit", type=float, default=None,
                   help="minutes per stage (saving at the end; the LR decay follows the clock). "
                        f"Defaults: {TIME_LIMITS}, none for the others")


def stage_argv(stage: str, args: argparse.Namespace, out: Path, extra: list[str]) -> list[str]:
    """The command-line arguments of one stage under the profile, with this command's overrides."""
    argv = [*PROFILES[args.profile][stage], "--out", str(out), *extra]
    if args.init and "--init" in argv:
        argv[argv.index("--init") + 1] = args.init
    steps = args.vae_steps if stage == "vae" else args.dit_steps
    if steps is not None:
        argv += ["--steps", str(steps)]
    limit = args.time_limit if args.time_limit is not None else TIME_LIMITS.get(args.profile)
    for flag, value in (("--device", args.device), ("--threads", args.threads), ("--time-limit", limit)):
        if value is not None:
            argv += [flag, str(value)]
    if args.resume:
        argv.append("--resume")
    return argv


def stage_args(stage: str, argv: list[str]) -> argparse.Namespace:
    """`argv` parsed by that stage's own parser (its defaults apply)."""
    from . import dit, vae

    parser = argparse.ArgumentParser(prog=f"train {stage}")
    {"vae": vae, "dit": dit}[stage].add_arguments(parser)
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> Path:
    import torch

    from ..checkpoint import load_checkpoint, read_metadata, save_checkpoint
    from ..fsutil import atomic_write
    from . import dit, vae
    from .common import check_time_limit

    if args.profile not in PROFILES:
        raise ValueError(f"--profile={args.profile!r} is not allowed: use one of {sorted(PROFILES)}")
    for stage in ("vae", "dit"):
        steps = getattr(args, f"{stage}_steps")
        if steps is not None and steps < 1:
            raise ValueError(f"--{stage}-steps={steps} is not allowed: use a positive number of steps")
    check_time_limit(args.time_limit)
    if args.init and not Path(args.init).is_file():
        raise ValueError(f"--init={args.init!r} is not allowed: no such checkpoint file")
    if args.init and not any("--init" in PROFILES[args.profile][stage] for stage in ("vae", "dit")):
        starts = sorted(name for name, p in PROFILES.items() if "--init" in p["vae"] + p["dit"])
        raise ValueError(f"--init is not allowed with --profile {args.profile}, which starts from fresh weights; "
                         f"profiles that start from a checkpoint: {starts}")
    out = Path(args.out)
    vae_out, dit_out = out / "vae", out / "dit"
    vae_file = vae_out / "vae.safetensors"
    workers = args.data_workers
    if workers is None:
        workers = 2 if (args.device or ("cuda" if torch.cuda.is_available() else "cpu")).startswith("cuda") else 1
    vae_argv = stage_argv("vae", args, vae_out, ["--data-workers", str(args.vae_workers or 0)])
    train_vae = not (args.resume and vae_file.exists())
    side_by_side = "--decoder-only" in vae_argv
    if side_by_side:  # the encoder stays: the DiT trains on its latents while the decoder trains beside it
        encoder = vae_argv[vae_argv.index("--init") + 1]
        child = subprocess.Popen([sys.executable, "-m", "sora_core", "train", "vae", *vae_argv]) if train_vae else None
        try:
            model = dit.run(stage_args("dit", stage_argv("dit", args, dit_out,
                                                         ["--vae", encoder, "--data-workers", str(workers)])))
        except BaseException:
            if child is not None:  # do not leave the VAE stage training on alone
                child.terminate()
                child.wait()
            raise
        if child is not None and child.wait() != 0:
            raise RuntimeError(f"the VAE stage beside the DiT failed (exit code {child.returncode})")
        trained = load_checkpoint(model)
        decoder = load_checkpoint(vae_file, parts=("vae",))  # its decoder may be built differently
        trained.vae, trained.config = decoder.vae, replace(trained.config, vae=decoder.config.vae)
        extra = json.loads(read_metadata(model).get("extra", "{}"))
        final = out / "model.safetensors"
        save_checkpoint(trained, final, dtype=torch.float16, extra=extra)
    else:
        if train_vae:
            vae_file = vae.run(stage_args("vae", vae_argv))
        model = dit.run(stage_args("dit", stage_argv("dit", args, dit_out,
                                                     ["--vae", str(vae_file), "--data-workers", str(workers)])))
        final = out / "model.safetensors"
        atomic_write(final, lambda tmp: shutil.copyfile(model, tmp))
    print(f"default model written to {final}")
    return final

