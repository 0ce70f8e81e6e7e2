"""Memory plan of the Wan releases at their native sizes: what each phase of one video needs on the device.

    python benchmarks/wan_memory_plan.py            # the plan: meta-device traces, no weights, no GPU
    python benchmarks/wan_memory_plan.py --measure  # + the DiT trace checked against a real CPU forward, reduced size

A video runs in three phases (`Pipeline` with offload, the default on a GPU): the umt5 text encoder
encodes the prompts and is released; the DiT samples while the (small) VAE stays loaded; the DiT is
released and the VAE decodes, chunked in time and tiled in space. The peak is the largest phase plus
the CUDA context (CONTEXT below, an assumption). Weights are counted from the configs built on the
meta device; activations are traced by running the real modules on the meta device
(`wan.dit.forward_memory`, `wan.vae.decode_memory`): the fp32 residual stream, one block's temporaries,
attention as a fused kernel (flash / memory-efficient) allocates it. 'unfused scores' is what one
attention's N x N scores would take: why a fused kernel is required. CFG runs its two halves in one
batch (2x activations) or one after the other (`--sequential-cfg`).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys

import torch

from sora_core.budget import estimate
from sora_core.wan.dit import RECIPES, WanConfig, WanDiT, WanDiTConfig, forward_memory
from sora_core.wan.umt5 import UMT5Config, UMT5Encoder
from sora_core.wan.vae import WAN21_VAE, WAN22_VAE, LiveBytes, decode_memory

GIB = 2**30
CONTEXT = 0.5 * GIB  # CUDA context + allocator slack
BUDGET = 8 * GIB
RELEASES = {  # variant -> (width, height, frames, VAE)
    "wan2.1-t2v-1.3B": (832, 480, 81, WAN21_VAE),
    "wan2.2-ti2v-5B": (1280, 704, 121, WAN22_VAE),
    "wan-t2v-14B": (1280, 720, 81, WAN21_VAE),
}


def fp8_bytes(model: torch.nn.Module, quantised) -> int:
    """Weights as ComfyUI's scaled-fp8 files store them: the chosen 2-D weights in 1 byte, the rest bf16."""
    return sum(p.numel() * (1 if quantised(name, p) else 2) for name, p in model.named_parameters())


def umt5_plan(tokens: int = 512) -> dict[str, int]:
    config = UMT5Config()
    with torch.device("meta"):
        full = UMT5Encoder(config)
        small = UMT5Encoder(UMT5Config(layers=2)).to(torch.bfloat16)  # the blocks are alike and run one by one
        ids = torch.zeros(1, tokens, dtype=torch.long)
    with torch.no_grad(), LiveBytes() as live:
        small(ids)  # no mask: a meta tensor has no truth value to check it with
    block_linear = lambda name, p: p.ndim == 2 and name.startswith("encoder.block") and "relative" not in name  # noqa: E731
    return {"bf16": sum(p.numel() for p in full.parameters()) * 2, "fp8": fp8_bytes(full, block_linear),
            "activations": live.peak, "parameters": sum(p.numel() for p in full.parameters())}


def dit_fp8_bytes(config: WanDiTConfig) -> int:
    with torch.device("meta"):
        model = WanDiT(config)
    return fp8_bytes(model, lambda name, p: p.ndim == 2 and name.startswith("blocks."))


def g(n: float) -> str:
    return f"{n / GIB:7.2f}"


def plan() -> None:
    text = umt5_plan()
    print(f"umt5-xxl: {text['parameters'] / 1e9:.2f}B parameters; weights bf16 {g(text['bf16'])} GiB, scaled fp8 "
          f"{g(text['fp8'])} GiB (block linears fp8, embedding bf16); activations at 512 tokens {g(text['activations'])} GiB")
    print("\nper release at its native size, bf16 (GiB). act: activations with CFG batched (b=2) / sequential (b=1); "
          "unfused: one attention's scores; decode: VAE decode, chunk 1, whole frames / 256 px tiles")
    print(f"{'model':<16} {'size':>13} {'tokens':>7} {'weights':>7} {'fp8 w':>7} {'act b=2':>7} {'act b=1':>7} "
          f"{'unfused':>7} {'vae w':>7} {'decode':>7} {'tiled':>7}")
    rows = {}
    for variant, (w, h, f, vae) in RELEASES.items():
        config = WanDiTConfig.released(variant)
        s = vae.spatial_factor
        latent = (1 + (f - 1) // 4, h // s, w // s)
        r = rows[variant] = dict(one=forward_memory(config, *latent), two=forward_memory(config, *latent, batch=2),
                                 fp8=dit_fp8_bytes(config), full=decode_memory(vae, w, h, f, chunk=1),
                                 tiled=decode_memory(vae, w, h, f, chunk=1, tile=256 // s),
                                 state=6 * 4 * config.in_channels * latent[0] * latent[1] * latent[2])
        print(f"{variant:<16} {f'{w}x{h}x{f}':>13} {r['one']['tokens']:>7} {g(r['one']['weights'])} {g(r['fp8'])} "
              f"{g(r['two']['activations'])} {g(r['one']['activations'])} {g(r['one']['attention_scores'])} "
              f"{g(r['tiled']['weights'])} {g(r['full']['total'])} {g(r['tiled']['total'])}")

    print(f"\nphases of one video (GiB): text encoder / DiT sampling (+ the VAE's weights and the sampler's fp32 "
          f"latents) / tiled decode; peak = largest + {CONTEXT / GIB:.1f} GiB CUDA context")
    print(f"{'model':<16} {'setup':<38} {'text':>7} {'dit':>7} {'decode':>7} {'peak':>7}  fits {BUDGET / GIB:.0f} GiB")
    peaks = {}
    for variant, r in rows.items():
        vae_w = r["tiled"]["weights"]
        for umt5, dit_w, cfg in (("fp8", "bf16", "sequential"), ("bf16", "bf16", "batched"), ("fp8", "fp8", "sequential")):
            if dit_w == "fp8" and variant != "wan-t2v-14B":
                continue
            act = r["one" if cfg == "sequential" else "two"]["activations"]
            weights = r["fp8"] if dit_w == "fp8" else r["one"]["weights"]
            phases = (text[umt5] + text["activations"] + vae_w, weights + act + r["state"] + vae_w, r["tiled"]["total"])
            peak = peaks[variant, umt5, dit_w, cfg] = max(phases) + CONTEXT
            setup = f"umt5 {umt5}, DiT {dit_w}, CFG {cfg}"
            print(f"{variant:<16} {setup:<38} {g(phases[0])} {g(phases[1])} {g(phases[2])} {g(peak)}  "
                  f"{'yes' if peak <= BUDGET else 'no'}")
    print("\nthe up-front budget's closed-form estimate (sora_core.budget, what a request is refused by) against "
          "these traces (GiB; sampling: traced activations + the sampler's latents)")
    print(f"{'model':<16} {'sample b=2':>10} {'traced':>7} {'sample b=1':>10} {'traced':>7} {'decode':>7} {'traced':>7} "
          f"{'tiled':>7} {'traced':>7}")
    for variant, (w, h, f, vae) in RELEASES.items():
        r, model = rows[variant], WanConfig(WanDiTConfig.released(variant), vae, variant)
        est = {(cfg, tile): estimate(model, width=w, height=h, frames=f, chunk=1, tile=tile, passes=1 + cfg,
                                     dtype=torch.bfloat16, device="cuda").stages
               for cfg in (True, False) for tile in (None, 256 // vae.spatial_factor)}
        tile = 256 // vae.spatial_factor
        print(f"{variant:<16} {g(est[True, None]['sample']):>10} {g(r['two']['activations'] + r['state'])} "
              f"{g(est[False, None]['sample']):>10} {g(r['one']['activations'] + r['state'])} "
              f"{g(est[True, None]['decode'])} {g(r['full']['total'] - r['full']['weights'])} "
              f"{g(est[True, tile]['decode'])} {g(r['tiled']['total'] - r['tiled']['weights'])}")
    peak = peaks["wan2.1-t2v-1.3B", "fp8", "bf16", "sequential"]
    print(f"\n1.3B at 832x480x81 on an 8 GiB card (umt5 fp8 offloaded before the DiT, bf16 DiT, sequential CFG, "
          f"tiled + chunked decode): peak {peak / GIB:.2f} GiB -> {'fits' if peak <= BUDGET else 'DOES NOT FIT'}")
    print("recipes: " + "; ".join(f"{v} {r.steps} steps, cfg {r.cfg}, shift {r.shift}" for v, r in RECIPES.items()))


# -- the trace against a real forward (CPU, reduced size) -------------------------------------------

SMALL = WanDiTConfig(dim=256, layers=2, heads=2, ffn_dim=1024, text_dim=512)
SMALL_LATENT = (5, 32, 32)  # 5 x 16 x 16 = 1280 tokens


def measure_one() -> dict:
    torch.manual_seed(0)
    with torch.device("meta"):
        model = WanDiT(SMALL)
    model = model.to_empty(device="cpu")
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.02)
    x = torch.randn(1, SMALL.in_channels, *SMALL_LATENT)
    t, context = torch.rand(1), torch.randn(1, 512, SMALL.text_dim)
    with torch.no_grad():
        model(x[:, :, :1, :4, :4], t, context)  # warm-up: oneDNN / allocator pools are not the forward's memory
        with open("/proc/self/statm") as f:
            base = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        model(x, t, context)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
    return {"measured": peak, "estimate": forward_memory(SMALL, *SMALL_LATENT, dtype=torch.float32)["activations"]}


def measure() -> None:
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")  # freed tensors leave RSS at once
    out = subprocess.run([sys.executable, __file__, "--one"], capture_output=True, text=True, check=True, env=env)
    r = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"\nDiT forward on the CPU, fp32, dim {SMALL.dim}, {SMALL.layers} layers, 1280 tokens: peak RSS growth "
          f"{r['measured'] / 2**20:.1f} MiB, traced estimate {r['estimate'] / 2**20:.1f} MiB "
          f"(ratio {r['estimate'] / max(r['measured'], 1):.2f}); the VAE decode: benchmarks/bench_wan_vae.py")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--measure", action="store_true", help="check the DiT trace against a real CPU forward")
    p.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        print(json.dumps(measure_one()))
        return
    plan()
    if args.measure:
        measure()


if __name__ == "__main__":
    main()
