"""Sora Long Video: a video of any length by chained extension, with drift control."""

from __future__ import annotations

import torch

from sora_core import conditioning as cond
from sora_core.budget import Budget, BudgetError, format_size
from sora_core.flow import SAMPLERS
from sora_core.long import DEFAULT_DRIFT, DRIFT, MAX_RETRIES, OVERLAP, RETRIES, SEAM_LIMIT, LongVideo
from sora_core.pipeline import Pipeline

from . import host, wires


class _Conditioned(Pipeline):
    """A Pipeline over hosted networks (ours or Wan's) whose prompts arrive encoded (CONDITIONING), by role;
    its device is where the DiT runs (the budget is checked for it before the networks are loaded there).
    `positive`: the CONDITIONING whose layout (Sora Apply Layout) grounds a window given its scene."""

    def __init__(self, vae, dit, config, prompts: dict[str, tuple[torch.Tensor, torch.Tensor]], device: torch.device,
                 positive=None):
        super().__init__(vae, None, dit, config=config, dit_dtype=next(dit.parameters()).dtype, device=device)
        self.prompts, self.positive = prompts, positive

    def encode_texts(self, *prompts: str):
        return [self.prompts[p] for p in prompts]

    def grounding(self, layout, window):  # the phrases come pooled with the conditioning
        return wires.read_layout(self.positive, self.config, tuple(window.samples.shape[2:])).to(self.device)


def _chunk(default: int, tooltip: str):
    return ("INT", {"default": default, "min": 4, "max": 256, "step": 4, "tooltip": f"{tooltip} {wires.CHUNK_TOOLTIP}"})


class SoraLongVideo:
    DESCRIPTION = ("Makes a long video (up to minutes) by chained extension: a first window from the prompt (or "
                   "from start_images), then window after window, each continuing the last frames of the one before. "
                   "Drift control keeps colours and contrast from creeping; 'loop' ends on a transition back into "
                   "the opening. Progress shows every window's steps; Cancel stops between steps.")
    CATEGORY = "Sora/sampling"
    FUNCTION = "generate"
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("images",)
    OUTPUT_TOOLTIPS = ("All frames, held in memory like any IMAGE: 12 bytes per pixel per frame "
                       "(a minute at 8 fps: 24 MB at 64x64, 2.3 GB at 832x480). For flat memory at any length "
                       "use `python -m sora_core long`, which streams frames to the file.",)

    @classmethod
    def INPUT_TYPES(cls):
        size = {"min": 8, "max": 4096, "step": 8}
        return {"required": {
            "model": ("SORA_DIT",),
            "vae": ("SORA_VAE",),
            "positive": ("CONDITIONING", {"tooltip": (
                "From Sora Text Encode (or, for Wan models, core's CLIPTextEncode): what the whole video shows. A "
                "layout added by Sora Apply Layout places the objects of the first window (not with start_images), "
                "for a model that reads layouts; later windows carry them on.")}),
            "negative": ("CONDITIONING", {"tooltip": "From Sora Text Encode: what to steer away from (may be empty)."}),
            "width": ("INT", {"default": 64, **size, "tooltip": "Frame width without start_images (a multiple of 8 "
                              "for the default model)."}),
            "height": ("INT", {"default": 64, **size, "tooltip": "Frame height without start_images."}),
            "seconds": ("FLOAT", {"default": 10.0, "min": 0.5, "max": 3600.0, "step": 0.5, "tooltip": (
                "Length of the video at `fps` (set the same fps in the save node).")}),
            "fps": ("FLOAT", {"default": 8.0, "min": 1.0, "max": 60.0, "step": 1.0, "tooltip": (
                "Frames per second, to turn seconds into frames; the model does not depend on it.")}),
            "new_frames": _chunk(16, "Frames each window adds."),
            "context_frames": _chunk(8, "Frames of the video so far that each window sees."),
            "drift": (list(DRIFT), {"default": DEFAULT_DRIFT, "tooltip": (
                "colour = shift each window's new frames so their backdrop (its colour and how it fades across the "
                "frame, read from the frame's outer ring, where a subject rarely is) stays the first window's "
                "(ramped, no jump at the joins); "
                "anchor = give each window's latents the first window's statistics; both hold back slow global "
                "changes (lighting, a pan onto new colours) on purpose; none = off.")}),
            "loop": ("BOOLEAN", {"default": False, "tooltip": (
                "End on a transition back into the opening frames, so the video plays as a seamless loop.")}),
            "seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF, "control_after_generate": True,
                             "tooltip": "Seed of the first window; window k uses seed + k."}),
            "steps": ("INT", {"default": 20, "min": 1, "max": 1000, "tooltip": "Sampling steps per window."}),
            "cfg": ("FLOAT", {"default": 5.0, "min": 0.0, "max": 30.0, "step": 0.1, "round": 0.01,
                              "tooltip": "Classifier-free guidance scale."}),
            "sampler": (list(SAMPLERS), {"default": "euler", "tooltip": "As in the Sora DiT Sampler."}),
        }, "optional": {
            "start_images": ("IMAGE", {"tooltip": (
                "Optional. One image: the video starts from it (animated). Several: a clip the video continues; "
                "its frames open the output unchanged. Sets the frame size.")}),
            "blend_frames": ("INT", {"default": cond.SEAM_BLEND, "min": 0, "max": 64, "tooltip": (
                "Where a join does not overlap (overlap_frames 0): frames before it that crossfade into the "
                "decoder's version of them (0 = hard cut).")}),
            "retries": ("INT", {"default": RETRIES, "min": 0, "max": MAX_RETRIES, "tooltip": (
                "Draw a window again, with the next seed, when its join jumps more than seam_limit; up to this "
                "many times, keeping the smoothest. Each redraw costs one window's time (the progress bar "
                "repeats that window).")}),
            "seam_limit": ("FLOAT", {"default": SEAM_LIMIT, "min": 1.0, "max": 100.0, "step": 0.5, "tooltip": (
                "How big a jump at a join is allowed before the window is drawn again: multiples of the video's "
                "median frame-to-frame change (1 = no bigger than an ordinary frame step).")}),
            # last: a saved graph's widget values are positional, so new inputs go at the end
            "overlap_frames": ("INT", {"default": OVERLAP, "min": 0, "max": 252, "step": 4, "tooltip": (
                "Frames before each join that the next window draws again and crossfades into, so a jump at the "
                "join is spread over them (0 = none). At most context_frames - 4 are used: one chunk of the "
                "context stays as it was.")}),
        }}

    def generate(self, model, vae, positive, negative, width, height, seconds, fps, new_frames, context_frames,
                 drift, loop, seed, steps, cfg, sampler, start_images=None, blend_frames=cond.SEAM_BLEND,
                 retries=RETRIES, seam_limit=SEAM_LIMIT, overlap_frames=OVERLAP):
        config = model.config
        emb, mask, text = wires.read_conditioning(positive, config, "positive")
        neg_emb, neg_mask, _ = wires.read_conditioning(negative, config, "negative")
        if text is not None and not text.strip():  # core's conditioning does not say its prompt
            raise ValueError("the positive prompt is empty; describe the video in the Sora Text Encode node "
                             "connected to 'positive'")
        if start_images is not None:
            start_images = wires.check_frames("start_images", start_images, config, any_count=True).cpu()
        device = model.device
        pipe = _Conditioned(vae.module, model.module, config, {"positive": (emb.to(device), mask.to(device)),
                                    "negative": (neg_emb.to(device), neg_mask.to(device))}, device, positive)
        layout = wires.layout_scene(positive, config)
        if layout is not None and start_images is not None:
            raise ValueError("positive carries a layout (Sora Apply Layout), which places the objects of a video "
                             "drawn from the prompt, and start_images are given, which already hold them; "
                             "connect one or the other")
        bar = host.Progress(1)

        def progress(window: int, windows: int, step: int, total: int) -> None:
            host.check_interrupted()  # Cancel stops here, between steps
            bar.update((window - 1) * total + step, windows * total)

        count = max(1, round(seconds * fps))
        try:  # every setting and the largest window's budget, before the networks load
            job = LongVideo(pipe, "positive", count, layout=layout, width=width, height=height, start=start_images,
                            loop=loop, new_frames=new_frames, context_frames=context_frames,
                            blend_frames=blend_frames, drift=drift, retries=retries, seam_limit=seam_limit,
                            negative="negative", seed=seed,
                            overlap_frames=min(overlap_frames, context_frames - config.vae.temporal_factor),
                            progress=progress, steps=steps, cfg=cfg, sampler=sampler,
                            layout_cfg=wires.layout_cfg(positive, config))
        except ValueError as err:
            raise type(err)(f"seconds={seconds} at fps={fps} ({count} frames): {err}") from None
        _check_output_memory(job)
        host.load_parts(model, vae)
        frames, done = None, 0
        for chunk in job:  # filled in place: the IMAGE is the only full copy
            if frames is None:
                frames = torch.empty(job.frames, *chunk.shape[1:], device=host.intermediate_device())
            frames[done : done + len(chunk)] = chunk
            done += len(chunk)
        return (frames,)


def _check_output_memory(job: LongVideo) -> None:
    """The IMAGE output holds every frame (float32 RGB): refused before any work when it cannot fit."""
    need = job.frames * job.height * job.width * 3 * 4
    limit, source = Budget().memory_limit(host.intermediate_device())
    if limit is not None and need > limit:
        raise BudgetError(f"Sora Long Video: {job.frames} frames of {job.width}x{job.height} px take "
                          f"{format_size(need)} as an IMAGE; the limit is {format_size(limit)} ({source}; set "
                          f"SORA_MAX_MEMORY). Make it shorter or smaller, or use `python -m sora_core long`, which "
                          f"streams frames to the file.")
