"""Sora DiT Sampler: fills a latent window with the diffusion transformer."""

from __future__ import annotations

import torch

from sora_core.engine import passes_per_step, sample_window
from sora_core.flow import SAMPLERS, check_sampling

from . import host, wires


class SoraDiTSampler:
    DESCRIPTION = ("Generates video latents with the Sora diffusion transformer. Frames the latent marks as "
                   "given (from Animate Image, Extend, Loop, Connect) come back unchanged; the rest are "
                   "generated to match them and the prompt.")
    CATEGORY = "Sora/sampling"
    FUNCTION = "sample"
    RETURN_TYPES = ("LATENT",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("SORA_DIT",),
            "positive": ("CONDITIONING", {"tooltip": (
                "From Sora Text Encode (or, for Wan models, core's CLIPTextEncode): what the video shows. A layout "
                "added by Sora Apply Layout places the objects, for a model that reads layouts.")}),
            "negative": ("CONDITIONING", {"tooltip": (
                "From Sora Text Encode or CLIPTextEncode: what to steer away from (may be empty).")}),
            "latent": ("LATENT", {"tooltip": (
                "From Patchify Grid, Animate Image, Extend, Loop, Connect or SDEdit Noise (whose strength sets "
                "how much of an input latent is re-drawn), or a core video latent; its noise_mask says per "
                "latent frame what is kept (0) and what is generated (1).")}),
            "seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF, "control_after_generate": True,
                             "tooltip": ("Noise seed: the noise every generated (or SDEdit) frame starts from; the same "
                                         "seed and settings give the same video on any device.")}),
            "steps": ("INT", {"default": 20, "min": 1, "max": 1000, "tooltip": "Sampling steps."}),
            "cfg": ("FLOAT", {"default": 5.0, "min": 0.0, "max": 30.0, "step": 0.1, "round": 0.01, "tooltip": (
                "Classifier-free guidance scale; 1 = no guidance (one model pass per step instead of two).")}),
            "shift": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 20.0, "step": 0.1, "round": 0.01, "tooltip": (
                "Timestep shift towards the noisy end; 0 = auto, growing with the number of tokens "
                "(bigger or longer videos need more steps at high noise).")}),
            "sampler": (list(SAMPLERS), {"default": "euler", "tooltip": (
                "euler: 1 model call per step; heun: 2 (more accurate); dpmpp_2m: 1, second order.")}),
        }}

    def sample(self, model, positive, negative, latent, seed, steps, cfg, shift, sampler):
        config = model.config
        check_sampling(seed=seed, steps=steps, cfg=cfg, shift=shift or None, sampler=sampler)
        z = wires.model_samples(latent, config)
        strength = wires.strength_of(latent, z)
        emb, mask, text = wires.read_conditioning(positive, config, "positive")
        neg_emb, neg_mask, _ = wires.read_conditioning(negative, config, "negative")
        if text is not None and not text.strip():  # core's conditioning does not say its prompt
            raise ValueError("the positive prompt is empty; describe the video in the Sora Text Encode node "
                             "connected to 'positive'")
        b, _, t, h, w = z.shape
        s, tf = config.vae.spatial_factor, config.vae.temporal_factor
        grounding, layout_cfg = wires.read_layout(positive, config, (t, h, w)), wires.layout_cfg(positive, config)
        estimate = wires.check_budget(config, "Sora DiT Sampler", w * s, h * s, 1 + tf * (t - 1), batch=b,
                                      stages=("sample",), part=model,
                                      passes=passes_per_step(cfg, layout_cfg != 0))  # 0 without a layout
        dit = model.load(estimate.memory)  # room for the sampling, not only the weights
        device = model.device
        callback = _step_callback(model, strength, steps)
        out = sample_window(dit, z, strength, (emb.to(device), mask.to(device)),
                            (neg_emb.to(device), neg_mask.to(device)), seed=seed, steps=steps, cfg=cfg,
                            shift=shift or None, sampler=sampler, callback=callback,
                            grounding=None if grounding is None else grounding.to(device), layout_cfg=layout_cfg)
        return (wires.sampled(latent, out, strength, config),)


def _step_callback(model, strength: torch.Tensor, steps: int):
    """Progress bar, cancel check and a preview of the first generated latent frame at each step."""
    bar = host.Progress(steps)
    preview = host.previewer(model)
    moving = (strength[0] > 0).nonzero()
    frame = int(moving[0]) if len(moving) else 0

    def callback(d: dict) -> None:
        host.check_interrupted()
        image = preview(d["denoised"][:, :, frame : frame + 1]) if preview else None
        bar.update(d["i"] + 1, steps, image)

    return callback
