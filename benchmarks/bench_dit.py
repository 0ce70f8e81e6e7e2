"""DiT forward throughput at several token counts: tokens/s and achieved TFLOP/s.

FLOPs are counted by `sora_core.dit.forward_flops`: 2 per multiply-add of every matmul
(~2 x parameters per token) plus attention (4 x tokens x dim per token per block, self and
cross). Training costs ~3x a forward pass (the usual 6 x parameters per token).

    python benchmarks/bench_dit.py                  # CPU: the tiny preset
    python benchmarks/bench_dit.py --preset xl      # CUDA: bf16, the ~1.2B model
"""

from __future__ import annotations

import argparse
import time

import torch

from sora_core.config import preset
from sora_core.dit import DiT, forward_flops, parameter_count


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def bench(dit: DiT, grid: tuple[int, int, int], text_len: int, device, dtype, repeats: int) -> dict:
    c = dit.config
    t, h, w = grid
    x = torch.randn(1, c.latent_channels, t * c.patch[0], h * c.patch[1], w * c.patch[2], device=device, dtype=dtype)
    times = torch.rand(1, x.shape[2], device=device, dtype=dtype)
    text = torch.randn(1, text_len, c.text_dim, device=device, dtype=dtype)
    mask = torch.ones(1, text_len, dtype=torch.bool, device=device)
    with torch.no_grad():
        dit(x, times, text, mask)  # warm-up (kernel selection, allocator)
        sync(device)
        start = time.perf_counter()
        for _ in range(repeats):
            dit(x, times, text, mask)
        sync(device)
    seconds = (time.perf_counter() - start) / repeats
    tokens = t * h * w
    flops = forward_flops(c, tokens, text_len)
    return {"tokens": tokens, "ms": seconds * 1e3, "tokens_per_s": tokens / seconds, "tflops": flops / seconds / 1e12}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default=None, help="default: tiny on CPU, xl on CUDA")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    name = args.preset or ("xl" if device.type == "cuda" else "tiny")
    dit = DiT(preset(name).dit).to(device, dtype).eval()
    print(f"preset={name} params={parameter_count(dit) / 1e6:.1f}M device={device} dtype={dtype} threads={torch.get_num_threads()}")
    grids = [(1, 8, 8), (5, 8, 8), (9, 8, 8), (9, 16, 16), (17, 16, 16)]
    if device.type == "cuda":
        grids += [(9, 32, 32), (17, 32, 32), (33, 32, 32)]
    print(f"{'tokens':>7} {'ms/forward':>11} {'tokens/s':>10} {'TFLOP/s':>8}")
    for grid in grids:
        r = bench(dit, grid, 64, device, dtype, args.repeats)
        print(f"{r['tokens']:>7} {r['ms']:>11.1f} {r['tokens_per_s']:>10.0f} {r['tflops']:>8.3f}")


if __name__ == "__main__":
    main()
