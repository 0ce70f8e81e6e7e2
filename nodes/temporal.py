"""Conditioning on given frames: Animate Image, Extend, Loop, Connect and SDEdit Noise.

Each node builds a latent window whose given frames the sampler keeps exactly (see
`sora_core.conditioning`); the VAE Decode node then splices the new frames onto the sources.
"""

from __future__ import annotations

import torch

from sora_core import conditioning as cond
from sora_core.flow import noise_to_start
from sora_core.engine import seeded_noise

from . import wires

CATEGORY = "Sora/conditioning"


def _frames_input(tooltip: str):
    return ("IMAGE", {"tooltip": tooltip})


BLEND = {"optional": {"blend_frames": ("INT", {
    "default": cond.SEAM_BLEND, "min": 0, "max": 64, "tooltip": (
        "Source frames next to each join that crossfade into the model's re-drawn version of them, "
        "hiding the small jump where original pixels meet generated ones. 0 = hard cut: the source "
        "frames come back exactly.")})}}


def _chunk_input(default: int, tooltip: str):
    return ("INT", {"default": default, "min": 4, "max": 4096, "step": 4, "tooltip": f"{tooltip} {wires.CHUNK_TOOLTIP}"})


class SoraAnimateImage:
    DESCRIPTION = "Image-to-video: the image becomes the first (or last) frame of a generated video."
    CATEGORY = CATEGORY
    FUNCTION = "build"
    RETURN_TYPES = ("LATENT",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "vae": ("SORA_VAE",),
            "image": _frames_input("The still image (only the first image of a batch is used)."),
            "frames": ("INT", {"default": 17, "min": 5, "max": 4097, "step": 4, "tooltip": wires.FRAMES_TOOLTIP}),
            "position": (["first", "last"], {"default": "first", "tooltip": (
                "first = the video starts from the image; last = the video ends on it.")}),
        }}

    def build(self, vae, image, frames, position):
        wires.check_frames("image", image[:1], vae.config)
        return (wires.window_latent(cond.animate_image(vae.load(), image[:1], frames, at=position)),)


class SoraExtend:
    DESCRIPTION = ("Extends a video forward (new frames after it) or backward (new frames that lead into it). "
                   "Different seeds give different beginnings (or endings) for the same clip.")
    CATEGORY = CATEGORY
    FUNCTION = "build"
    RETURN_TYPES = ("LATENT",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "vae": ("SORA_VAE",),
            "video": _frames_input("The clip to extend (frames of one video)."),
            "direction": (["forward", "backward"], {"default": "forward", "tooltip": (
                "forward = continue after the last frame; backward = generate what came before the first frame.")}),
            "new_frames": _chunk_input(16, "Frames to generate."),
            "context_frames": _chunk_input(8, "Frames of the clip the model sees (its end, or its start going backward)."),
        }, **BLEND}

    def build(self, vae, video, direction, new_frames, context_frames, blend_frames=cond.SEAM_BLEND):
        wires.check_frames("video", video, vae.config, any_count=True)
        builder = cond.extend_forward if direction == "forward" else cond.extend_backward
        return (wires.window_latent(builder(vae.load(), video, new_frames, context_frames, blend_frames)),)


class SoraLoop:
    DESCRIPTION = ("Makes a seamless loop: generates a transition from the video's end back to its start. "
                   "The output is the video plus the transition; played on repeat it never jumps.")
    CATEGORY = CATEGORY
    FUNCTION = "build"
    RETURN_TYPES = ("LATENT",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "vae": ("SORA_VAE",),
            "video": _frames_input("The clip to loop (frames of one video)."),
            "transition_frames": _chunk_input(8, "Frames generated between the end and the start."),
            "context_frames": _chunk_input(8, "Frames of the end and of the start the model sees."),
        }, **BLEND}

    def build(self, vae, video, transition_frames, context_frames, blend_frames=cond.SEAM_BLEND):
        wires.check_frames("video", video, vae.config, any_count=True)
        return (wires.window_latent(cond.loop(vae.load(), video, transition_frames, context_frames, blend_frames)),)


class SoraConnect:
    DESCRIPTION = "Connects two clips with a generated transition: first, then the transition, then second."
    CATEGORY = CATEGORY
    FUNCTION = "build"
    RETURN_TYPES = ("LATENT",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "vae": ("SORA_VAE",),
            "first": _frames_input("The clip that plays first."),
            "second": _frames_input("The clip that plays after the transition; same width and height as first."),
            "transition_frames": _chunk_input(16, "Frames generated between the clips."),
            "context_frames": _chunk_input(8, "Frames of each clip the model sees (end of first, start of second)."),
        }, **BLEND}

    def build(self, vae, first, second, transition_frames, context_frames, blend_frames=cond.SEAM_BLEND):
        wires.check_frames("first", first, vae.config, any_count=True)
        wires.check_frames("second", second, vae.config, any_count=True)
        window = cond.connect(vae.load(), first, second, transition_frames, context_frames, blend_frames)
        return (wires.window_latent(window),)


class SoraSDEditNoise:
    DESCRIPTION = ("SDEdit video-to-video: noises a latent (e.g. from Sora VAE Encode) part of the way, with its "
                   "own seed; the DiT Sampler then re-draws it following the prompt. strength 0 keeps the input, "
                   "1 ignores it. Frames already marked as given stay given.")
    CATEGORY = CATEGORY
    FUNCTION = "noise"
    RETURN_TYPES = ("LATENT",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "latent": ("LATENT",),
            "strength": ("FLOAT", {"default": 0.6, "min": 0.0, "max": 1.0, "step": 0.01, "tooltip": (
                "How much to change: 0 = keep the input, 1 = ignore it (plain text-to-video).")}),
            "seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF, "control_after_generate": True,
                             "tooltip": "Seed of the added noise."}),
        }}

    def noise(self, latent, strength, seed):
        samples = latent.get("samples") if isinstance(latent, dict) else None
        if samples is None or samples.ndim != 5:
            raise ValueError("latent must be a 5-D Sora video latent (from Sora VAE Encode or another Sora node)")
        if latent.get("sora_noised"):
            raise ValueError("this latent was already noised by Sora SDEdit Noise; connect the un-noised latent")
        window = cond.sdedit(samples.float(), strength)
        if "sora_strength" in latent:
            window.strength = torch.minimum(window.strength, wires.strength_of(latent, samples).float())
        start = float(window.strength.max())
        x = noise_to_start(window.samples, seeded_noise(samples.shape, seed), start, window.strength)
        out = dict(latent)  # keeps a splice plan from Extend / Loop / Connect
        out.update(wires.latent(x, window.strength, noised=True))
        return (out,)
