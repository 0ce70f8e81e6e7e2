"""Text/frames in, frames out: the Python API.

    from sora_core.pipeline import Pipeline
    pipe = Pipeline.load()                       # the shipped default model
    frames = pipe.generate("a red ball bouncing", width=64, height=64, frames=17, seed=1)

    wan = Pipeline.load("wan2.1_t2v_1.3B_fp16.safetensors", vae="wan_2.1_vae.safetensors",
                        text_encoder="umt5_xxl_fp8_e4m3fn_scaled.safetensors", device="cuda")
    frames = wan.generate("a corgi running on a beach", seed=1)  # 832x480x81, the model's own recipe

Frames are float tensors (T, H, W, 3) in [0, 1] (ComfyUI's IMAGE layout). Sampling is
`engine.sample_window`, conditioning `conditioning`; this module only wires them to the models.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn

from . import conditioning as cond
from .checkpoint import load_checkpoint
from .engine import sample_window
from .patch import check_frame_count, check_pixel_size, latent_frames
from .wan import files

DEFAULT_MODEL = Path(__file__).resolve().parent / "models" / "sora-tiny.safetensors"

Progress = Callable[[int, int], None]


def default_model_path() -> Path:
    """The shipped default model, or SORA_MODEL if set."""
    return Path(os.environ.get("SORA_MODEL", DEFAULT_MODEL))


@dataclass(frozen=True)
class Defaults:
    """What a model runs with unless told otherwise: its native size and its own sampling recipe."""
    width: int = 64
    height: int = 64
    frames: int = 17
    fps: float = 8.0
    steps: int = 20
    cfg: float = 5.0
    shift: float | None = None  # None: by the number of tokens (`flow.resolution_shift`)
    negative: str = ""


Part = nn.Module | Callable[[], nn.Module]  # resident, or loaded from its mapped file for each use (offload)


class Pipeline:
    """A VAE, a text encoder and a DiT (ours or Wan's), and the capabilities of the report as methods.

    `text` and `dit` may be loaders instead of modules (offload): then each is loaded for its use and
    released after it (the text encoder before the DiT runs, the DiT before the VAE decodes), and the
    `text` / `dit` properties load a fresh one at each access."""

    def __init__(self, vae: nn.Module, text: Part, dit: Part, *, pixel_multiple: int, defaults: Defaults = Defaults(),
                 family: str = "sora-nodes", device: str | torch.device = "cpu"):
        self.vae, self._text, self._dit = vae, text, dit
        self.pixel_multiple, self.defaults, self.family = pixel_multiple, defaults, family
        self.device = torch.device(device)

    # -- loading ------------------------------------------------------------------------------
    @classmethod
    def load(cls, model: str | os.PathLike | None = None, *, vae: str | os.PathLike | None = None,
             text_encoder: str | os.PathLike | None = None, tokenizer: str | os.PathLike | None = None,
             device: str | torch.device = "cpu", dtype: torch.dtype | None = None,
             offload: bool | None = None) -> "Pipeline":
        """The shipped model (no `model`), a sora-nodes checkpoint, or a Wan diffusion model file with its
        `vae` and umt5 `text_encoder` files (ComfyUI's single files; `tokenizer`: umt5's spiece.model when
        the text encoder file holds none). What each file is comes from its keys and shapes; a wrong or
        mismatched file is refused by name before any weights are loaded. `dtype` casts the weights (fp8
        stays fp8); `offload` (default: on any device but the CPU) loads Wan's text encoder and DiT for
        each use and releases them after."""
        path = Path(model) if model else default_model_path()
        found = files.identify_all(files.read_header(path))
        if found[0].kind == "checkpoint":
            extra = [n for n, v in (("vae", vae), ("text_encoder", text_encoder), ("tokenizer", tokenizer)) if v]
            if extra:
                raise ValueError(f"{str(path)!r} is a sora-nodes checkpoint, which holds its own VAE and text encoder; "
                                 f"{', '.join(extra)} are for Wan diffusion models")
            return cls.from_checkpoint(path, device=device, dtype=dtype)
        return cls._load_wan(path, vae, text_encoder, tokenizer, device, dtype, offload)

    @classmethod
    def from_checkpoint(cls, path, *, device="cpu", dtype: torch.dtype | None = None) -> "Pipeline":
        m = load_checkpoint(path, device=device, dtype=dtype)
        missing = {"vae", "text", "dit"} - set(m.parts)
        if missing:
            raise ValueError(f"a Pipeline needs a full model; {str(path)!r} lacks {sorted(missing)}")
        return cls(m.vae, m.text, m.dit, pixel_multiple=m.config.pixel_multiple, device=device)

    @classmethod
    def _load_wan(cls, path, vae, text_encoder, tokenizer, device, dtype, offload) -> "Pipeline":
        from .wan.dit import load_wan_dit, recipe_for
        from .wan.umt5 import load_umt5, umt5_tokenizer
        from .wan.vae import load_wan_vae

        _, dit = files.open_component(path, "diffusion_model")
        channels, recipe = dit.config["in_channels"], recipe_for(dit.variant, dit.config["in_channels"])
        vae_name = {16: "a Wan 2.1 VAE (wan_2.1_vae.safetensors)", 48: "the Wan 2.2 VAE (wan2.2_vae.safetensors)"}.get(
            channels, f"a Wan VAE with {channels} latent channels")
        needs = [f"{flag} ({what})" for flag, given, what in (
            ("vae", vae, vae_name), ("text_encoder", text_encoder, "umt5-xxl, e.g. umt5_xxl_fp8_e4m3fn_scaled.safetensors"))
            if given is None]
        if needs:
            raise ValueError(f"{str(path)!r} is {dit.label()}; it also needs {' and '.join(needs)}")
        _, v = files.open_component(vae, "vae")
        if v.config["latent_channels"] != channels:
            raise ValueError(f"the VAE {str(vae)!r} is {v.label()} with {v.config['latent_channels']} latent channels, "
                             f"but the diffusion model {str(path)!r} ({dit.variant}) works in {channels}: it needs "
                             f"{vae_name}")
        _, t = files.open_component(text_encoder, "text_encoder")
        if t.config["d_model"] != dit.config["text_dim"]:
            raise ValueError(f"the text encoder {str(text_encoder)!r} ({t.variant}) gives {t.config['d_model']}-wide "
                             f"states, but the diffusion model {str(path)!r} ({dit.variant}) reads "
                             f"{dit.config['text_dim']}-wide ones (umt5-xxl: 4096)")
        tok = umt5_tokenizer(text_encoder, tokenizer)  # a missing tokenizer is named now, not after the DiT loads
        offload = torch.device(device).type != "cpu" if offload is None else offload
        text_part = partial(load_umt5, text_encoder, tokenizer=tok, device=device, dtype=dtype)
        dit_part = partial(load_wan_dit, path, device=device, dtype=dtype)
        vae_module = load_wan_vae(vae, device=device, dtype=dtype)
        s, (_, ph, pw) = vae_module.spatial_factor, dit.config["patch"]
        defaults = Defaults(recipe.width, recipe.height, recipe.frames, recipe.fps, recipe.steps, recipe.cfg,
                            recipe.shift, recipe.negative_prompt) if recipe else Defaults()
        return cls(vae_module, text_part if offload else text_part(), dit_part if offload else dit_part(),
                   pixel_multiple=math.lcm(s * ph, s * pw), defaults=defaults, family="wan", device=device)

    # -- parts --------------------------------------------------------------------------------
    @property
    def text(self) -> nn.Module:
        return self._text if isinstance(self._text, nn.Module) else self._text()

    @property
    def dit(self) -> nn.Module:
        return self._dit if isinstance(self._dit, nn.Module) else self._dit()

    @property
    def temporal_factor(self) -> int:
        return self.vae.temporal_factor

    def _release(self) -> None:
        """After an offloaded part's use: give its memory back to the device."""
        if not isinstance(self._dit, nn.Module) and self.device.type == "cuda":
            torch.cuda.empty_cache()

    @torch.no_grad()
    def encode_texts(self, *prompts: str) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Each prompt -> (embeddings (1, L, D), mask (1, L)), one text encoder load for all of them."""
        text = self.text
        out = [text.encode([p]) for p in prompts]
        del text
        self._release()
        return out

    def encode_text(self, prompt: str) -> tuple[torch.Tensor, torch.Tensor]:
        return self.encode_texts(prompt)[0]

    @torch.no_grad()
    def sample(self, window: cond.Window, text, negative, **sampling) -> torch.Tensor:
        dit = self.dit
        out = sample_window(dit, window.samples, window.strength, text, negative, **sampling)
        del dit
        self._release()
        return out

    # -- running ------------------------------------------------------------------------------
    @torch.no_grad()
    def run(self, window: cond.Window, prompt: str, negative: str | None = None, *, progress: Progress | None = None,
            decode_chunk: int | None = None, decode_tile: int | None = None, **sampling) -> torch.Tensor:
        """Sample a window, decode it, splice in the source frames -> (T, H, W, 3) frames.

        `negative`, `steps`, `cfg`, `shift` default to the model's recipe (`defaults`); other options
        go to `engine.sample_window` (seed, sampler, sequential_cfg ...)."""
        if not prompt.strip():
            raise ValueError("prompt is empty; describe the video to generate")
        for key in ("steps", "cfg", "shift"):
            if sampling.get(key) is None:
                sampling[key] = getattr(self.defaults, key)
        steps = sampling["steps"]
        callback = (lambda d: progress(d["i"] + 1, steps)) if progress else None
        text, neg = self.encode_texts(prompt, self.defaults.negative if negative is None else negative)
        latents = self.sample(window, text, neg, callback=callback, **sampling)
        return cond.decode(self.vae, window, latents, chunk=decode_chunk, tile=decode_tile)

    def _check_size(self, width: int, height: int, frames: int) -> None:
        check_pixel_size(width, height, self.pixel_multiple)
        check_frame_count(frames, self.temporal_factor)

    def empty_window(self, width: int, height: int, frames: int, batch: int = 1) -> cond.Window:
        self._check_size(width, height, frames)
        s = self.vae.spatial_factor
        t = latent_frames(frames, self.temporal_factor)
        return cond.empty_window(batch, self.vae.latent_channels, t, height // s, width // s)

    def generate(self, prompt: str, width: int | None = None, height: int | None = None, frames: int | None = None,
                 **kw) -> torch.Tensor:
        """Text to video (frames=1: text to image); sizes default to the model's native ones."""
        d = self.defaults
        return self.run(self.empty_window(width or d.width, height or d.height, frames or d.frames), prompt, **kw)

    def animate(self, image: torch.Tensor, prompt: str, frames: int | None = None, **kw) -> torch.Tensor:
        """Image to video: `image` (1, H, W, 3) becomes the first frame."""
        frames = frames or self.defaults.frames
        self._check_size(image.shape[2], image.shape[1], frames)
        return self.run(cond.animate_image(self.vae, image.to(self.device), frames), prompt, **kw)

    def extend(self, video: torch.Tensor, prompt: str, new_frames: int = 16, context_frames: int = 8,
               direction: str = "forward", blend_frames: int = cond.SEAM_BLEND, **kw) -> torch.Tensor:
        """Extend a clip forward (what happens next) or backward (what led up to it) in time;
        `blend_frames` of the clip crossfade at the join (0: the clip comes back bit-identical)."""
        builders = {"forward": cond.extend_forward, "backward": cond.extend_backward}
        if direction not in builders:
            raise ValueError(f"direction={direction!r} is not allowed; use 'forward' or 'backward'")
        return self.run(builders[direction](self.vae, video.to(self.device), new_frames, context_frames,
                                            blend_frames), prompt, **kw)

    def loop(self, video: torch.Tensor, prompt: str, transition_frames: int = 8, context_frames: int = 8,
             blend_frames: int = cond.SEAM_BLEND, **kw) -> torch.Tensor:
        """Append a generated transition back to the start: the result plays as a seamless infinite loop."""
        window = cond.loop(self.vae, video.to(self.device), transition_frames, context_frames, blend_frames)
        return self.run(window, prompt, **kw)

    def connect(self, first: torch.Tensor, second: torch.Tensor, prompt: str, transition_frames: int = 16,
                context_frames: int = 8, blend_frames: int = cond.SEAM_BLEND, **kw) -> torch.Tensor:
        """first + a generated transition + second."""
        window = cond.connect(self.vae, first.to(self.device), second.to(self.device), transition_frames,
                              context_frames, blend_frames)
        return self.run(window, prompt, **kw)

    def edit(self, video: torch.Tensor, prompt: str, strength: float = 0.6, **kw) -> torch.Tensor:
        """Video-to-video editing with SDEdit: strength 0 keeps the input, 1 ignores it."""
        self._check_size(video.shape[2], video.shape[1], video.shape[0])
        latent = cond.encode_frames(self.vae, video.to(self.device))
        return self.run(cond.sdedit(latent, strength), prompt, **kw)
