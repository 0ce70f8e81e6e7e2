"""What both trainers share: distributed setup, EMA, resume state, logging and the loss curve."""

from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn

from ..fsutil import atomic_write


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_distributed(device: str | None = None) -> Dist:
    """Join the process group torchrun describes in the environment (gloo on CPU, NCCL on CUDA)."""
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device == "cuda":
        torch.cuda.set_device(local)
        dev = torch.device("cuda", local)
    else:
        dev = torch.device(device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return Dist(rank, world, local, dev)


def use_bfloat16(precision: str, device: torch.device) -> bool:
    """Whether to train under bf16 autocast: asked for, or `auto` where bf16 matmuls are native
    (CUDA; x86 CPUs with AVX512-BF16 or AMX, where they run ~3x faster than fp32)."""
    if precision != "auto":
        return precision == "bf16"
    if device.type == "cuda":
        return True
    return device.type == "cpu" and torch.backends.mkldnn.is_available() and _cpu_has_bf16()


def _cpu_has_bf16() -> bool:
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def cleanup_distributed() -> None:
    if dist.is_initialized():
        # Every rank reaches this point before any tears down its connections; without it a fast
        # rank's exit can abort a slower one mid-collective (gloo raises "connection closed").
        dist.barrier()
        dist.destroy_process_group()


def lr_at(step: int, base: float, warmup: int, total: int, final_frac: float = 0.1, time_frac: float = 0.0) -> float:
    """Linear warm-up, then cosine decay to `final_frac` of the base rate. Under a time limit the decay
    follows whichever is further along, the steps or the clock (`time_frac`: share of the limit used)."""
    if step < warmup:
        return base * (step + 1) / warmup
    progress = min(1.0, max((step - warmup) / max(1, total - warmup), time_frac))
    return base * (final_frac + (1 - final_frac) * 0.5 * (1 + math.cos(math.pi * progress)))


def check_time_limit(minutes: float | None) -> None:
    """`--time-limit` is a positive number of minutes, or None for no limit."""
    if minutes is not None and minutes <= 0:
        raise ValueError(f"--time-limit={minutes} is not allowed: use a positive number of minutes")


class Clock:
    """A trainer's wall-clock limit (`--time-limit` minutes; None: no limit), counted from its creation."""

    def __init__(self, minutes: float | None):
        check_time_limit(minutes)
        self.limit = None if minutes is None else minutes * 60.0
        self.start = time.monotonic()

    def fraction(self, d: Dist | None = None) -> float:
        """Share of the limit used (0 without one); with several ranks, the largest, so that all ranks
        use the same learning rate and stop at the same step."""
        if self.limit is None:
            return 0.0
        used = (time.monotonic() - self.start) / self.limit
        if d is not None and d.world > 1:
            t = torch.tensor([used], dtype=torch.float64, device=d.device)
            dist.all_reduce(t, op=dist.ReduceOp.MAX)
            used = float(t.item())
        return used


class EMA:
    """Exponential moving average of parameters (fp32), the weights that get shipped."""

    def __init__(self, module: nn.Module, decay: float):
        self.decay = decay
        self.shadow = {k: v.detach().float().clone() for k, v in module.state_dict().items()}

    @torch.no_grad()
    def update(self, module: nn.Module, step: int) -> None:
        # Warm-up: early on, average over fewer steps so EMA weights are not stuck near the init.
        d = min(self.decay, (1 + step) / (10 + step))
        state = module.state_dict()
        floats = [k for k, v in state.items() if v.is_floating_point()]
        shadow = [self.shadow[k] for k in floats]
        torch._foreach_mul_(shadow, d)  # one fused update for all tensors: no per-tensor launches on a GPU
        torch._foreach_add_(shadow, [state[k].detach().float() for k in floats], alpha=1 - d)
        for k, v in state.items():
            if not v.is_floating_point():
                self.shadow[k].copy_(v)

    def copy_to(self, module: nn.Module) -> None:
        module.load_state_dict({k: v.to(module.state_dict()[k].dtype) for k, v in self.shadow.items()})


def save_training_state(path: Path, module: nn.Module, opt: torch.optim.Optimizer, ema: EMA, step: int) -> None:
    """Everything --resume needs (torch format, read back with weights_only=True: no code runs)."""
    state = {"model": module.state_dict(), "opt": opt.state_dict(), "ema": ema.shadow, "step": step}
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def resume_training_state(path: Path, module: nn.Module, opt: torch.optim.Optimizer, ema: EMA) -> int:
    """Restore what `save_training_state` wrote; returns the step to continue from (0: no state)."""
    if not path.exists():
        return 0
    state = torch.load(path, map_location="cpu", weights_only=True)
    module.load_state_dict(state["model"])
    opt.load_state_dict(state["opt"])
    live = module.state_dict()
    ema.shadow = {k: v.to(live[k].device) for k, v in state["ema"].items()}  # saved from any device
    return state["step"]


class Logger:
    """One progress line on a terminal, JSON lines in a file, a loss-curve PNG at the end."""

    def __init__(self, out_dir: Path, total: int, enabled: bool = True):
        self.out_dir, self.total, self.enabled = out_dir, total, enabled
        self.start = time.time()
        self.history: list[dict] = []
        if enabled:
            out_dir.mkdir(parents=True, exist_ok=True)
            self.file = open(out_dir / "log.jsonl", "a")

    def log(self, step: int, **values) -> None:
        if not self.enabled:
            return
        row = {"step": step, "time": round(time.time() - self.start, 1), **{k: float(v) for k, v in values.items()}}
        self.history.append(row)
        self.file.write(json.dumps(row) + "\n")
        self.file.flush()
        done = step / max(1, self.total)
        eta = (time.time() - self.start) / max(done, 1e-9) * (1 - done)
        bar = "#" * int(30 * done) + "-" * (30 - int(30 * done))
        text = " ".join(f"{k}={v:.4g}" for k, v in values.items())
        sys.stderr.write(f"\r[{bar}] {step}/{self.total} {text} eta {eta / 60:.1f} min ")
        sys.stderr.flush()

    def close(self, key: str = "loss") -> None:
        if not self.enabled:
            return
        sys.stderr.write("\n")
        self.file.close()
        rows = [r for r in self.history if key in r]
        if len(rows) > 1:
            plot_curve([r["step"] for r in rows], [r[key] for r in rows], self.out_dir / f"{key}_curve.png", key)


def plot_curve(steps, values, path: Path, label: str) -> None:
    """A loss curve as a PNG drawn with OpenCV (no plotting library needed), with a running mean."""
    import cv2

    w, h, m = 800, 400, 50
    img = np.full((h, w, 3), 255, np.uint8)
    v = np.log10(np.maximum(np.asarray(values, np.float64), 1e-12))
    s = np.asarray(steps, np.float64)
    k = max(1, len(v) // 50)
    smooth = np.convolve(v, np.ones(k) / k, mode="valid")
    lo, hi = float(v.min()), float(v.max()) if v.max() > v.min() else float(v.min()) + 1

    def pt(x, y):
        return int(m + (x - s[0]) / max(1e-9, s[-1] - s[0]) * (w - 2 * m)), int(h - m - (y - lo) / (hi - lo) * (h - 2 * m))

    cv2.rectangle(img, (m, m), (w - m, h - m), (0, 0, 0), 1)
    for i in range(1, len(v)):
        cv2.line(img, pt(s[i - 1], v[i - 1]), pt(s[i], v[i]), (200, 200, 255), 1, cv2.LINE_AA)
    for i in range(1, len(smooth)):
        cv2.line(img, pt(s[i - 1 + k - 1], smooth[i - 1]), pt(s[i + k - 1], smooth[i]), (200, 0, 0), 2, cv2.LINE_AA)
    cv2.putText(img, f"log10 {label}  [{lo:.2f}, {hi:.2f}]  steps {int(s[0])}-{int(s[-1])}", (m, m - 15),
                cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    atomic_write(path, lambda tmp: cv2.imwrite(tmp, img))
