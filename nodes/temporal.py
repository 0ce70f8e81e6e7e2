"""Conditioning on given frames: Animate Image, Extend, Loop, Connect and SDEdit Noise.

Each node builds a latent window whose given frames the sampler keeps exactly (see
`sora_core.conditioning`); the VAE Decode node then splices the new frames onto the sources.
Each checks the budget of the window it makes (encoding it and sampling it) before encoding.
"""

from __future__ import annotations

import torch

from sora_core import conditioning as cond

from . import host, wires

CATEGORY = "Sora/conditioning"


def _frames_input(tooltip: str):
    return ("IMAGE", {"tooltip": tooltip})


BLEND_INPUT = ("INT", {
    "default": cond.SEAM_BLEND, "min": 0, "max": 64, "tooltip": (
        "Source frames next to each join that crossfade into the model's re-drawn version of them, "
        "hiding the small jump where original pixels meet generated ones (Loop and Connect: the "
        "transition's second half eases into the clip that follows it instead). 0 = hard cut: the "
        "source frames come back exactly.")})


def _joins(strength: float, tooltip: str) -> dict:
    """The optional inputs of the nodes that join new frames onto source clips (added last, so graphs saved
    before an input existed still load)."""
    return {"optional": {"blend_frames": BLEND_INPUT, "strength": ("FLOAT", {
        "default": strength, "min": 0.0, "max": 1.0, "step": 0.05, "tooltip": tooltip})}}


EXTEND_JOINS = _joins(cond.EXTEND_STRENGTH, (
    "Where the new frames start: from the clip's nearest frame held, noised this much next to it and fully "
    "at the far end, so they lead on from the clip without a jump. 1 = pure noise (the model draws them "
    "from scratch); use 1 with core's KSampler, which reads values below 1 as a blend with the held frame."))
TRANSITION_JOINS = _joins(cond.TRANSITION_STRENGTH, (
    "Where the transition starts: from a dissolve between the two ends, noised this much in its middle and "
    "less toward the clips, so it leads out of one and into the other without a jump. 1 = pure noise (the "
    "model draws it from scratch); use 1 with core's KSampler, which reads values below 1 as a blend."))


HOLD = {"optional": {"blend_frames": ("INT", {
    "default": cond.SEAM_BLEND, "min": 0, "max": 64, "tooltip": (
        "Generated frames next to the image that crossfade from the still into the model's frames, hiding "
        "the small jump where the exact image meets the generated video. The image itself always comes "
        "back exactly; 0 = hard cut.")})}}


def _chunk_input(default: int, tooltip: str):
    return ("INT", {"default": default, "min": 4, "max": 4096, "step": 4, "tooltip": f"{tooltip} {wires.CHUNK_TOOLTIP}"})


class SoraAnimateImage:
    DESCRIPTION = ("Image-to-video: the image becomes the first (or last) frame of a generated video, exactly "
                   "as given; Sora VAE Decode puts it back after decoding.")
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
        }, **HOLD}

    def build(self, vae, image, frames, position, blend_frames=cond.SEAM_BLEND):
        image = wires.check_frames("image", image[:1], vae.config)
        _check_budget(vae, "Sora Animate Image", image, frames, encode_frames=1)
        window = cond.animate_image(vae.load(), image, frames, at=position, blend_frames=blend_frames)
        return (wires.window_latent(window, vae.config),)


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
        }, **EXTEND_JOINS}

    def build(self, vae, video, direction, new_frames, context_frames, blend_frames=cond.SEAM_BLEND,
              strength=cond.EXTEND_STRENGTH):
        video = wires.check_frames("video", video, vae.config, any_count=True)
        _check_budget(vae, "Sora Extend Video", video, frames=None, encode_frames=1 + context_frames,
                      new_frames=new_frames, context_frames=context_frames)
        window = cond.extend(vae.load(), video, new_frames, context_frames, direction, blend_frames, strength)
        return (wires.window_latent(window, vae.config),)


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
        }, **TRANSITION_JOINS}

    def build(self, vae, video, transition_frames, context_frames, blend_frames=cond.SEAM_BLEND,
              strength=cond.TRANSITION_STRENGTH):
        video = wires.check_frames("video", video, vae.config, any_count=True)
        _check_budget(vae, "Sora Seamless Loop", video, frames=None, encode_frames=1 + 2 * context_frames,
                      transition_frames=transition_frames, context_frames=context_frames, clips=2)
        window = cond.loop(vae.load(), video, transition_frames, context_frames, blend_frames, strength)
        return (wires.window_latent(window, vae.config),)


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
        }, **TRANSITION_JOINS}

    def build(self, vae, first, second, transition_frames, context_frames, blend_frames=cond.SEAM_BLEND,
              strength=cond.TRANSITION_STRENGTH):
        first = wires.check_frames("first", first, vae.config, any_count=True)
        second = wires.check_frames("second", second, vae.config, any_count=True)
        _check_budget(vae, "Sora Connect Clips", first, frames=None, encode_frames=1 + 2 * context_frames,
                      transition_frames=transition_frames, context_frames=context_frames, clips=2)
        window = cond.connect(vae.load(), first, second, transition_frames, context_frames, blend_frames, strength)
        return (wires.window_latent(window, vae.config),)


class SoraSDEditNoise:
    DESCRIPTION = ("SDEdit video-to-video: sets how much of a latent (e.g. from Sora VAE Encode) the DiT Sampler "
                   "re-draws following the prompt: strength 0 keeps the input, 1 ignores it. The sampler adds "
                   "the noise, with its seed, so different seeds give different edits. Frames already marked "
                   "as given stay given. The strength travels in the latent's noise_mask, which core's KSampler "
                   "reads its own way (a per-step blend, not SDEdit): sample it with the Sora DiT Sampler.")
    CATEGORY = CATEGORY
    FUNCTION = "set_strength"
    RETURN_TYPES = ("LATENT",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "latent": ("LATENT",),
            "strength": ("FLOAT", {"default": 0.6, "min": 0.0, "max": 1.0, "step": 0.01, "tooltip": (
                "How much to change: 0 = keep the input, 1 = ignore it (plain text-to-video).")}),
        }}

    def set_strength(self, latent, strength):
        """Writes the strength into the latent's noise_mask, never raising a frame's existing value (given
        frames stay given). An old graph's sora_strength is read when there is no noise_mask, and dropped."""
        samples = latent.get("samples") if isinstance(latent, dict) else None
        if not isinstance(samples, torch.Tensor) or samples.ndim != 5:
            raise ValueError("latent must be a 5-D video latent (from Sora VAE Encode, another Sora node or core's "
                             "VAEEncode)")
        wires.check_finite("latent", samples)
        strength = cond.check_strength(strength)
        levels = torch.minimum(wires.strength_of(latent, samples), torch.tensor(strength))
        out = {k: v for k, v in latent.items() if k != "sora_strength"}  # keeps Extend / Loop / Connect's splice
        out["noise_mask"] = wires.frame_mask(levels, samples.shape).to(host.intermediate_device())
        return (out,)


def _check_budget(vae, what: str, clip: torch.Tensor, frames: int | None, *, encode_frames: int, clips: int = 1,
                  **timings: int) -> None:
    """The window a node is about to encode and hand to the sampler, checked before encoding. Timings
    are checked by name first, so their errors name the node's own inputs."""
    tf = vae.config.vae.temporal_factor
    for name, value in timings.items():
        cond.check_chunks(name, value, tf)
    if frames is None:  # extend / loop / connect: the context (at each end) plus the new frames, after frame 0
        new = timings.get("new_frames", timings.get("transition_frames", 0))
        frames = 1 + new + clips * timings["context_frames"]
    wires.check_budget(vae.config, what, clip.shape[2], clip.shape[1], frames, stages=("encode", "sample"),
                       encode_frames=encode_frames)
