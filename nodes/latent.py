"""Between pixels and latents: Patchify Grid, VAE Encode, VAE Decode, Trim Frames."""

from __future__ import annotations

import logging
import math

import torch

from sora_core.conditioning import empty_window, frames_to_video, settle_tail, video_to_frames
from sora_core.patch import check_frame_count, check_pixel_size, latent_frames

from . import host, wires

ASPECT_RATIOS = {"custom": None, "1:1": (1, 1), "16:9": (16, 9), "9:16": (9, 16), "4:3": (4, 3), "3:4": (3, 4),
                 "3:2": (3, 2), "2:3": (2, 3), "21:9": (21, 9)}
TEMPORAL_FACTOR = 4  # frames per latent frame in every preset's VAE; Trim Frames has no VAE input to ask


def preset_size(aspect_ratio: str, long_side: int, multiple: int) -> tuple[int, int]:
    """(width, height) of an aspect ratio with the given long side, the short side rounded to `multiple`."""
    if aspect_ratio not in ASPECT_RATIOS or ASPECT_RATIOS[aspect_ratio] is None:
        raise ValueError(f"aspect_ratio={aspect_ratio!r} is not allowed; use one of {list(ASPECT_RATIOS)}")
    if long_side < multiple or long_side % multiple:
        raise ValueError(f"long_side={long_side} is not allowed: it must be a positive multiple of {multiple}")
    w, h = ASPECT_RATIOS[aspect_ratio]
    short = max(multiple, math.floor(long_side * min(w, h) / max(w, h) / multiple + 0.5) * multiple)
    return (long_side, short) if w >= h else (short, long_side)


class SoraPatchifyGrid:
    DESCRIPTION = ("Starts a video of any width, height and duration: the empty latent grid the DiT fills "
                   "(the report's 'grid of spacetime patches'). Shows the latent and token grid sizes.")
    CATEGORY = "Sora/latent"
    FUNCTION = "make"
    RETURN_TYPES = ("LATENT",)

    @classmethod
    def INPUT_TYPES(cls):
        size = {"min": 8, "max": 4096, "step": 8}
        return {"required": {
            "vae": ("SORA_VAE",),
            "aspect_ratio": (list(ASPECT_RATIOS), {"default": "custom", "tooltip": (
                "custom = use width and height; a ratio (width:height) = use long_side and derive the other side.")}),
            "long_side": ("INT", {"default": 64, **size, "tooltip": (
                "Pixels along the longer side when an aspect ratio is chosen; a multiple of the model's "
                "pixel multiple (8 for the default model).")}),
            "width": ("INT", {"default": 64, **size, "tooltip": (
                "Used when aspect_ratio is custom; a multiple of the model's pixel multiple (8 for the default model).")}),
            "height": ("INT", {"default": 64, **size, "tooltip": (
                "Used when aspect_ratio is custom; a multiple of the model's pixel multiple (8 for the default model).")}),
            "frames": ("INT", {"default": 17, "min": 1, "max": 4097, "step": 4, "tooltip": wires.FRAMES_TOOLTIP}),
            "batch_size": ("INT", {"default": 1, "min": 1, "max": 64, "tooltip": "Videos generated at once."}),
        }}

    def make(self, vae, aspect_ratio, long_side, width, height, frames, batch_size):
        config = vae.config
        m = config.pixel_multiple
        if aspect_ratio != "custom":
            width, height = preset_size(aspect_ratio, long_side, m)
        check_pixel_size(width, height, m)
        check_frame_count(frames, config.vae.temporal_factor)
        wires.check_budget(config, "Sora Patchify Grid", width, height, frames, batch=batch_size, stages=("sample",))
        window = empty_window(config, width, height, frames, batch_size)
        pt, ph, pw = config.dit.patch
        t, h, w = window.samples.shape[2:]
        info = (f"{width}x{height} px, {frames} frames -> latent {t}x{h}x{w} (frames x height x width), "
                f"{t // pt}x{h // ph}x{w // pw} = {(t // pt) * (h // ph) * (w // pw)} tokens")
        return {"ui": {"text": [info]}, "result": (wires.window_latent(window, config),)}


def _progress_callback(total: int):
    bar = host.Progress(total)

    def update(done, count):
        host.check_interrupted()
        bar.update(done, count)

    return update


class SoraVAEEncode:
    DESCRIPTION = ("Encodes frames (an IMAGE batch = the frames of one video, 1 + 4k of them) into a latent of the "
                   "VAE's model (Sora or Wan), e.g. for SDEdit video-to-video. Wan VAEs stream the clip causally, "
                   "chunk by chunk, so memory does not grow with its length.")
    CATEGORY = "Sora/latent"
    FUNCTION = "encode"
    RETURN_TYPES = ("LATENT",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "vae": ("SORA_VAE",),
            "images": ("IMAGE", {"tooltip": "Frames of one video; 1 + 4k of them, sides a multiple of the pixel multiple."}),
            "chunk": ("INT", {"default": 8, "min": 1, "max": 256, "tooltip": (
                "Groups of 4 frames encoded at once; lower uses less memory (Wan VAEs: 1 is what Wan itself does).")}),
        }}

    def encode(self, vae, images, chunk):
        images = wires.check_frames("images", images, vae.config)
        estimate = wires.check_budget(vae.config, "Sora VAE Encode", images.shape[2], images.shape[1], images.shape[0],
                                      stages=("encode",), part=vae, encode_frames=images.shape[0], chunk_batch=chunk)
        module = vae.load(estimate.memory)
        param = next(module.parameters())
        n = latent_frames(images.shape[0], vae.config.vae.temporal_factor)
        with torch.no_grad():
            size = {"chunk": chunk} if wires.is_wan(vae.config) else {"chunk_batch": chunk}  # Wan's VAE streams causally
            z = module.encode(frames_to_video(images).to(param.device, param.dtype), progress=_progress_callback(n),
                              **size)
        return (wires.latent(z.float(), vae.config),)


class SoraVAEDecode:
    DESCRIPTION = ("Decodes a Sora or Wan latent into frames, streamed chunk by chunk (memory does not grow with the "
                   "frame count) and optionally in tiles, with progress. After Extend, Loop or Connect the output is "
                   "the source frames followed (or preceded) by only the new ones. A batch of videos comes out one "
                   "after another in a single IMAGE batch.")
    CATEGORY = "Sora/latent"
    FUNCTION = "decode"
    RETURN_TYPES = ("IMAGE",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "vae": ("SORA_VAE",),
            "latent": ("LATENT",),
            "chunk": ("INT", {"default": 4, "min": 1, "max": 256, "tooltip": (
                "Latent frames decoded at once (4 video frames each); lower uses less memory. Wan: 1 needs about "
                "3.5 GB at 832x480 (Wan 2.1 VAE, bf16), 4 about 8 GB.")}),
            "tile": ("INT", {"default": 0, "min": 0, "max": 1024, "step": 8, "tooltip": (
                "0 = off; otherwise decode in tiles of this many latent cells (at least 8) for frames too "
                "large for memory.")}),
        }}

    def decode(self, vae, latent, chunk, tile):
        samples = wires.model_samples(latent, vae.config)  # its noise_mask is the sampler's business
        if tile and tile < 8:
            raise ValueError(f"tile={tile} is not allowed: use 0 (off) or at least 8 latent cells")
        b, _, t, h, w = samples.shape
        s, tf = vae.config.vae.spatial_factor, vae.config.vae.temporal_factor
        estimate = wires.check_budget(vae.config, "Sora VAE Decode", w * s, h * s, 1 + tf * (t - 1), batch=b,
                                      stages=("decode",), part=vae, chunk=chunk, tile=tile or None)
        module = vae.load(estimate.memory)
        param = next(module.parameters())
        splice = latent.get("sora_splice")
        with torch.no_grad():
            samples = settle_tail(module, latent.get("sora_tail"), splice, samples.to(param.device),
                                  chunk=chunk, tile=tile or None)
            video = module.decode(samples.to(param.dtype), chunk=chunk, tile=tile or None,
                                  progress=_progress_callback(samples.shape[2]))
        if not torch.isfinite(video).all():
            raise FloatingPointError("the decoded video contains NaN/inf; the latent is broken (see the sampler "
                                     "settings) or the VAE dtype is too narrow")
        clips = [video_to_frames(v[None].float()).cpu() for v in video]
        frames = torch.cat([splice.apply(c) if splice else c for c in clips])
        if frames.amax() < 0.02:
            logging.warning("Sora VAE Decode: the decoded video is black; check the model, prompt and cfg")
        return (frames.to(host.intermediate_device()),)


class SoraTrimFrames:
    DESCRIPTION = ("Drops the fewest frames so a clip has a length the VAE accepts (1 + 4k), e.g. after "
                   "loading a video. Also outputs the new frame count.")
    CATEGORY = "Sora/frames"
    FUNCTION = "trim"
    RETURN_TYPES = ("IMAGE", "INT")
    RETURN_NAMES = ("images", "frames")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "images": ("IMAGE",),
            "drop_from": (["end", "start"], {"default": "end", "tooltip": "Which end of the clip loses the extra frames."}),
            "max_frames": ("INT", {"default": 0, "min": 0, "max": 100000, "tooltip": (
                "0 = keep as many as possible; otherwise also shorten the clip to at most this many frames.")}),
        }}

    def trim(self, images, drop_from, max_frames):
        if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[0] == 0:
            shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise ValueError(f"images is empty or not IMAGE frames (count, height, width, 3): got {shape}; "
                             f"Trim Frames needs at least one frame")
        if isinstance(max_frames, bool) or not isinstance(max_frames, int) or max_frames < 0:
            raise ValueError(f"max_frames={max_frames!r} is not allowed: use 0 (keep as many as possible) or a "
                             f"positive number of frames")
        if drop_from not in ("end", "start"):
            raise ValueError(f"drop_from={drop_from!r} is not allowed; use 'end' or 'start'")
        count = images.shape[0] if not max_frames else min(max_frames, images.shape[0])
        keep = 1 + (count - 1) // TEMPORAL_FACTOR * TEMPORAL_FACTOR
        out = images[:keep] if drop_from == "end" else images[images.shape[0] - keep:]
        return (out, keep)
