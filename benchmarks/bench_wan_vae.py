"""Wan VAE decode (chunked, untiled and tiled): time and peak memory vs frame count, measured next to
`sora_core.wan.vae.decode_memory`'s estimate; then the estimate at the real sizes, for the memory
plan; then how much a chunk's latent depends on the frames before it.

Measured at a small size with the real block layout at reduced width (random weights), each run
in a fresh subprocess. Peak memory: torch.cuda.max_memory_allocated on CUDA; on CPU the growth of
the process's peak RSS over its RSS before the decode, with glibc told to mmap every block over 64 KiB so freed
tensors leave RSS at once (then RSS follows live tensors, plus the allocator's and oneDNN's own).

    python benchmarks/bench_wan_vae.py [--size 128] [--frames 5 9 17]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import torch

from sora_core.wan.vae import WAN21_VAE, WAN22_VAE, WanVAE, WanVAEConfig, decode_memory

SMALL = {"2.1": WanVAEConfig("2.1", dim=16, dec_dim=16, z_dim=16), "2.2": WanVAEConfig("2.2", dim=16, dec_dim=24, z_dim=48)}
MIB = 2**20


def random_vae(config: WanVAEConfig, device, dtype, seed: int = 0) -> WanVAE:
    torch.manual_seed(seed)
    vae = WanVAE(config).eval()
    with torch.no_grad():
        for p in vae.parameters():
            p.normal_(0, 0.05 if p.ndim > 1 else 0.02)
            if p.ndim == 4 and p.shape[1:] == (1, 1, 1) or p.ndim == 3 and p.shape[1:] == (1, 1):
                p.add_(1.0)  # norm gains near 1
    return vae.to(device, dtype)


def measure(version: str, frames: int, size: int, tile: int | None, batch: int) -> dict:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    config = SMALL[version]
    vae = random_vae(config, device, dtype)
    s = config.spatial_factor
    z = torch.randn(batch, config.z_dim, 1 + (frames - 1) // 4, size // s, size // s, device=device)
    vae.decode(z[:, :, :2, :2, :2])  # warm-up: lazily loaded kernels and pools are not the decode's memory
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:  # RSS now (the peak so far may be higher than what is live)
        with open("/proc/self/statm") as f:
            base = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    start = time.perf_counter()
    vae.decode(z, tile=tile)
    if device.type == "cuda":
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - base
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
    est = decode_memory(config, size, size, frames, tile=tile, dtype=dtype, batch=batch)
    return {"seconds": time.perf_counter() - start, "measured": peak, "estimate": est["working"] + est["output"]}


def run_one(version: str, frames: int, size: int, tile: int | None, batch: int) -> dict:
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
    cmd = [sys.executable, __file__, "--one", version, str(frames), str(size), str(tile or 0), str(batch)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def measured_table(size: int, frame_counts: list[int], batch: int) -> None:
    device = "cuda (bf16)" if torch.cuda.is_available() else "cpu (fp32)"
    print(f"decode of {batch} clips at {size}x{size} on {device}; reduced-width layouts:")
    for c in SMALL.values():
        print(f"  {c.describe()}")
    print(f"{'vae':>4} {'tile':>5} {'frames':>6} {'decode s':>9} {'s/frame':>8} {'measured MiB':>13} {'estimate MiB':>13} {'est/meas':>9}")
    for version, config in SMALL.items():
        grid = size // config.spatial_factor
        for tile in (None, grid * 5 // 8):  # 2x2 tiles overlapping by tile // 4
            for frames in frame_counts:
                r = run_one(version, frames, size, tile, batch)
                print(f"{version:>4} {tile or '-':>5} {frames:>6} {r['seconds']:>9.2f} {r['seconds'] / frames:>8.3f} "
                      f"{r['measured'] / MIB:>13.1f} {r['estimate'] / MIB:>13.1f} {r['estimate'] / max(r['measured'], 1):>9.2f}")


def plan_table() -> None:
    print("\nestimated decode peak at the native sizes, bf16 weights (MiB; working = one tile's stream)")
    print(f"{'vae':>4} {'size':>14} {'tile (px)':>10} {'weights':>8} {'working':>8} {'output':>8} {'total':>8}")
    for config, (w, h, f) in ((WAN21_VAE, (832, 480, 81)), (WAN22_VAE, (1280, 704, 121))):
        for tile_px in (None, 512, 256):
            tile = tile_px // config.spatial_factor if tile_px else None
            m = decode_memory(config, w, h, f, tile=tile)
            print(f"{config.version:>4} {f'{w}x{h}x{f}':>14} {tile_px or '-':>10} {m['weights'] / MIB:>8.0f} "
                  f"{m['working'] / MIB:>8.0f} {m['output'] / MIB:>8.0f} {m['total'] / MIB:>8.0f}")


@torch.no_grad()
def history_table() -> None:
    print("\nhow much the last 8 frames' latents depend on what precedes them (33-frame clip, random weights;")
    print("relative difference from their latents inside the whole clip, by how many frames of history they get)")
    lengths = (1, 5, 9, 17, 25)
    print(f"{'vae':>4} " + " ".join(f"{f'{n} frames':>10}" for n in lengths))
    for version, config in SMALL.items():
        vae = random_vae(config, "cpu", torch.float32)
        s = config.spatial_factor
        x = torch.rand(1, 3, 33, 2 * s, 2 * s, generator=torch.Generator().manual_seed(0)) * 2 - 1
        inside = vae.encode(x)[:, :, -2:]
        diffs = []
        for n in lengths:
            z = vae.encode(x[:, :, -8:], history=x[:, :, -8 - n : -8])
            diffs.append(((z - inside).norm() / inside.norm()).item())
        exact = torch.equal(vae.encode(x[:, :, -8:], history=x[:, :, :-8]), inside)
        print(f"{version:>4} " + " ".join(f"{d:>10.4f}" for d in diffs) + f"   full history: {'exact' if exact else 'NOT exact'}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--frames", type=int, nargs="+", default=[5, 9, 17])
    # batch 2: PyTorch's CPU conv3d takes oneDNN (as at real sizes) only for batch > 1 or big inputs;
    # small batch-1 convs fall back to im2col, whose column buffer is ~27x the input
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--one", nargs=5, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        version, frames, size, tile, batch = args.one
        print(json.dumps(measure(version, int(frames), int(size), int(tile) or None, int(batch))))
        return
    measured_table(args.size, args.frames, args.batch)
    plan_table()
    history_table()


if __name__ == "__main__":
    main()
