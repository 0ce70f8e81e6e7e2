"""`python -m sora_core train default`: the shipped default model's whole recipe in one command.

The VAE is trained first; the text encoder + DiT then train on its frozen latents. Each stage is
the ordinary `train vae` / `train dit` run with the arguments below, so the recipe that made the
shipped weights lives in one place and a GPU reproduces it with a single command:

    python -m sora_core train default --profile gpu --out runs/default     # ~10 min on one H100/H200
    python -m sora_core train default --profile cpu --out runs/default     # ~2 h on 2 CPU cores

Both stages resume (`--resume`), so a long CPU run can be split over several sessions.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

# Arguments of each stage, per profile. `cpu` is what trained the shipped weights (see the README's
# model card); `gpu` is the same recipe at the batch and step count a GPU affords in ~10 minutes;
# `micro` exercises every code path in seconds (tests).
DIT_BUCKETS = ["--resolutions", "32px,64px,128px", "--frames", "1,9,17,33",
               "--bucket-weights", "1:2,9:1,17:3,33:1,32px:0.4,128px:0.3"]
PROFILES: dict[str, dict[str, list[str]]] = {
    "cpu": {
        "vae": ["--steps", "8000", "--frames", "1,9,17,33", "--real-fraction", "0.3", "--crop", "48", "--lr", "1e-3"],
        "dit": ["--steps", "4400", "--lr", "6e-4", "--warmup", "300", "--dit", '{"abs_pos": true}',
                "--tokens-per-batch", "2048", *DIT_BUCKETS],
    },
    "gpu": {
        "vae": ["--steps", "6000", "--frames", "1,9,17,33", "--real-fraction", "0.3", "--crop", "64", "--lr", "1e-3",
                "--tokens-per-batch", "16384"],
        "dit": ["--steps", "12000", "--lr", "6e-4", "--warmup", "300", "--dit", '{"abs_pos": true}',
                "--tokens-per-batch", "16384", "--compile", *DIT_BUCKETS],
    },
    "micro": {
        "vae": ["--preset", "micro", "--steps", "2", "--frames", "1,5", "--crop", "16", "--tokens-per-batch", "64"],
        "dit": ["--preset", "micro", "--steps", "2", "--frames", "1,5", "--resolutions", "16px",
                "--dit", '{"abs_pos": true}', "--tokens-per-batch", "64"],
    },
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="output folder: vae/, dit/ and the final model.safetensors")
    p.add_argument("--profile", choices=sorted(PROFILES), default="cpu")
    p.add_argument("--device", default=None)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--data-workers", type=int, default=None, help="for the DiT stage (default: 1 on CPU, 2 on CUDA)")
    p.add_argument("--resume", action="store_true", help="continue both stages from their saved state")
    p.add_argument("--vae-steps", type=int, default=None, help="override the profile's VAE steps")
    p.add_argument("--dit-steps", type=int, default=None, help="override the profile's DiT steps")


def stage_args(stage: str, args: argparse.Namespace, out: Path, extra: list[str]) -> argparse.Namespace:
    """The profile's arguments for one stage, parsed by that stage's own parser (its defaults apply)."""
    from . import dit, vae

    module = {"vae": vae, "dit": dit}[stage]
    parser = argparse.ArgumentParser(prog=f"train {stage}")
    module.add_arguments(parser)
    argv = [*PROFILES[args.profile][stage], "--out", str(out), *extra]
    steps = args.vae_steps if stage == "vae" else args.dit_steps
    if steps is not None:
        argv += ["--steps", str(steps)]
    for flag, value in (("--device", args.device), ("--threads", args.threads)):
        if value is not None:
            argv += [flag, str(value)]
    if args.resume:
        argv.append("--resume")
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> Path:
    from ..fsutil import atomic_write
    from . import dit, vae

    if args.profile not in PROFILES:
        raise ValueError(f"--profile={args.profile!r} is not allowed: use one of {sorted(PROFILES)}")
    for stage in ("vae", "dit"):
        steps = getattr(args, f"{stage}_steps")
        if steps is not None and steps < 1:
            raise ValueError(f"--{stage}-steps={steps} is not allowed: use a positive number of steps")
    out = Path(args.out)
    vae_out, dit_out = out / "vae", out / "dit"
    vae_file = vae_out / "vae.safetensors"
    if not (args.resume and vae_file.exists()):
        vae_file = vae.run(stage_args("vae", args, vae_out, []))
    workers = args.data_workers
    if workers is None:
        import torch

        workers = 2 if (args.device or ("cuda" if torch.cuda.is_available() else "cpu")).startswith("cuda") else 1
    model = dit.run(stage_args("dit", args, dit_out, ["--vae", str(vae_file), "--data-workers", str(workers)]))
    final = out / "model.safetensors"
    atomic_write(final, lambda tmp: shutil.copyfile(model, tmp))
    print(f"default model written to {final}")
    return final
