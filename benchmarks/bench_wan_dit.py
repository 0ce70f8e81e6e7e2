"""Our Wan DiT vs diffusers' WanTransformer3DModel: same config, same weights, one process, interleaved.

Prints each one's forward time and tokens/s, the ratio (ours / diffusers, > 1 = ours faster), peak
memory on CUDA, and how far the two outputs are apart.

    python benchmarks/bench_wan_dit.py          # CPU fp32, a small config (dim 512, 4 layers, 320 tokens)
    python benchmarks/bench_wan_dit.py --real   # CUDA bf16, the Wan 2.1 1.3B config with random weights at
                                                # 832x480x81: 21 x 30 x 52 = 32,760 tokens

diffusers runs as its loader would set it up: bf16 except its `_keep_in_fp32_modules` (time embedder,
modulation tables, norms). diffusers is a test/benchmark-only dependency (requirements-dev.txt).
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import torch

from sora_core.wan.dit import WanDiT, WanDiTConfig


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def random_weights(model: WanDiT, device, dtype, seed: int = 0) -> WanDiT:
    """Materialise a meta-built model with random weights at scales where every path carries signal."""
    model = model.to_empty(device=device)
    g = torch.Generator(device).manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("modulation"):
                p.normal_(0, model.config.dim ** -0.5, generator=g)
            elif "norm" in name:
                p.normal_(1, 0.1, generator=g)
            elif p.ndim == 1:
                p.normal_(0, 0.05, generator=g)
            else:
                p.normal_(0, math.prod(p.shape[1:]) ** -0.5, generator=g)
    return model.to(dtype)


def diffusers_twin(ours: WanDiT, device, dtype):
    from diffusers import WanTransformer3DModel
    from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers

    c = ours.config
    with torch.device(device):
        ref = WanTransformer3DModel(
            patch_size=c.patch, num_attention_heads=c.heads, attention_head_dim=c.dim // c.heads,
            in_channels=c.in_channels, out_channels=c.out_channels, text_dim=c.text_dim, freq_dim=c.freq_dim,
            ffn_dim=c.ffn_dim, num_layers=c.layers, cross_attn_norm=True, qk_norm="rms_norm_across_heads", eps=c.eps)
    ref.load_state_dict(convert_wan_transformer_to_diffusers(dict(ours.state_dict())), strict=True)
    keep = set(ref._keep_in_fp32_modules)
    for name, p in ref.named_parameters():
        p.data = p.data.to(torch.float32 if keep & set(name.split(".")) else dtype)
    return ref.eval()


def timed(fn, device) -> float:
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--real", action="store_true", help="CUDA bf16 at the 1.3B config and 32,760 tokens")
    p.add_argument("--repeats", type=int, default=None, help="timed forwards of each (default 5)")
    args = p.parse_args()
    torch.manual_seed(0)
    if args.real:
        if not torch.cuda.is_available():
            raise SystemExit("--real needs a CUDA GPU")
        device, dtype, repeats = torch.device("cuda"), torch.bfloat16, args.repeats or 5
        config, latent = WanDiTConfig.released("wan2.1-t2v-1.3B"), (16, 21, 60, 104)  # 832x480x81 pixels
    else:
        device, dtype, repeats = torch.device("cpu"), torch.float32, args.repeats or 5
        config, latent = WanDiTConfig(dim=512, layers=4, heads=4, ffn_dim=1536, text_dim=512), (16, 5, 16, 16)
    with torch.device("meta"):
        ours = WanDiT(config)
    ours = random_weights(ours, device, dtype).eval()
    ref = diffusers_twin(ours, device, dtype)
    tokens = latent[1] * (latent[2] // 2) * (latent[3] // 2)
    params = sum(p.numel() for p in ours.parameters())
    print(f"config dim={config.dim} layers={config.layers} heads={config.heads} params={params / 1e6:.1f}M "
          f"tokens={tokens} device={device} dtype={dtype} threads={torch.get_num_threads()}")

    g = torch.Generator("cpu").manual_seed(1)
    x = torch.randn(1, *latent, generator=g).to(device)
    context = torch.randn(1, 512, config.text_dim, generator=g).to(device, dtype)  # already padded to 512
    t = torch.tensor([0.7], device=device)
    runs = {
        "ours": lambda: ours(x, t, context),
        "diffusers": lambda: ref(x.to(dtype), t * 1000, context, return_dict=False)[0],
    }
    times, peak, outputs = {k: [] for k in runs}, {}, {}
    with torch.no_grad():
        for name, fn in runs.items():  # warm-up: kernel selection, allocator
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            outputs[name] = fn().float()
            sync(device)
            if device.type == "cuda":
                peak[name] = torch.cuda.max_memory_allocated() / 2 ** 30
        for _ in range(repeats):
            for name, fn in runs.items():
                times[name].append(timed(fn, device))
    err = ((outputs["ours"] - outputs["diffusers"]).norm() / outputs["diffusers"].norm()).item()
    print(f"{'':>10} {'ms/forward':>11} {'tokens/s':>10}" + (f" {'peak GiB':>9}" if peak else ""))
    for name in runs:
        s = statistics.median(times[name])
        print(f"{name:>10} {s * 1e3:>11.1f} {tokens / s:>10.0f}" + (f" {peak[name]:>9.2f}" if peak else ""))
    ratio = statistics.median(times["diffusers"]) / statistics.median(times["ours"])
    print(f"ratio ours/diffusers (tokens/s): {ratio:.3f}   output relative difference: {err:.2e}")


if __name__ == "__main__":
    main()
