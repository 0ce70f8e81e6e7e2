"""Prompts: Sora Text Encode and Sora Recaption."""

from __future__ import annotations

import os

import torch

from sora_core.data.world import Scene
from sora_core.flow import check_sampling
from sora_core.grounding import phrase, pooled
from sora_core.pipeline import Defaults
from sora_core.recaption import plan, recaption

from . import wires


class SoraTextEncode:
    DESCRIPTION = ("Encodes a prompt with the Sora text encoder into CONDITIONING for the Sora DiT Sampler. "
                   "Use one for the positive prompt and one (often empty) for the negative prompt.")
    CATEGORY = "Sora/conditioning"
    FUNCTION = "encode"
    RETURN_TYPES = ("CONDITIONING",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "text_encoder": ("SORA_TEXT_ENCODER",),
            "text": ("STRING", {"multiline": True, "tooltip": (
                "What the video shows. Detailed captions work best (see Sora Recaption). "
                "Leave empty for a negative prompt.")}),
        }}

    def encode(self, text_encoder, text):
        if not isinstance(text, str):  # a linked STRING output can be anything
            raise TypeError(f"text must be a string (the prompt, '' for none); got {type(text).__name__}")
        module = text_encoder.load()
        with torch.no_grad():
            emb, mask = module.encode([text])
        return (wires.conditioning(emb.float(), mask, text),)


class SoraApplyLayout:
    DESCRIPTION = ("Adds Sora Recaption's layout (where each object of the caption's scene is, and its outline, in "
                   "every frame) to the positive conditioning, so a model that reads layouts, like the default one, "
                   "puts the objects there and moves them that way. Models without layouts (Wan) ignore it.")
    CATEGORY = "Sora/conditioning"
    FUNCTION = "apply"
    RETURN_TYPES = ("CONDITIONING",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "conditioning": ("CONDITIONING", {"tooltip": "From Sora Text Encode of the caption the layout came with."}),
            "text_encoder": ("SORA_TEXT_ENCODER", {"tooltip": "The one that encoded the caption."}),
            "layout": ("SORA_LAYOUT", {"tooltip": "Sora Recaption's layout output (offline backend)."}),
            "layout_cfg": ("FLOAT", {"default": Defaults.layout_cfg, "min": 0.0, "max": 30.0, "step": 0.1,
                                     "round": 0.01, "tooltip": (
                "Guidance toward the layout, on top of cfg: how strictly the sampler follows where each object "
                "is, its outline and its motion. 0 = the layout is only a condition; above 0 the sampler runs "
                "the model a third time per step (the prompt without the layout) and steers away from that.")}),
        }}

    def apply(self, conditioning, text_encoder, layout, layout_cfg=Defaults.layout_cfg):
        if not isinstance(layout, dict) or "objects" not in layout:
            raise TypeError(f"layout must be Sora Recaption's layout output (its offline backend plans one); "
                            f"got {type(layout).__name__}")
        check_sampling(layout_cfg=layout_cfg)
        scene = Scene.from_dict(layout)  # checks every field before any work
        if not (isinstance(conditioning, list) and len(conditioning) == 1 and "sora_mask" in conditioning[0][1]):
            raise ValueError(f"conditioning must be one Sora Text Encode output (the caption's); got "
                             f"{type(conditioning).__name__}")
        emb, extra = conditioning[0]
        phrases = [phrase(o) for o in scene.objects]
        with torch.no_grad():
            pooled_phrases = (pooled(text_encoder.load(), phrases).float() if phrases
                              else torch.zeros(0, emb.shape[-1]))
        grounded = {"scene": scene.to_dict(), "embeddings": pooled_phrases, "cfg": float(layout_cfg)}
        return (wires.conditioning(emb, extra["sora_mask"], extra.get("sora_text", ""), grounded),)


class SoraRecaption:
    DESCRIPTION = ("Turns a short prompt into the kind of detailed caption the model was trained on (the Sora "
                   "report's recaptioning). 'offline' expands it locally; 'llm' asks an OpenAI-compatible chat "
                   "endpoint (the API key comes from the SORA_LLM_API_KEY or OPENAI_API_KEY environment variable).")
    CATEGORY = "Sora/conditioning"
    FUNCTION = "run"
    RETURN_TYPES = ("STRING", "SORA_LAYOUT")
    RETURN_NAMES = ("caption", "layout")
    OUTPUT_TOOLTIPS = ("The detailed caption.",
                       "The scene the offline caption describes (where each object starts and goes), for Sora Apply "
                       "Layout; none from the llm backend.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "prompt": ("STRING", {"multiline": True, "tooltip": "A short description of the video."}),
            "seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF, "control_after_generate": True,
                             "tooltip": "Picks among equally good wordings, so a seed gives the same caption again."}),
            "backend": (["offline", "llm"], {"default": "offline", "tooltip": (
                "offline = local expander, no network; llm = an OpenAI-compatible /chat/completions endpoint.")}),
            "endpoint": ("STRING", {"default": "http://127.0.0.1:8080/v1", "tooltip": (
                "Base URL of the OpenAI-compatible API (used by the llm backend only).")}),
            "model": ("STRING", {"default": "", "tooltip": "Model name sent to the endpoint (llm backend only)."}),
            "timeout": ("FLOAT", {"default": 30.0, "min": 1.0, "max": 600.0, "step": 1.0,
                                  "tooltip": "Seconds to wait for the endpoint before failing."}),
        }, "optional": {
            "frames": ("INT", {"default": Defaults.frames, "min": 1, "max": 4096, "step": 1, "tooltip": (
                "Frames of the clip the plan is for (offline backend): the same as the latent's, so objects move at "
                "the speeds the caption says. A plan stretched over fewer frames moves them faster than the model "
                "was trained on, and fast shapes blur round.")}),
        }}

    def run(self, prompt, seed, backend, endpoint, model, timeout, frames=Defaults.frames):
        api_key = os.environ.get("SORA_LLM_API_KEY") or os.environ.get("OPENAI_API_KEY")
        if backend == "offline":
            caption, scene = plan(prompt, seed=seed, frames=frames)
            layout = scene.to_dict()
        else:
            caption = recaption(prompt, seed=seed, backend=backend, endpoint=endpoint, model=model,
                                api_key=api_key, timeout=timeout, fallback=False)
            layout = None
        return {"ui": {"text": [caption]}, "result": (caption, layout)}
