"""Subcommands of `python -m sora_core`."""

from __future__ import annotations

import argparse


def _train(args: argparse.Namespace) -> int:
    if args.what == "vae":
        from .train import vae as trainer
    else:
        from .train import dit as trainer
    trainer.run(args)
    return 0


def add_commands(sub) -> None:
    train = sub.add_parser("train", help="train the VAE or the DiT (torchrun for several GPUs/processes)")
    which = train.add_subparsers(dest="what", required=True)
    from .train import dit, vae

    vae.add_arguments(which.add_parser("vae", help="train the 3D VAE"))
    dit.add_arguments(which.add_parser("dit", help="train the text encoder + DiT on a trained VAE"))
    train.set_defaults(func=_train)
