"""Subcommands of `python -m sora_core`: generate / animate / extend / loop / connect / edit / long,
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


def _pipeline(args):
    from .pipeline import Pipeline

    args.provenance = _provenance(args)  # first: strict provenance fails before any work
    return Pipeline.load(args.model)


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


def _save(frames, path: str, fps: float, provenance=None) -> None:
    from .io import write_video

    out = write_video(path, frames, fps, provenance=provenance)
    print(f"wrote {out} ({frames.shape[0]} frames, {frames.shape[2]}x{frames.shape[1]})")


def _sampling(args) -> dict:
    return dict(negative=args.negative, progress=_progress("sampling"), seed=args.seed, steps=args.steps,
                cfg=args.cfg, sampler=args.sampler, shift=args.shift)


def _prompt(args) -> str:
    if args.no_recaption:
        return args.prompt
    from .recaption import recaption

    caption = recaption(args.prompt, seed=args.seed)
    print(f"caption: {caption}", file=sys.stderr)
    return caption


def _generate(args) -> int:
    pipe = _pipeline(args)
    frames = pipe.generate(_prompt(args), args.width, args.height, args.frames, **_sampling(args))
    _save(frames, args.output, args.fps, args.provenance)
    return 0


def _animate(args) -> int:
    pipe = _pipeline(args)
    image = _load_frames(args.image, pipe.config.pixel_multiple, args.width, args.height, max_frames=1)
    frames = pipe.animate(image, _prompt(args), args.frames, **_sampling(args))
    _save(frames, args.output, args.fps, args.provenance)
    return 0


def _joins(args) -> dict:
    return {} if args.blend_frames is None else {"blend_frames": args.blend_frames}


def _extend(args) -> int:
    pipe = _pipeline(args)
    video = _load_frames(args.video, pipe.config.pixel_multiple, args.width, args.height)
    frames = pipe.extend(video, _prompt(args), args.new_frames, args.context_frames, args.direction,
                         **_joins(args), **_sampling(args))
    _save(frames, args.output, args.fps, args.provenance)
    return 0


def _loop(args) -> int:
    pipe = _pipeline(args)
    video = _load_frames(args.video, pipe.config.pixel_multiple, args.width, args.height)
    frames = pipe.loop(video, _prompt(args), args.transition_frames, args.context_frames, **_joins(args),
                       **_sampling(args))
    _save(frames, args.output, args.fps, args.provenance)
    return 0


def _connect(args) -> int:
    pipe = _pipeline(args)
    first = _load_frames(args.first, pipe.config.pixel_multiple, args.width, args.height)
    second = _load_frames(args.second, pipe.config.pixel_multiple, first.shape[2], first.shape[1])
    frames = pipe.connect(first, second, _prompt(args), args.transition_frames, args.context_frames,
                          **_joins(args), **_sampling(args))
    _save(frames, args.output, args.fps, args.provenance)
    return 0


def _edit(args) -> int:
    pipe = _pipeline(args)
    video = _load_frames(args.video, pipe.config.pixel_multiple, args.width, args.height)
    tf = pipe.config.vae.temporal_factor
    video = video[: 1 + (video.shape[0] - 1) // tf * tf]  # the longest valid 1 + 4k prefix
    frames = pipe.edit(video, _prompt(args), args.strength, **_sampling(args))
    _save(frames, args.output, args.fps, args.provenance)
    return 0


def _long(args) -> int:
    import time

    from .io import VideoStream
    from .long import LongVideo

    pipe = _pipeline(args)
    start = None
    if args.image or args.video:
        start = _load_frames(args.image or args.video, pipe.config.pixel_multiple, args.width, args.height,
                             max_frames=1 if args.image else None)
    began = time.time()

    def progress(window: int, windows: int, step: int, steps: int) -> None:
        done = (window - 1 + step / steps) / windows
        eta = (time.time() - began) * (1 - done) / done if done > 0 else 0.0
        bar = "#" * int(20 * step / steps)
        sys.stderr.write(f"\rwindow {window}/{windows} [{bar:<20}] step {step}/{steps}  eta {eta / 60:.1f} min ")
        sys.stderr.flush()

    cancelled = False
    with VideoStream(args.output, args.fps, provenance=args.provenance) as out:
        job = LongVideo(pipe, _prompt(args), args.frames or max(1, round(args.seconds * args.fps)),
                        width=args.width or 64, height=args.height or 64, start=start, loop=args.loop == "close",
                        window_frames=args.window_frames, new_frames=args.new_frames,
                        context_frames=args.context_frames, drift=args.drift, negative=args.negative,
                        seed=args.seed, progress=progress, steps=args.steps, cfg=args.cfg, sampler=args.sampler,
                        shift=args.shift, **_joins(args))
        try:
            for chunk in job:
                out.write(chunk)
        except KeyboardInterrupt:  # keep what is finished: a shorter but complete video
            cancelled = True
            if not out.frames:
                raise
    sys.stderr.write("\n")
    print(f"{'cancelled; ' if cancelled else ''}wrote {out.path} ({out.frames} frames, {job.width}x{job.height}, "
          f"{out.frames / args.fps:.1f} s at {args.fps:g} fps)")
    return 130 if cancelled else 0


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
    p.add_argument("--model", default=None, help="checkpoint (default: the shipped model, or $SORA_MODEL)")
    p.add_argument("--negative", default="", help="negative prompt for classifier-free guidance")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--cfg", type=float, default=5.0)
    p.add_argument("--shift", type=float, default=None, help="schedule shift (default: by video size)")
    p.add_argument("--sampler", default="euler", choices=["euler", "heun", "dpmpp_2m"])
    p.add_argument("--fps", type=float, default=8.0)
    p.add_argument("--width", type=int, default=None)
    p.add_argument("--height", type=int, default=None)
    p.add_argument("--no-recaption", action="store_true", help="use the prompt as written")
    _provenance_options(p)


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
    p.add_argument("--frames", type=int, default=17, help="1 + 4k frames")
    p.set_defaults(func=_generate, width=64, height=64)

    p = sub.add_parser("animate", help="image to video: the image becomes the first frame")
    p.add_argument("image")
    _common(p)
    p.add_argument("--frames", type=int, default=17)
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

    p = sub.add_parser("long", help="a long video (up to minutes) by chained extension, streamed to the file")
    _common(p)
    p.add_argument("--seconds", type=float, default=60.0, help="length at --fps (default 60)")
    p.add_argument("--frames", type=int, default=None, help="length in frames (instead of --seconds)")
    begin = p.add_mutually_exclusive_group()
    begin.add_argument("--image", default=None, help="start from this image (it becomes the first frame)")
    begin.add_argument("--video", default=None, help="continue this clip (its frames open the video unchanged)")
    p.add_argument("--loop", choices=["off", "close"], default="off",
                   help="close: end on a transition back into the opening, a seamless loop")
    p.add_argument("--window-frames", type=int, default=17, help="frames of the first window (1 + 4k)")
    p.add_argument("--new-frames", type=int, default=16, help="frames each window adds (multiple of 4)")
    p.add_argument("--context-frames", type=int, default=8, help="frames each window sees (multiple of 4)")
    from .long import DEFAULT_DRIFT, DRIFT

    p.add_argument("--drift", choices=DRIFT, default=DEFAULT_DRIFT,
                   help="colour drift control: give each window the latent statistics of the first (anchor), "
                        "or none")
    _blend_option(p)
    p.set_defaults(func=_long)
    p.epilog = ("Frames are written as each window finishes (.mp4/.mov/.mkv/.avi/.webm stream in flat memory; "
                ".gif/.webp/.png are assembled at the end). Ctrl-C stops between steps and keeps the finished "
                "windows as a shorter video (exit code 130).")

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
