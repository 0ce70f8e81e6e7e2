"""Flow matching (rectified flow): the training objective, the noise schedule and the samplers.

Convention: x_t = (1 - t) * x0 + t * noise, t in [0, 1]; t = 1 is pure noise. The network
predicts the velocity v = dx/dt = noise - x0, so one Euler step is x += (t_next - t) * v.

Every latent frame f carries a condition strength s_f in [0, 1] (see `conditioning`): its own
time is min(t, s_f). Frames with s_f = 0 are given and never move; frames with s_f = 1 follow
the whole schedule; frames in between wait, partially noised, until the schedule reaches them
(SDEdit). The samplers below are pure functions in the style of k-diffusion:
`sample_x(model, x, sigmas, *, strength, callback)` with `model(x, t_frames) -> velocity`.
"""

from __future__ import annotations

import math
import numbers
from typing import Callable

import torch

Model = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Callback = Callable[[dict], None]


# -- schedule --------------------------------------------------------------------------------

def time_shift(t: torch.Tensor, shift: float) -> torch.Tensor:
    """Move time towards the noisy end (SD3): larger/longer videos need more steps at high noise,
    because averaging over more tokens makes the same noise level easier to see through."""
    return shift * t / (1 + (shift - 1) * t)


def inverse_time_shift(t: float, shift: float) -> float:
    return t / (shift - (shift - 1) * t)


def resolution_shift(num_tokens: int, base_tokens: int = 256, base_shift: float = 1.0, max_shift: float = 6.0) -> float:
    """Shift that keeps the signal-to-noise ratio per token comparable across sizes: sqrt(tokens / base)
    (SD3's rule), never below `base_shift`."""
    return float(min(max_shift, max(base_shift, base_shift * math.sqrt(num_tokens / base_tokens))))


def check_shift(shift: float) -> float:
    """A schedule shift must be a finite number > 0: 1 leaves the schedule alone, and at 0 or below
    `time_shift` collapses every step onto t = 0 (one silent step)."""
    if isinstance(shift, bool) or not isinstance(shift, numbers.Real) or not math.isfinite(shift) or shift <= 0:
        raise ValueError(f"shift={shift!r} is not allowed: use a number > 0 (1 = no shift; larger spends "
                         f"more steps at high noise)")
    return float(shift)


SEED_MAX = 2**64 - 1  # ComfyUI's seed widgets go up to 0xffffffffffffffff


def check_seed(seed: int) -> int:
    """Seeds are integers 0 .. 2**64 - 1, as ComfyUI allows; torch's generators take that whole range."""
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= seed <= SEED_MAX:
        raise ValueError(f"seed={seed!r} is not allowed: use an integer from 0 to 2**64 - 1 ({SEED_MAX})")
    return int(seed)


def check_sampling(*, seed: int = 0, steps: int = 20, cfg: float = 5.0, shift: float | None = None,
                   sampler: str = "euler", layout_cfg: float = 0.0) -> None:
    """The sampling settings a user gives, each named with its value when it is not allowed."""
    check_seed(seed)
    if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or not 1 <= steps <= 10_000:
        raise ValueError(f"steps={steps!r} is not allowed: use an integer from 1 to 10000")
    if isinstance(cfg, bool) or not isinstance(cfg, numbers.Real) or not 0 <= cfg < math.inf:
        raise ValueError(f"cfg={cfg!r} is not allowed: use a number >= 0 (1 = no guidance)")
    if isinstance(layout_cfg, bool) or not isinstance(layout_cfg, numbers.Real) or not 0 <= layout_cfg < math.inf:
        raise ValueError(f"layout_cfg={layout_cfg!r} is not allowed: use a number >= 0 (0 = no guidance toward "
                         f"the layout)")
    if shift is not None:
        check_shift(shift)
    get_sampler(sampler)


def sigmas_for(steps: int, shift: float = 1.0, start: float = 1.0) -> torch.Tensor:
    """steps+1 decreasing times from `start` to 0, evenly spaced before the shift.

    `start` < 1 begins part-way (SDEdit): the spacing is the one the full schedule
    would have below that point, so 'strength 0.5 with 10 steps' spends its steps well.
    """
    if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or steps < 1:
        raise ValueError(f"steps={steps!r} is not allowed: use an integer >= 1")
    check_shift(shift)
    if not 0.0 < start <= 1.0:
        raise ValueError(f"start={start} must be in (0, 1]")
    u = torch.linspace(inverse_time_shift(start, shift), 0.0, steps + 1, dtype=torch.float64)
    sig = time_shift(u, shift)
    sig[0] = start
    return sig.float()


def frame_times(sigma: torch.Tensor | float, strength: torch.Tensor) -> torch.Tensor:
    """Each frame's time at global time sigma: min(sigma, strength), shape of strength (B, T)."""
    return torch.clamp(strength, max=float(sigma))


def _per_frame(t: torch.Tensor) -> torch.Tensor:
    return t[:, None, :, None, None]  # (B, T) -> broadcastable over (B, C, T, H, W)


# -- training ---------------------------------------------------------------------------------

def sample_training_t(batch: int, *, shift: float = 1.0, generator: torch.Generator | None = None) -> torch.Tensor:
    """Logit-normal times (SD3): most samples at mid noise, where the velocity is hardest to learn."""
    u = torch.sigmoid(torch.randn(batch, generator=generator))
    return time_shift(u, shift)


def flow_loss(model: Model, x0: torch.Tensor, t: torch.Tensor, strength: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Flow-matching MSE on the frames being generated.

    t (B,) is each sample's time; strength (B, T) its condition mask (0 = given frame, seen clean
    and excluded from the loss). Returns the mean over generated elements.
    """
    tf = frame_times(torch.ones(()), strength) * t[:, None]  # (B, T)
    xt = (1 - _per_frame(tf)) * x0 + _per_frame(tf) * noise
    v = model(xt, tf)
    weight = _per_frame((strength > 0).to(x0.dtype)).expand_as(x0)
    err = (v.float() - (noise - x0).float()).pow(2) * weight
    return err.sum() / weight.sum().clamp(min=1.0)


# -- inference --------------------------------------------------------------------------------

def noise_to_start(x0: torch.Tensor, noise: torch.Tensor, sigma0: float, strength: torch.Tensor) -> torch.Tensor:
    """The starting latent: each frame noised to its own starting time min(sigma0, strength)."""
    t = _per_frame(frame_times(sigma0, strength))
    return (1 - t) * x0 + t * noise


def _euler_step(x, v, t_now, t_next):
    return x + _per_frame(t_next - t_now).to(x.dtype) * v


def sample_euler(model: Model, x: torch.Tensor, sigmas: torch.Tensor, *, strength: torch.Tensor,
                 callback: Callback | None = None) -> torch.Tensor:
    """Euler's method on the probability-flow ODE (first order, one model call per step)."""
    for i in range(len(sigmas) - 1):
        t_now, t_next = frame_times(sigmas[i], strength), frame_times(sigmas[i + 1], strength)
        v = model(x, t_now)
        if callback:
            callback({"i": i, "x": x, "sigma": sigmas[i], "denoised": x - _per_frame(t_now).to(x.dtype) * v})
        x = _euler_step(x, v, t_now, t_next)
    return x


def sample_heun(model: Model, x: torch.Tensor, sigmas: torch.Tensor, *, strength: torch.Tensor,
                callback: Callback | None = None) -> torch.Tensor:
    """Heun's method (Karras et al. 2022, Alg. 1 without churn): Euler, then the trapezoid rule.
    Second order, two model calls per step except the last (to t = 0), which is plain Euler."""
    for i in range(len(sigmas) - 1):
        t_now, t_next = frame_times(sigmas[i], strength), frame_times(sigmas[i + 1], strength)
        v = model(x, t_now)
        if callback:
            callback({"i": i, "x": x, "sigma": sigmas[i], "denoised": x - _per_frame(t_now).to(x.dtype) * v})
        x_euler = _euler_step(x, v, t_now, t_next)
        if float(sigmas[i + 1]) == 0.0:
            x = x_euler
        else:
            v2 = model(x_euler, t_next)
            x = _euler_step(x, (v + v2) / 2, t_now, t_next)
    return x


def sample_dpmpp_2m(model: Model, x: torch.Tensor, sigmas: torch.Tensor, *, strength: torch.Tensor,
                    callback: Callback | None = None) -> torch.Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022, Alg. 2) in the data-prediction form, per frame.

    For flow matching alpha_t = 1 - t and sigma_t = t, so lambda = log((1 - t) / t). Frames whose
    time does not change in a step (given, or waiting at their SDEdit strength) have h = 0 and
    stay exactly where they are.
    """
    def lam(t):
        return torch.log((1 - t).clamp(min=1e-6)) - torch.log(t.clamp(min=1e-6))

    old_x0, old_h = None, None
    for i in range(len(sigmas) - 1):
        t_now, t_next = frame_times(sigmas[i], strength), frame_times(sigmas[i + 1], strength)
        v = model(x, t_now)
        x0 = x - _per_frame(t_now).to(x.dtype) * v
        if callback:
            callback({"i": i, "x": x, "sigma": sigmas[i], "denoised": x0})
        moving = t_next < t_now
        h = torch.where(moving, lam(t_next) - lam(t_now), torch.zeros_like(t_now))
        d = x0
        if old_x0 is not None:
            r = torch.where(h > 0, old_h / h.clamp(min=1e-12), torch.zeros_like(h))
            use = (r > 0) & (t_next > 0)  # second order needs a previous step and a non-final target
            coef = torch.where(use, 1 / (2 * r.clamp(min=1e-12)), torch.zeros_like(r))
            d = x0 + _per_frame(coef).to(x.dtype) * (x0 - old_x0)
        ratio = torch.where(moving, t_next / t_now.clamp(min=1e-12), torch.ones_like(t_now))
        x_new = _per_frame(ratio).to(x.dtype) * x + _per_frame((1 - t_next) - ratio * (1 - t_now)).to(x.dtype) * d
        x = torch.where(_per_frame(moving), x_new, x)
        old_x0, old_h = x0, h
    return x


SAMPLERS = {"euler": sample_euler, "heun": sample_heun, "dpmpp_2m": sample_dpmpp_2m}


def get_sampler(name: str):
    if not isinstance(name, str) or name not in SAMPLERS:
        raise ValueError(f"sampler={name!r} is not available; choose one of {sorted(SAMPLERS)}")
    return SAMPLERS[name]

