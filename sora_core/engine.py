"""The sampling engine: seeded noise, classifier-free guidance and `sample_window`, the one routine
that fills a latent window, for any denoiser, through the samplers of `flow` unchanged.

A denoiser is called `dit(x, t, context, context_mask) -> velocity` with x (B, C, T, H, W) and t in
[0, 1], and has `config.patch`. Our DiT and the Wan DiT both are. Optional attributes say how
to feed it: `per_frame_t` (default True) whether it was trained with one time per latent frame (our
DiT, Wan 2.2 TI2V-5B) or one per sample (Wan 2.1, the 14B models); `input_dtype` (default its
weights' dtype) the dtype of the x, t and context it takes; `device` (default its weights' device)
where it computes, for a model whose weights a host spreads over devices (ComfyUI's lowvram).

One conditioning mechanism for both kinds (see `conditioning`): every latent frame has a strength,
and its time is min(sigma, strength), so given frames (strength 0) sit at t = 0. A per-frame model
sees exactly that. A one-t model sees the sample's sigma, and every frame behind it (given, or
waiting at its SDEdit strength) is first carried forward to sigma along the noising path, with one
fixed noise per window: given frames become their re-noised latent (1 - sigma) x0 + sigma noise.
Either way the sampler never moves those frames, and given frames come back bit-exact.
"""

from __future__ import annotations

from typing import Callable

import torch

from .flow import get_sampler, noise_to_start, resolution_shift, sigmas_for
from .text import pad_text

Text = tuple[torch.Tensor, torch.Tensor]  # (embeddings (1, L, D), mask (1, L) bool)


def seeded_noise(shape, seed: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """Gaussian noise from a CPU generator: the same seed gives the same noise on every device.
    `sample_window` starts from exactly this noise for its `seed`."""
    g = torch.Generator("cpu").manual_seed(int(seed))
    return torch.randn(shape, generator=g, dtype=torch.float32).to(device=device, dtype=dtype)


def num_tokens(dit, samples: torch.Tensor) -> int:
    pt, ph, pw = dit.config.patch
    t, h, w = samples.shape[2:]
    return (t // pt) * (h // ph) * (w // pw)


def _input_dtype(dit) -> torch.dtype:
    return getattr(dit, "input_dtype", None) or next(dit.parameters()).dtype


def guided_velocity(dit, text: Text, negative: Text | None, cfg: float, *, sequential: bool = False,
                    grounding: torch.Tensor | None = None, layout_cfg: float = 0.0):
    """model(x, t) for the samplers: classifier-free guidance with the negative prompt,
    v = v_neg + cfg (v - v_neg), and with a `grounding` (1, N, D), a planned layout (`sora_core.grounding`)
    that goes to both, guidance toward the layout too: + layout_cfg (v - v_bare), where v_bare is the prompt's
    velocity with the layout's rows zeroed, the way training shows the DiT a clip without one (a third
    pass; `layout_cfg` 0 or no grounding: none). The passes run in one batch, or one after the other with
    `sequential` (less activation memory, same result up to float rounding). t is passed as given: (B,) or
    (B, T)."""
    dtype = _input_dtype(dit)
    guided, toward_layout = negative is not None and cfg != 1.0, grounding is not None and layout_cfg != 0
    passes = [(text, grounding)]  # (prompt, grounding) per pass: the prompt's first
    if guided:
        passes.append((negative, grounding))
    if toward_layout:
        passes.append((text, torch.zeros_like(grounding)))  # last
    emb, mask = pad_text([p[0][0] for p in passes], [p[0][1] for p in passes])
    ground = None if grounding is None else torch.cat([p[1] for p in passes]).to(dtype)

    def call(x, t, i: slice):
        b, n = x.shape[0], i.stop - i.start  # x holds the n passes' b-sample batches one after another
        extra = () if ground is None else (ground[i].repeat_interleave(b // n, dim=0),)
        return dit(x.to(dtype), t.to(dtype), emb[i].repeat_interleave(b // n, dim=0).to(dtype),
                   mask[i].repeat_interleave(b // n, dim=0), *extra).float()

    def model(x, t):
        n = len(passes)
        if sequential or n == 1:
            v = [call(x, t, slice(k, k + 1)) for k in range(n)]
        else:
            v = call(torch.cat([x] * n), torch.cat([t] * n), slice(0, n)).chunk(n)
        out = v[1] + cfg * (v[0] - v[1]) if guided else v[0]
        return out + layout_cfg * (v[0] - v[-1]) if toward_layout else out

    return model


def passes_per_step(cfg: float, layout_guided: bool, sequential: bool = False) -> int:
    """The DiT passes `guided_velocity` batches per step: the prompt's, the negative's when cfg != 1, the
    prompt's without its layout when it guides toward one; 1 when they run one at a time (`sequential`)."""
    return 1 if sequential else 1 + (cfg != 1.0) + bool(layout_guided)


def one_time_per_sample(model, noise: torch.Tensor):
    """Wrap `model(x, t)` for a denoiser trained with one t per sample: it is called with each sample's
    sigma (its largest frame time), and frames behind sigma are first noised forward to it with `noise`
    (independent of the noise they already carry): x_sigma = a x_s + b noise, a = (1 - sigma) / (1 - s),
    b = sqrt(sigma^2 - a^2 s^2), which is (1 - sigma) x0 + sigma noise for a given frame (s = 0)."""
    def call(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        sigma = t.amax(dim=1)  # (B,)
        behind = t < sigma[:, None]  # (B, T)
        if behind.any():
            s, sg = t[:, None, :, None, None], sigma.view(-1, 1, 1, 1, 1)
            a = (1 - sg) / (1 - s).clamp(min=1e-6)  # s < sigma <= 1 where it is used
            b = (sg.square() - (a * s).square()).clamp(min=0).sqrt()
            x = torch.where(behind[:, None, :, None, None], a * x + b * noise, x)
        return model(x, sigma)

    return call


def _draw(g: torch.Generator, like: torch.Tensor) -> torch.Tensor:
    return torch.randn(like.shape, generator=g, dtype=torch.float32).to(like.device)


@torch.no_grad()
def sample_window(
    dit,
    samples: torch.Tensor,
    strength: torch.Tensor,
    text: Text,
    negative: Text | None,
    *,
    seed: int = 0,
    steps: int = 20,
    cfg: float = 5.0,
    shift: float | None = None,
    sampler: str = "euler",
    sequential_cfg: bool = False,
    callback: Callable[[dict], None] | None = None,
    grounding: torch.Tensor | None = None,
    layout_cfg: float = 0.0,
) -> torch.Tensor:
    """Fill a latent window: frames with strength 0 come back exactly as given; the others start
    from the samples noised to their strength (1 = pure noise, below = SDEdit) with `seed`'s noise.
    `shift` None: by the number of tokens (`flow.resolution_shift`). `grounding`, `layout_cfg`: see `guided_velocity`.
    """
    if cfg < 0:
        raise ValueError(f"cfg={cfg} must be >= 0")
    device = getattr(dit, "device", None) or next(dit.parameters()).device  # Wan's: where it computes
    x0 = samples.to(device, torch.float32)
    strength = strength.to(device, torch.float32)
    start = float(strength.max())
    if start == 0.0:
        return x0.clone()
    sigmas = sigmas_for(steps, shift if shift is not None else resolution_shift(num_tokens(dit, x0)), start)
    g = torch.Generator("cpu").manual_seed(int(seed))  # first draw: seeded_noise(seed)
    x = noise_to_start(x0, _draw(g, x0), start, strength)
    model = guided_velocity(dit, text, negative, cfg, sequential=sequential_cfg, grounding=grounding,
                            layout_cfg=layout_cfg)
    if not getattr(dit, "per_frame_t", True):
        model = one_time_per_sample(model, _draw(g, x0))  # second draw: independent of the first
    out = get_sampler(sampler)(model, x, sigmas.to(device), strength=strength, callback=callback)
    given = (strength == 0)[:, None, :, None, None]
    out = torch.where(given, x0, out)  # exactly, not merely up to float rounding
    if not torch.isfinite(out).all():
        raise FloatingPointError(
            "the sampler produced NaN/inf latents; the model's dtype may be too narrow (try float32) "
            "or cfg too high"
        )
    return out
