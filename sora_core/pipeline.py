"""Text/frames in, frames out: the Python API.

    from sora_core.pipeline import Pipeline
    pipe = Pipeline.load()                       # the shipped default model
    frames = pipe.generate("a red ball bouncing", width=64, height=64, frames=17, seed=1)

    wan = Pipeline.load("wan2.1_t2v_1.3B_fp16.safetensors", vae="wan_2.1_vae.safetensors",
                        text_encoder="umt5_xxl_fp8_e4m3fn_scaled.safetensors", device="cuda")
    frames = wan.generate("a corgi running on a beach", seed=1)  # 832x480x81, the model's own recipe

Frames are float tensors (T, H, W, 3) in [0, 1] (ComfyUI's IMAGE layout). Sampling is
`engine.sample_window` (the ComfyUI nodes call it too), conditioning `conditioning`; this module
checks requests and wires them to the models.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn

from . import budget
from . import conditioning as cond
from .budget import Budget
from .checkpoint import load_checkpoint
from .data.world import Scene
from .engine import passes_per_step, sample_window
from .flow import check_sampling
from .patch import check_frame_count, check_pixel_size, is_whole
from .wan import files

DEFAULT_MODEL = Path(__file__).resolve().parent / "models" / "sora-tiny.safetensors"

Progress = Callable[[int, int], None]
SAMPLING = ("seed", "steps", "cfg", "shift", "sampler", "layout_cfg")  # checked by `flow.check_sampling`
OPTIONS = (*SAMPLING, "negative", "progress", "decode_chunk", "decode_tile", "on_latents", "sequential_cfg", "layout")

# Frames wider or taller than this many latent cells are decoded in tiles of it (bounded memory
# for large images: 512 px with the default model's VAE).
AUTO_TILE = 128


def auto_tile(h: int, w: int, tile: int | None = None) -> int | None:
    """The decode tile (latent cells) for frames of h x w latent cells: `tile` if given, else `AUTO_TILE` when larger."""
    return tile if tile is not None or max(h, w) <= AUTO_TILE else AUTO_TILE


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
    decode_chunk: int = 4  # latent frames per VAE decode step
    layout_cfg: float = 2.0  # guidance toward a planned layout, for a model that reads one (`engine.guided_velocity`)


Part = nn.Module | Callable[[], nn.Module]  # resident, or loaded from its mapped file for each use (offload)


class Pipeline:
    """A VAE, a text encoder and a DiT (ours or Wan's), and the capabilities of the report as methods.

    Every method checks its inputs and the request's budget (`sora_core.budget`: DiT tokens and
    memory) before any work; set `pipe.budget = Budget(max_tokens=..., max_memory=...)` to change
    the limits. Frames go in as float (T, H, W, 3) in [0, 1] or uint8 in 0..255 (what
    `io.read_video` returns) and come out as float in [0, 1]. Sizes and sampling settings left out
    (or None) are the model's own (`defaults`); `negative` left out is the model's negative prompt.

    `text` and `dit` may be loaders instead of modules (offload): then each is loaded for its use and
    released after it (the text encoder before the DiT runs, the DiT before the VAE decodes), and the
    `text` / `dit` properties load a fresh one at each access.
    """

    budget: Budget | None = None  # None: SORA_MAX_TOKENS / SORA_MAX_MEMORY, else the defaults

    def __init__(self, vae: nn.Module, text: Part, dit: Part, *, config, dit_dtype: torch.dtype,
                 defaults: Defaults = Defaults(), family: str = "sora-nodes", device: str | torch.device = "cpu"):
        self.vae, self._text, self._dit = vae, text, dit
        self.config, self.dit_dtype = config, dit_dtype  # a SoraConfig or a wan.dit.WanConfig
        self.defaults, self.family, self.device = defaults, family, torch.device(device)

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
        return cls.from_model(m, device=device)

    @classmethod
    def from_model(cls, m, *, device=None) -> "Pipeline":
        """A Pipeline over a SoraModel already in memory (its device unless `device` is given)."""
        return cls(m.vae, m.text, m.dit, config=m.config, dit_dtype=next(m.dit.parameters()).dtype,
                   device=device or next(m.dit.parameters()).device)

    @classmethod
    def _load_wan(cls, path, vae, text_encoder, tokenizer, device, dtype, offload) -> "Pipeline":
        from .wan.dit import WanConfig, WanDiTConfig, load_wan_dit
        from .wan.umt5 import load_umt5, umt5_tokenizer
        from .wan.vae import load_wan_vae

        header, dit = files.open_component(path, "diffusion_model")
        channels = dit.config["in_channels"]
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
        config = WanConfig(WanDiTConfig(**dit.config), vae_module.config, dit.variant)
        stored = files.DTYPES[header.tensors[dit.prefix + "blocks.0.ffn.0.weight"].dtype]
        dit_dtype = stored if dtype is None or stored in files.FP8 else dtype
        r = config.recipe
        defaults = Defaults(r.width, r.height, r.frames, r.fps, r.steps, r.cfg, r.shift, r.negative_prompt,
                            decode_chunk=1) if r else Defaults(decode_chunk=1)
        return cls(vae_module, text_part if offload else text_part(), dit_part if offload else dit_part(),
                   config=config, dit_dtype=torch.bfloat16 if dit_dtype in files.FP8 else dit_dtype,
                   defaults=defaults, family="wan", device=device)

    # -- parts --------------------------------------------------------------------------------
    @property
    def text(self) -> nn.Module:
        return self._text if isinstance(self._text, nn.Module) else self._text()

    @property
    def dit(self) -> nn.Module:
        return self._dit if isinstance(self._dit, nn.Module) else self._dit()

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

    @property
    def reads_layouts(self) -> bool:
        """Whether the DiT takes a planned layout (`sora_core.grounding`); others ignore one."""
        return bool(getattr(getattr(self.config, "dit", None), "grounding", False))

    def _grounds(self, layout) -> bool:
        """Whether a request's `layout` reaches the DiT: one was given, to a model that reads layouts."""
        return layout is not None and self.reads_layouts

    @torch.no_grad()
    def grounding(self, layout, window: cond.Window) -> torch.Tensor:
        """The (1, N, D) grounding of a planned scene (`recaption.plan`) over `window`'s tokens."""
        from .grounding import grounding, layout as layout_of

        lay = layout_of(layout, self.config, window.samples.shape[2:])
        text = self.text
        out = grounding(text, [lay], lay.occupancy.shape[1])
        del text
        self._release()
        return out

    @torch.no_grad()
    def sample(self, window: cond.Window, text, negative, **sampling) -> torch.Tensor:
        dit = self.dit
        out = sample_window(dit, window.samples, window.strength, text, negative, **sampling)
        del dit
        self._release()
        return out

    # -- checks, before any work ----------------------------------------------------------------
    def _settings(self, prompt, kw: dict) -> dict:
        """The prompts and options of a request, checked, with the model's defaults filled in."""
        unknown = sorted(set(kw) - set(OPTIONS))
        if unknown:
            raise TypeError(f"unknown option{'s' * (len(unknown) > 1)} {', '.join(unknown)}; allowed: {', '.join(OPTIONS)}")
        kw = dict(kw)
        kw.setdefault("negative", self.defaults.negative)  # given as None: refused below
        for key in ("steps", "cfg", "shift", "decode_chunk", "layout_cfg"):
            if kw.get(key) is None:
                kw[key] = getattr(self.defaults, key)
        layout = kw.get("layout")
        if layout is not None and not isinstance(layout, (Scene, dict)):
            raise TypeError(f"layout must be a planned scene (recaption.plan) or its dict, or None; "
                            f"got {type(layout).__name__}")
        if isinstance(layout, dict):
            kw["layout"] = Scene.from_dict(layout)  # checks every field before any work
        for name, text in (("prompt", prompt), ("negative", kw["negative"])):
            if not isinstance(text, str):
                raise TypeError(f"{name} must be a string; got {type(text).__name__}"
                                + (" (use '' for no negative prompt)" if name == "negative" else ""))
        if not prompt.strip():
            raise ValueError("prompt is empty; describe the video to generate")
        for name, least, what in (("decode_chunk", 1, "latent frames per step"),
                                  ("decode_tile", 0, "latent cells per tile; 0: no tiling; None: tiles of "
                                                     f"{AUTO_TILE} above that size")):
            value = kw.get(name)
            if value is None and name == "decode_tile":
                continue
            if not is_whole(value) or value < least:
                raise ValueError(f"{name}={value!r} is not allowed: use an integer >= {least} ({what})")
        check_sampling(**{k: kw[k] for k in SAMPLING if k in kw})
        return kw

    def _plan(self, what: str, width: int, height: int, frames: int, kw: dict, *, source: str | None = None,
              encode_frames: int = 0, batch: int = 1) -> None:
        """Sizes and budget of a request, before any work; a pixel size is named by its input."""
        try:
            check_pixel_size(width, height, self.config.pixel_multiple)
        except ValueError as err:
            if source is None:
                raise
            raise ValueError(f"{source} is {width}x{height} px (width x height): {err}") from None
        check_frame_count(frames, self.config.vae.temporal_factor)
        budget.check(self.config, what=what, width=width, height=height, frames=frames, batch=batch,
                     stages=budget.STAGES if encode_frames else ("sample", "decode"), encode_frames=encode_frames,
                     chunk=kw["decode_chunk"],
                     tile=auto_tile(height // self.config.vae.spatial_factor, width // self.config.vae.spatial_factor,
                                    kw.get("decode_tile")),
                     passes=passes_per_step(kw["cfg"], self._grounds(kw.get("layout")) and kw["layout_cfg"] != 0,
                                            kw.get("sequential_cfg", False)),
                     dtype=self.dit_dtype,
                     device=self.device, budget=self.budget)

    def _frames(self, name: str, frames) -> torch.Tensor:
        return cond.as_frames(name, frames).to(self.device)

    def _chunks(self, **values: int) -> int:
        """Check extend / loop / connect timings by name; returns their sum in frames."""
        for name, value in values.items():
            cond.check_chunks(name, value, self.config.vae.temporal_factor)
        return sum(values.values())

    # -- running ------------------------------------------------------------------------------
    @torch.no_grad()
    def run(self, window: cond.Window, prompt: str, **kw) -> torch.Tensor:
        """Sample a window, decode it, splice in the source frames -> (T, H, W, 3) frames. Options:
        `negative`, `progress`, `decode_chunk`, `decode_tile` here, the rest go to `engine.sample_window`
        (seed, steps, cfg, shift, sampler, layout_cfg, sequential_cfg)."""
        latents, decode = self.latents(window, prompt, **kw)
        return self.decode(window, latents, **decode)

    def decode(self, window: cond.Window, latents: torch.Tensor, **options) -> torch.Tensor:
        """`cond.decode` (options: chunk, tile), refusing the NaN/inf an overflowing VAE makes."""
        frames = cond.decode(self.vae, window, latents, **options)
        if not torch.isfinite(frames).all():  # the latents are finite (sample_window checks), so the VAE overflowed
            raise FloatingPointError("the VAE decoded NaN/inf from finite latents; its dtype may be too narrow "
                                     "(load the model in float32)")
        return frames

    def latents(self, window: cond.Window, prompt: str, **kw) -> tuple[torch.Tensor, dict]:
        """`run` without the decode: the sampled latents (after `on_latents`) and the decode options
        (chunk, tile) the request asked for."""
        kw = self._settings(prompt, kw)
        b, _, t, h, w = window.samples.shape
        s, tf = self.config.vae.spatial_factor, self.config.vae.temporal_factor
        self._plan("run", w * s, h * s, 1 + tf * (t - 1), kw, batch=b)
        progress, negative = kw.pop("progress", None), kw.pop("negative")
        decode = {"chunk": kw.pop("decode_chunk"), "tile": auto_tile(h, w, kw.pop("decode_tile", None))}
        on_latents = kw.pop("on_latents", None)  # e.g. long videos' drift control, before decoding
        layout = kw.pop("layout", None)
        steps = kw["steps"]
        callback = (lambda d: progress(d["i"] + 1, steps)) if progress else None
        text, neg = self.encode_texts(prompt, negative)
        grounding = self.grounding(layout, window) if self._grounds(layout) else None
        latents = self.sample(window, text, neg, callback=callback, grounding=grounding, **kw)
        if on_latents is not None:
            latents = on_latents(latents)
        return latents, decode

    def generate(self, prompt: str, width: int | None = None, height: int | None = None, frames: int | None = None,
                 **kw) -> torch.Tensor:
        """Text to video (frames=1: text to image); sizes default to the model's native ones."""
        kw = self._settings(prompt, kw)
        d = self.defaults
        width, height, frames = width or d.width, height or d.height, frames or d.frames
        self._plan("generate", width, height, frames, kw)
        return self.run(cond.empty_window(self.config, width, height, frames), prompt, **kw)

    def animate(self, image, prompt: str, frames: int | None = None, at: str = "first",
                blend_frames: int = cond.SEAM_BLEND, **kw) -> torch.Tensor:
        """Image to video: `image` (1, H, W, 3) is exactly the first (or last) frame; the next
        `blend_frames` frames crossfade from it into the generated ones."""
        kw = self._settings(prompt, kw)
        frames = frames or self.defaults.frames
        image = self._frames("image", image)[:1]
        self._plan("animate", image.shape[2], image.shape[1], frames, kw, source="image", encode_frames=1)
        return self.run(cond.animate_image(self.vae, image, frames, at=at, blend_frames=blend_frames), prompt, **kw)

    def extend(self, video, prompt: str, new_frames: int = 16, context_frames: int = 8,
               direction: str = "forward", blend_frames: int = cond.SEAM_BLEND,
               strength: float = cond.EXTEND_STRENGTH, **kw) -> torch.Tensor:
        """Extend a clip forward (what happens next) or backward (what led up to it) in time;
        `blend_frames` of the clip crossfade at the join (0: the clip comes back bit-identical); the new
        frames start from the clip's nearest frame held, noised to `strength` next to it (1: pure noise)."""
        cond.check_strength(strength)
        kw = self._settings(prompt, kw)
        if direction not in cond.DIRECTIONS:
            raise ValueError(f"direction={direction!r} is not allowed; use 'forward' or 'backward'")
        video = self._frames("video", video)
        total = self._chunks(new_frames=new_frames, context_frames=context_frames)
        self._plan("extend", video.shape[2], video.shape[1], 1 + total, kw, source="video",
                   encode_frames=1 + context_frames)
        window = cond.extend(self.vae, video, new_frames, context_frames, direction, blend_frames, strength)
        return self.run(window, prompt, **kw)

    def loop(self, video, prompt: str, transition_frames: int = 8, context_frames: int = 8,
             blend_frames: int = cond.SEAM_BLEND, strength: float = cond.TRANSITION_STRENGTH, **kw) -> torch.Tensor:
        """Append a generated transition back to the start: the result plays as a seamless infinite loop.
        The transition starts from a dissolve between the end and the start, noised to `strength` in its middle."""
        cond.check_strength(strength)
        kw = self._settings(prompt, kw)
        video = self._frames("video", video)
        self._chunks(transition_frames=transition_frames, context_frames=context_frames)
        self._plan("loop", video.shape[2], video.shape[1], 1 + transition_frames + 2 * context_frames, kw,
                   source="video", encode_frames=1 + 2 * context_frames)
        window = cond.loop(self.vae, video, transition_frames, context_frames, blend_frames, strength)
        return self.run(window, prompt, **kw)

    def connect(self, first, second, prompt: str, transition_frames: int = 16,
                context_frames: int = 8, blend_frames: int = cond.SEAM_BLEND,
                strength: float = cond.TRANSITION_STRENGTH, **kw) -> torch.Tensor:
        """first + a generated transition + second; the transition starts from a dissolve between them,
        noised to `strength` in its middle."""
        cond.check_strength(strength)
        kw = self._settings(prompt, kw)
        first, second = self._frames("first", first), self._frames("second", second)
        self._chunks(transition_frames=transition_frames, context_frames=context_frames)
        for name, clip in (("first", first), ("second", second)):
            self._plan("connect", clip.shape[2], clip.shape[1], 1 + transition_frames + 2 * context_frames, kw,
                       source=name, encode_frames=1 + 2 * context_frames)
        window = cond.connect(self.vae, first, second, transition_frames, context_frames, blend_frames, strength)
        return self.run(window, prompt, **kw)

    def edit(self, video, prompt: str, strength: float = 0.6, **kw) -> torch.Tensor:
        """Video-to-video editing with SDEdit: strength 0 keeps the input, 1 ignores it."""
        kw = self._settings(prompt, kw)
        cond.check_strength(strength)
        video = self._frames("video", video)
        try:
            check_frame_count(video.shape[0], self.config.vae.temporal_factor)
        except ValueError as err:
            raise ValueError(f"video has {video.shape[0]} frames: {err}") from None
        self._plan("edit", video.shape[2], video.shape[1], video.shape[0], kw, source="video",
                   encode_frames=video.shape[0])
        latent = cond.encode_frames(self.vae, video)
        return self.run(cond.sdedit(latent, strength), prompt, **kw)
