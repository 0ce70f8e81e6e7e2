"""VRAM of the shipped Wan workflows, per model and size, as ComfyUI runs them with the Sora nodes.

    python benchmarks/wan_workflow_memory.py

No weights and no GPU: weights are counted from the released configs built on the meta device and
activations traced on the meta device (as benchmarks/wan_memory_plan.py does), in the dtypes ComfyUI
uses on a GPU (the fp16 file's weights, the scaled-fp8 umt5). The Sora DiT Sampler runs CFG's two
halves in one batch; the workflows' VAE Decode takes one latent frame at a time (chunk 1, untiled).

Columns (GiB): the DiT's weights; sampling: the traced activations plus the sampler's fp32 latents,
and the budget estimate the sampler checks before it starts (`sora_core.budget`, refused when over
the card's memory); decode: traced, and the estimate VAE Decode checks; `resident`: the largest phase
(umt5, DiT sampling, decode) with every weight it uses on the card, plus the CUDA context; `least`:
what the card must hold when ComfyUI loads the DiT and umt5 only partly (lowvram: the rest is cast
on the fly, slower): the largest of the budget estimates the nodes check and the traced phases
without the DiT / umt5 weights, plus the context.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.wan_memory_plan import CONTEXT, GIB, umt5_plan  # noqa: E402
from sora_core.budget import estimate  # noqa: E402
from sora_core.wan.dit import WanConfig, WanDiTConfig, forward_memory  # noqa: E402
from sora_core.wan.vae import WAN21_VAE, WAN22_VAE, decode_memory  # noqa: E402

# (variant, width, height, frames, the workflows that sample at this size)
SIZES = [
    ("wan2.1-t2v-1.3B", 832, 480, 81, "text to video, extend, loop, connect, SDEdit, widescreen, full-res pass"),
    ("wan2.1-t2v-1.3B", 480, 832, 81, "vertical"),
    ("wan2.1-t2v-1.3B", 416, 240, 81, "the low-res prototype"),
    ("wan2.2-ti2v-5B", 1280, 704, 121, "animate an image"),
    ("wan2.2-ti2v-5B", 1280, 704, 1, "the still it animates"),
]
VAES = {"wan2.1-t2v-1.3B": WAN21_VAE, "wan2.2-ti2v-5B": WAN22_VAE}


def row(variant: str, width: int, height: int, frames: int, text: dict) -> dict[str, float]:
    """GiB figures of one size (see the module docstring)."""
    dit, vae = WanDiTConfig.released(variant), VAES[variant]
    s, t = vae.spatial_factor, 1 + (frames - 1) // vae.temporal_factor
    traced = forward_memory(dit, t, height // s, width // s, batch=2, dtype=torch.float16)
    state = 6 * 4 * dit.in_channels * t * (height // s) * (width // s)  # the sampler's fp32 latents
    decode = decode_memory(vae, width, height, frames, chunk=1, dtype=torch.float16)
    est = estimate(WanConfig(dit, vae, variant), width=width, height=height, frames=frames, stages=("sample", "decode"),
                   chunk=1, passes=2, dtype=torch.float16, device="cuda")
    sampling = traced["activations"] + state
    phases = {"text": text["fp8"] + text["activations"], "sample": traced["weights"] + sampling + decode["weights"],
              "decode": decode["total"]}
    least = max(est.latents + est.stages["sample"], est.latents + est.stages["decode"], text["activations"],
                sampling + decode["weights"], decode["total"])
    return {"dit": traced["weights"] / GIB, "sampling": sampling / GIB, "sample_check": (est.latents + est.stages["sample"]) / GIB,
            "decode": decode["total"] / GIB, "decode_check": (est.latents + est.stages["decode"]) / GIB,
            "resident": (max(phases.values()) + CONTEXT) / GIB, "least": (least + CONTEXT) / GIB,
            "tokens": traced["tokens"]}


def main() -> None:
    text = umt5_plan()
    print(f"umt5-xxl scaled fp8: weights {text['fp8'] / GIB:.2f} GiB, activations at 512 tokens "
          f"{text['activations'] / GIB:.2f} GiB; CUDA context counted as {CONTEXT / GIB:.1f} GiB")
    print(f"{'model':<16} {'size':>13} {'tokens':>7} {'dit w':>6} {'sample':>7} {'check':>6} {'decode':>7} "
          f"{'check':>6} {'resident':>9} {'least':>6}  used by")
    for variant, w, h, f, uses in SIZES:
        r = row(variant, w, h, f, text)
        print(f"{variant:<16} {f'{w}x{h}x{f}':>13} {r['tokens']:>7} {r['dit']:6.2f} {r['sampling']:7.2f} "
              f"{r['sample_check']:6.2f} {r['decode']:7.2f} {r['decode_check']:6.2f} {r['resident']:9.2f} "
              f"{r['least']:6.2f}  {uses}")


if __name__ == "__main__":
    main()
