"""Can a DiT learn motion at all? Overfit a handful of moving clips, then generate their own captions.

The probe's held-out clips (one object sliding left / right / up / down on a plain backdrop, 64x64x17)
are encoded once with the model's VAE; the text encoder + DiT are trained on nothing else (text-to-video
only, captions dropped 10% of the time for guidance), starting from the model's weights or, with
`--scratch`, from fresh ones. Every `--eval-every` steps eval's probe generates the same captions (20
steps, cfg 5) and scores them: colour / shape / direction accuracy, `moving` and `travel`, the mean
distance the object moves the asked way in frame widths (the clips themselves: 0.2-0.5). A network
that can learn motion reproduces its own training clips' motion within a few hundred steps. Prints
one JSON line per evaluation (docs/training.md, section 6, has the figures).

    python benchmarks/overfit_motion.py --scratch --lr 1e-3          # fresh weights
    python benchmarks/overfit_motion.py --lr 3e-4 --steps 600        # from the shipped model
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from sora_core.checkpoint import SoraModel, load_checkpoint
from sora_core.eval.run import PROBE_SCENE, heldout, probe
from sora_core.flow import resolution_shift, sample_training_t
from sora_core.pipeline import Pipeline, default_model_path
from sora_core.text import tokenize
from sora_core.train.dit import Denoiser


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="checkpoint (default: the shipped model); its VAE encodes the clips")
    p.add_argument("--scratch", action="store_true", help="fresh text encoder + DiT instead of the model's")
    p.add_argument("--clips", type=int, default=8)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--frames", type=int, default=17)
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--eval-every", type=int, default=200)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    model = load_checkpoint(args.model or default_model_path()).float()
    if args.scratch:
        fresh = SoraModel(model.config, parts=("text", "dit"))
        model.text.load_state_dict(fresh.text.state_dict())
        model.dit.load_state_dict(fresh.dit.state_dict())
    model.vae.requires_grad_(False)
    items = heldout(args.clips, args.size, args.size, args.frames, 7, **PROBE_SCENE)  # exactly `probe`'s clips
    with torch.no_grad():
        z = torch.cat([model.vae.encode(item["video"][None]) for item in items])
    captions = [item["caption"] for item in items]
    denoiser = Denoiser(model)
    opt = torch.optim.AdamW(denoiser.parameters(), lr=args.lr, betas=(0.9, 0.99), weight_decay=0.0)
    gen, rng = torch.Generator().manual_seed(args.seed), np.random.default_rng(args.seed)
    patch = model.config.dit.patch
    shift = resolution_shift(z.shape[2] * (z.shape[3] // patch[1]) * (z.shape[4] // patch[2]))
    start = time.time()
    for step in range(1, args.steps + 1):
        ids, mask = tokenize(["" if rng.random() < 0.1 else c for c in captions],
                             model.config.text.vocab_size, model.config.text.max_tokens)
        t = sample_training_t(len(z), shift=shift, generator=gen)
        noise = torch.randn(z.shape, generator=gen)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = denoiser(z, t, torch.ones(z.shape[0], z.shape[2]), noise, ids, mask)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(denoiser.parameters(), 1.0)
        opt.step()
        if step % args.eval_every == 0 or step == args.steps:
            model.eval()
            scores = probe(Pipeline.from_model(model), n=args.clips, width=args.size, height=args.size,
                           frames=args.frames)
            model.train()
            print(json.dumps({"step": step, "loss": round(loss.item(), 4), "seconds": round(time.time() - start),
                              **scores}), flush=True)


if __name__ == "__main__":
    main()
