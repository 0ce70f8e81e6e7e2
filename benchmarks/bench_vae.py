"""VAE encode/decode time and peak memory for 17, 33 and 65 frames: chunked processing keeps
memory growing linearly with the frame count (only the output grows, not the activations).

Peak memory: torch.cuda.max_memory_allocated on CUDA; on CPU the process's peak RSS growth
(ru_maxrss), which only rises, so each size runs in a fresh subprocess.

    python benchmarks/bench_vae.py [--preset tiny] [--size 128]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch

from sora_core.config import preset
from sora_core.vae import VideoVAE


def measure(name: str, frames: int, size: int) -> dict:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    vae = VideoVAE(preset(name).vae).to(device, dtype).eval()
    x = torch.rand(1, 3, frames, size, size, device=device, dtype=dtype) * 2 - 1
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    with torch.no_grad():
        start = time.perf_counter()
        z = vae.encode(x, chunk_batch=4)
        if device.type == "cuda":
            torch.cuda.synchronize()
        mid = time.perf_counter()
        vae.decode(z, chunk=2)
        if device.type == "cuda":
            torch.cuda.synchronize()
        end = time.perf_counter()
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024
    return {"frames": frames, "encode_s": mid - start, "decode_s": end - mid, "peak_mib": peak}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="tiny")
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        print(json.dumps(measure(args.preset, args.one, args.size)))
        return
    print(f"preset={args.preset} size={args.size}x{args.size} device={'cuda' if torch.cuda.is_available() else 'cpu'}")
    print(f"{'frames':>6} {'encode s':>9} {'decode s':>9} {'peak MiB':>9} {'MiB/frame':>10}")
    for frames in (17, 33, 65):
        out = subprocess.run([sys.executable, __file__, "--preset", args.preset, "--size", str(args.size), "--one", str(frames)],
                             capture_output=True, text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{frames:>6} {r['encode_s']:>9.2f} {r['decode_s']:>9.2f} {r['peak_mib']:>9.1f} {r['peak_mib'] / frames:>10.2f}")


if __name__ == "__main__":
    main()
