"""Subcommands of `python -m sora_core`: generate / animate / extend / loop / connect / edit,
train, eval, the recaptioning tools and inspect."""

from __future__ import annotations

import argparse
import sys


def _progress(label: str):
    def show(done: int, total: int) -> None:
        bar = "#" * int(30 * done / total)
        sys.stderr.write(f"\r{label} [{bar:<30}] {done}/{total}")
        if done == total:
            sys.stderr.write("\n")
        sys.stderr.flush()

    return show


DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


def _pipeline(args):
    import torch

    from .pipeline import Pipeline

    args.provenance = _provenance(args)  # first: strict provenance fails before any work
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    return Pipeline.load(args.model, vae=args.vae, text_encoder=args.text_encoder, tokenizer=args.tokenizer,
                         device=device, dtype=getattr(torch, DTYPES[args.dtype]) if args.dtype else None,
                         offload=args.offload)


def _image_size(args, pipe) -> tuple[int | None, int | None]:
    """Frame size for an image to animate: as asked, else a Wan model's native size (the image is cropped
    to it), else the image's own size rounded down to what the model accepts. Clips keep their size."""
    if pipe.family == "wan":
        return args.width or pipe.defaults.width, args.height or pipe.defaults.height
    return args.width, args.height


def _load_frames(path: str, multiple: int, width: int | None = None, height: int | None = None,
                 max_frames: int | None = None):
    """A clip or image as (T, H, W, 3) float frames, resized to a size the model accepts."""
    import torch

    from .data.video_folder import resize_cover
    from .io import read_video

    import numpy as np

    frames, _ = read_video(path, max_frames=max_frames)
    h, w = frames.shape[1:3]
    tw = width or max(multiple, w // multiple * multiple)
    th = height or max(multiple, h // multiple * multiple)
    if (tw, th) != (w, h):
        frames = np.stack([resize_cover(f, tw, th) for f in frames])
    return torch.from_numpy(frames).float() / 255.0


def _save(frames, args, pipe) -> None:
    from .io import write_video

    path = args.output
    out = write_video(path, frames, args.fps or pipe.defaults.fps, provenance=args.provenance)
    print(f"wrote {out} ({frames.shape[0]} frames, {frames.shape[2]}x{frames.shape[1]})")


def _sampling(args) -> dict:
    return dict(negative=args.negative, progress=_progress("sampling"), seed=args.seed, steps=args.steps,
                cfg=args.cfg, sampler=args.sampler, shift=args.shift, sequential_cfg=args.sequential_cfg,
                decode_tile=args.vae_tile)


def _prompt(args, pipe) -> str:
    if args.no_recaption or pipe.family != "sora-nodes":  # the offline expander writes our training captions
        return args.prompt
    from .recaption import recaption

    caption = recaption(args.prompt, seed=args.seed)
    print(f"caption: {caption}", file=sys.stderr)
    return caption


def _generate(args) -> int:
    pipe = _pipeline(args)
    frames = pipe.generate(_prompt(args, pipe), args.width, args.height, args.frames, **_sampling(args))
    _save(frames, args, pipe)
    return 0


def _animate(args) -> int:
    pipe = _pipeline(args)
    image = _load_frames(args.image, pipe.pixel_multiple, *_image_size(args, pipe), max_frames=1)
    frames = pipe.animate(image, _prompt(args, pipe), args.frames, **_sampling(args))
    _save(frames, args, pipe)
    return 0


def _joins(args) -> dict:
    return {} if args.blend_frames is None else {"blend_frames": args.blend_frames}


def _extend(args) -> int:
    pipe = _pipeline(args)
    video = _load_frames(args.video, pipe.pixel_multiple, args.width, args.height)
    frames = pipe.extend(video, _prompt(args, pipe), args.new_frames, args.context_frames, args.direction,
                         **_joins(args), **_sampling(args))
    _save(frames, args, pipe)
    return 0


def _loop(args) -> int:
    pipe = _pipeline(args)
    video = _load_frames(args.video, pipe.pixel_multiple, args.width, args.height)
    frames = pipe.loop(video, _prompt(args, pipe), args.transition_frames, args.context_frames, **_joins(args),
                       **_sampling(args))
    _save(frames, args, pipe)
    return 0


def _connect(args) -> int:
    pipe = _pipeline(args)
    first = _load_frames(args.first, pipe.pixel_multiple, args.width, args.height)
    second = _load_frames(args.second, pipe.pixel_multiple, first.shape[2], first.shape[1])
    frames = pipe.connect(first, second, _prompt(args, pipe), args.transition_frames, args.context_frames,
                          **_joins(args), **_sampling(args))
    _save(frames, args, pipe)
    return 0


def _edit(args) -> int:
    pipe = _pipeline(args)
    video = _load_frames(args.video, pipe.pixel_multiple, args.width, args.height)
    tf = pipe.temporal_factor
    video = video[: 1 + (video.shape[0] - 1) // tf * tf]  # the longest valid 1 + 4k prefix
    frames = pipe.edit(video, _prompt(args, pipe), args.strength, **_sampling(args))
    _save(frames, args, pipe)
    return 0


def _train(args) -> int:
    from .train import dit, vae

    (vae if args.what == "vae" else dit).run(args)
    return 0


def _eval(args) -> int:
    from .eval import run

    return run.run(args)


def _common(p: argparse.ArgumentParser, prompt: bool = True) -> None:
    if prompt:
        p.add_argument("prompt", help="what to show; short prompts are expanded into detailed captions")
    p.add_argument("-o", "--output", required=True, help="output file: .mp4, .webm, .gif, .webp or .png")
    p.add_argument("--model", default=None, help="a sora-nodes checkpoint, or a Wan diffusion model file (with --vae "
                   "and --text-encoder); default: the shipped model, or $SORA_MODEL")
    p.add_argument("--negative", default=None, help="negative prompt for classifier-free guidance (default: the "
                   "model's own; empty for the shipped model)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=None, help="default: the model's recipe (20 for the shipped model)")
    p.add_argument("--cfg", type=float, default=None, help="default: the model's recipe (5 for the shipped model)")
    p.add_argument("--shift", type=float, default=None, help="schedule shift (default: the model's recipe, else by "
                   "video size)")
    p.add_argument("--sampler", default="euler", choices=["euler", "heun", "dpmpp_2m"])
    p.add_argument("--fps", type=float, default=None, help="default: the model's (8 for the shipped model)")
    p.add_argument("--width", type=int, default=None)
    p.add_argument("--height", type=int, default=None)
    p.add_argument("--no-recaption", action="store_true", help="use the prompt as written (Wan models always do)")
    _model_options(p)
    _provenance_options(p)


def _model_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("Wan models (single files as ComfyUI keeps them; `inspect` says what a file is)")
    g.add_argument("--vae", default=None, help="the VAE for a Wan --model: wan_2.1_vae.safetensors (1.3B, 14B) or "
                   "wan2.2_vae.safetensors (TI2V-5B)")
    g.add_argument("--text-encoder", default=None, help="umt5-xxl for a Wan --model, e.g. umt5_xxl_fp16.safetensors")
    g.add_argument("--tokenizer", default=None, help="umt5's spiece.model, if the text encoder file holds none")
    g.add_argument("--device", default=None, help="cuda, cpu, ... (default: cuda when available)")
    g.add_argument("--dtype", choices=sorted(DTYPES), default=None,
                   help="cast the weights (default: as stored; fp8 stays fp8)")
    g.add_argument("--offload", action=argparse.BooleanOptionalAction, default=None,
                   help="load the text encoder and the DiT only while each runs (default: on, except on the CPU)")
    g.add_argument("--sequential-cfg", action="store_true",
                   help="run the prompt and the negative prompt one after the other (half the activation memory)")
    g.add_argument("--vae-tile", type=int, default=None, help="decode in spatial tiles of this many latent cells")


# -- provenance: a C2PA manifest on every output (sora_core.provenance) --------------------------

_SOURCES = ("image", "video", "first", "second")  # the input-file arguments, in command order


def _provenance_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("provenance (C2PA Content Credentials: the output says it is AI-generated)")
    g.add_argument("--no-provenance", action="store_true", help="write no C2PA manifest")
    g.add_argument("--provenance-strict", action="store_true",
                   help="fail before any work if the output cannot be signed (c2pa missing, signer broken, "
                        "format such as .webm); by default it is written unsigned with a warning")
    g.add_argument("--include-prompt", action="store_true", help="record the prompt in the manifest (default: not)")
    g.add_argument("--c2pa-cert", default=None,
                   help="your PEM certificate chain, signer first (default: $SORA_C2PA_CERT, else a local signer "
                        "made on first use in ~/.config/sora-nodes/c2pa, shown as untrusted by validators)")
    g.add_argument("--c2pa-key", default=None, help="the PEM private key of --c2pa-cert (default: $SORA_C2PA_KEY)")


def _provenance(args):
    """The manifest for args.output (None with --no-provenance), checked now, before any work."""
    if args.no_provenance:
        return None
    from .pipeline import default_model_path
    from .provenance import Provenance

    prov = Provenance(args.command, model=args.model or default_model_path(), prompt=args.prompt,
                      include_prompt=args.include_prompt,
                      sources=[getattr(args, a) for a in _SOURCES if getattr(args, a, None)],
                      cert=args.c2pa_cert, key=args.c2pa_key, strict=args.provenance_strict)
    prov.check(args.output)
    return prov


def _blend_option(p: argparse.ArgumentParser) -> None:
    """For the commands that join new frames onto a source clip (read back by `_joins`)."""
    p.add_argument("--blend-frames", type=int, default=None,
                   help="source frames crossfaded into the new ones at each join (default 4; 0: hard cut)")


def add_commands(sub) -> None:
    p = sub.add_parser("generate", help="text to video (--frames 1: text to image)")
    _common(p)
    p.add_argument("--frames", type=int, default=None, help="1 + 4k frames (default: the model's, 17 for the "
                   "shipped one; a Wan model also defaults to its native width and height)")
    p.set_defaults(func=_generate)

    p = sub.add_parser("animate", help="image to video: the image becomes the first frame")
    p.add_argument("image")
    _common(p)
    p.add_argument("--frames", type=int, default=None, help="1 + 4k frames (default: the model's)")
    p.set_defaults(func=_animate)

    p = sub.add_parser("extend", help="extend a clip forward or backward in time")
    p.add_argument("video")
    _common(p)
    p.add_argument("--direction", choices=["forward", "backward"], default="forward")
    p.add_argument("--new-frames", type=int, default=16, help="multiple of 4")
    p.add_argument("--context-frames", type=int, default=8, help="multiple of 4")
    _blend_option(p)
    p.set_defaults(func=_extend)

    p = sub.add_parser("loop", help="append a transition back to the start: a seamless infinite loop")
    p.add_argument("video")
    _common(p)
    p.add_argument("--transition-frames", type=int, default=8)
    p.add_argument("--context-frames", type=int, default=8)
    _blend_option(p)
    p.set_defaults(func=_loop)

    p = sub.add_parser("connect", help="first clip + generated transition + second clip")
    p.add_argument("first")
    p.add_argument("second")
    _common(p)
    p.add_argument("--transition-frames", type=int, default=16)
    p.add_argument("--context-frames", type=int, default=8)
    _blend_option(p)
    p.set_defaults(func=_connect)

    p = sub.add_parser("edit", help="video-to-video editing with SDEdit")
    p.add_argument("video")
    _common(p)
    p.add_argument("--strength", type=float, default=0.6, help="0 keeps the input, 1 ignores it")
    p.set_defaults(func=_edit)

    train = sub.add_parser("train", help="train the VAE or the DiT (torchrun for several GPUs/processes)")
    which = train.add_subparsers(dest="what", required=True)
    from .train import dit, vae

    vae.add_arguments(which.add_parser("vae", help="train the 3D VAE"))
    dit.add_arguments(which.add_parser("dit", help="train the text encoder + DiT on a trained VAE"))
    train.set_defaults(func=_train)

    from .eval import run

    ev = sub.add_parser("eval", help="evaluate a model; the last output line is a JSON report")
    run.add_arguments(ev)
    ev.set_defaults(func=_eval)

    from .recaption import add_cli

    add_cli(sub)

    p = sub.add_parser("inspect", help="what a model file is (family, variant, parameters, dtype), from its header")
    p.add_argument("file", help=".safetensors file (GGUF and pickles are named and refused, never opened)")
    p.add_argument("--json", action="store_true", help="print the description as JSON")
    p.set_defaults(func=_inspect)


def _inspect(args) -> int:
    import json

    from .wan.files import describe, format_description

    info = describe(args.file)
    print(json.dumps(info, indent=2, ensure_ascii=False) if args.json else format_description(info))
    return 0
