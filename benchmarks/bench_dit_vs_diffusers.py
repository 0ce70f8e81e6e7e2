"""The default model's DiT vs diffusers' WanTransformer3DModel at the same width, depth, heads and
tokens: forward and training step (forward + backward + AdamW), in one process, interleaved.

Both get the same latents, per-sample timesteps and caption embeddings. diffusers runs as it
ships (eager); ours runs as `train dit` runs it. Each precision is measured for both models:
fp32, and bf16 autocast (fp32 master weights; the CPU's AVX512-BF16 / AMX matmuls when present).

    python benchmarks/bench_dit_vs_diffusers.py                 # the tiny preset, 17 frames at 64x64
    python benchmarks/bench_dit_vs_diffusers.py --frames 33 --size 88x48 --repeats 7

Prints ms per call and the ratio diffusers / ours (> 1: ours faster). diffusers is a
benchmark/test-only dependency (requirements-dev.txt).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from sora_core.config import preset
from sora_core.dit import DiT, parameter_count


def diffusers_twin(c):
    from diffusers import WanTransformer3DModel

    return WanTransformer3DModel(
        patch_size=c.patch, num_attention_heads=c.heads, attention_head_dim=c.dim // c.heads,
        in_channels=c.latent_channels, out_channels=c.latent_channels, text_dim=c.text_dim, freq_dim=256,
        ffn_dim=int(c.dim * c.mlp_ratio), num_layers=c.depth, cross_attn_norm=True,
        qk_norm="rms_norm_across_heads", eps=1e-6)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="tiny")
    p.add_argument("--frames", type=int, default=17)
    p.add_argument("--size", default="64x64", help="WxH in pixels")
    p.add_argument("--batch", type=int, default=6)
    p.add_argument("--text-tokens", type=int, default=80)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--compile", action="store_true", help="ours through torch.compile, as `train dit --compile` runs it")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    config = preset(args.preset)
    c = config.dit
    w, h = (int(v) for v in args.size.lower().split("x"))
    s, tf = config.vae.spatial_factor, config.vae.temporal_factor
    lt, lh, lw = 1 + (args.frames - 1) // tf, h // s, w // s
    tokens = lt * (lh // c.patch[1]) * (lw // c.patch[2])
    torch.manual_seed(0)
    ours, theirs = DiT(c), diffusers_twin(c)
    print(f"preset={args.preset} dim={c.dim} depth={c.depth} heads={c.heads} batch={args.batch} "
          f"tokens/sample={tokens} threads={torch.get_num_threads()}; params ours {parameter_count(ours) / 1e6:.2f}M, "
          f"diffusers {parameter_count(theirs) / 1e6:.2f}M")

    b = args.batch
    x = torch.randn(b, c.latent_channels, lt, lh, lw)
    t = torch.rand(b)
    text = torch.randn(b, args.text_tokens, c.text_dim)
    mask = torch.ones(b, args.text_tokens, dtype=torch.bool)

    ours_fn = torch.compile(ours, dynamic=False) if args.compile else ours

    def run_ours(train: bool):
        return ours_fn(x, t[:, None].expand(b, lt), text, mask)

    def run_theirs(train: bool):
        return theirs(hidden_states=x, timestep=t * 1000, encoder_hidden_states=text, return_dict=False)[0]

    opts = {id(ours): torch.optim.AdamW(ours.parameters(), 1e-4), id(theirs): torch.optim.AdamW(theirs.parameters(), 1e-4)}

    def timed(model, fn, train: bool, bf16: bool) -> float:
        model.train(train)
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16), torch.set_grad_enabled(train):
            out = fn(train)
        if train:
            out.float().pow(2).mean().backward()
            opts[id(model)].step()
            opts[id(model)].zero_grad(set_to_none=True)
        return time.perf_counter() - start

    print(f"{'precision':>9} {'pass':>8} {'ours ms':>9} {'diffusers ms':>13} {'ratio':>6}")
    for bf16 in (False, True):
        for train in (False, True):
            for _ in range(2):  # warm-up: kernel selection, allocator
                timed(ours, run_ours, train, bf16)
                timed(theirs, run_theirs, train, bf16)
            mine, ref = [], []
            for _ in range(args.repeats):
                mine.append(timed(ours, run_ours, train, bf16))
                ref.append(timed(theirs, run_theirs, train, bf16))
            m, r = statistics.median(mine), statistics.median(ref)
            print(f"{'bf16' if bf16 else 'fp32':>9} {'train' if train else 'forward':>8} {m * 1e3:>9.1f} "
                  f"{r * 1e3:>13.1f} {r / m:>6.2f}")


if __name__ == "__main__":
    main()
