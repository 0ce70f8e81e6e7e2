"""Large images: time and peak memory of one-step text-to-image at 512², 1024² and 2048².

Each size runs in a fresh process (peak RSS is per process) with the shipped model: a DiT pass
over all tokens (flash attention: no N x N scores; the column "N x N scores" is what one score
matrix per head would take) and a VAE decode tiled at `pipeline.AUTO_TILE` latent cells.
`--cfg 1` (the default here) is one model pass; guidance (cfg > 1) runs the positive and the
negative prompt as a batch of two, about doubling the DiT's time and activations.

    python benchmarks/bench_sizes.py                      # 512 1024 2048 (2048² takes long on a CPU)
    python benchmarks/bench_sizes.py --sizes 512 1024 --cfg 5
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def one(size: int, steps: int, cfg: float, model: str | None) -> dict:
    import torch

    from sora_core.pipeline import Pipeline

    pipe = Pipeline.load(model)
    loaded = rss_mb()
    start = time.perf_counter()
    image = pipe.generate("A large yellow star on a light gray background.", width=size, height=size, frames=1,
                          steps=steps, cfg=cfg)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    c = pipe.config
    tokens = (size // c.pixel_multiple) ** 2
    return {"size": size, "tokens": tokens, "seconds": round(seconds, 1), "rss_after_load_mb": round(loaded),
            "peak_rss_mb": round(peak), "peak_over_load_mb": round(peak - loaded),
            "scores_per_head_mb": round(tokens * tokens * 4 / 2**20), "threads": torch.get_num_threads(),
            "finite": bool(torch.isfinite(image).all())}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[512, 1024, 2048])
    p.add_argument("--steps", type=int, default=1)
    p.add_argument("--cfg", type=float, default=1.0)
    p.add_argument("--model", default=None)
    p.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        print(json.dumps(one(args.one, args.steps, args.cfg, args.model)))
        return
    print(f"one-step text-to-image, cfg {args.cfg:g}, shipped model unless --model")
    print(f"{'size':>6} {'tokens':>7} {'seconds':>8} {'peak RSS':>9} {'over load':>10} {'N x N scores':>13}")
    rows = []
    for size in args.sizes:
        cmd = [sys.executable, __file__, "--one", str(size), "--steps", str(args.steps), "--cfg", str(args.cfg)]
        if args.model:
            cmd += ["--model", args.model]
        done = subprocess.run(cmd, capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
        if done.returncode:
            print(f"{size}: failed\n{done.stderr[-2000:]}")
            continue
        r = json.loads(done.stdout.strip().splitlines()[-1])
        rows.append(r)
        print(f"{size:>5}² {r['tokens']:>7} {r['seconds']:>8.1f} {r['peak_rss_mb']:>6} MB {r['peak_over_load_mb']:>7} MB "
              f"{r['scores_per_head_mb']:>9} MB/head", flush=True)
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
