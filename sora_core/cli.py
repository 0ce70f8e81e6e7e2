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


DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


def _pipeline(args, out_frames: int | None):
    """Every check that needs no model (output, sampling settings, prompt, input files, limits), then
    provenance (strict fails before any work), then the model (its files are identified and checked
    against each other from their headers before any weights load)."""
    import torch

    from .budget import Budget, parse_size
    from .flow import check_sampling
    from .io import check_output, probe_video
    from .pipeline import Pipeline

    check_output(args.output, 1.0 if args.fps is None else args.fps, frames=out_frames)  # None: the model's own
    check_sampling(**{k: v for k, v in dict(seed=args.seed, steps=args.steps, cfg=args.cfg, shift=args.shift,
                                             sampler=args.sampler, layout_cfg=args.layout_cfg).items()
                      if v is not None})
    if not args.prompt.strip():
        raise ValueError("the prompt is empty; describe the video, e.g. \"a red ball bouncing\"")
    if getattr(args, "strength", None) is not None:
        from .conditioning import check_strength

        check_strength(args.strength)
    for name in _SOURCES:
        if getattr(args, name, None):
            probe_video(getattr(args, name))  # exists, a readable format
    if args.max_tokens is not None and args.max_tokens < 1:
        raise ValueError(f"--max-tokens={args.max_tokens} is not allowed: use a positive number of tokens")
    if args.vae_tile is not None and args.vae_tile < 0:
        raise ValueError(f"--vae-tile={args.vae_tile} is not allowed: use a number of latent cells (0: no tiling)")
    try:
        budget = Budget(max_tokens=args.max_tokens, max_memory=parse_size(args.max_memory) if args.max_memory else None)
    except ValueError as err:
        raise ValueError(f"--max-memory: {err}") from None
    budget.token_limit(), budget.memory_limit("cpu")  # a bad SORA_MAX_TOKENS / SORA_MAX_MEMORY fails now
    try:
        device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    except RuntimeError as err:
        raise ValueError(f"--device={args.device!r} is not a device: {err}") from None
    args.provenance = _provenance(args)
    pipe = Pipeline.load(args.model, vae=args.vae, text_encoder=args.text_encoder, tokenizer=args.tokenizer,
                         device=device, dtype=getattr(torch, DTYPES[args.dtype]) if args.dtype else None,
                         offload=args.offload)
    pipe.budget = budget
    return pipe


def _image_size(args, pipe) -> tuple[int | None, int | None]:
    """Frame size for an image to animate: as asked, else a Wan model's native size (the image is cropped
    to it), else the image's own size rounded down to what the model accepts. Clips keep their size."""
    if pipe.family == "wan":
        return args.width or pipe.defaults.width, args.height or pipe.defaults.height
    return args.width, args.height


def _load_frames(pipe, path: str, width: int | None = None, height: int | None = None,
                 max_frames: int | None = None):
    """A clip or image as (T, H, W, 3) float frames, resized to a size the model accepts; its size is
    checked against the memory limit before it is read."""
    import numpy as np
    import torch

    from .budget import Budget, BudgetError, format_size
    from .data.video_folder import resize_cover
    from .io import probe_video, read_video
    from .patch import check_pixel_size

    multiple = pipe.config.pixel_multiple
    if width or height:
        check_pixel_size(width or multiple, height or multiple, multiple)
    info = probe_video(path)
    n = min(info.num_frames, max_frames or info.num_frames)
    tw = width or max(multiple, info.width // multiple * multiple)
    th = height or max(multiple, info.height // multiple * multiple)
    need = n * (info.width * info.height * 3 + tw * th * 3 * 4 * 2)  # decoded, resized, as floats
    limit, source = (pipe.budget or Budget()).memory_limit("cpu")
    if limit is not None and need > limit:
        raise BudgetError(f"{path}: {n} frames of {info.width}x{info.height} px need about {format_size(need)} to "
                          f"read; the limit is {format_size(limit)} ({source}; set SORA_MAX_MEMORY or --max-memory). "
                          f"Use a shorter clip.")
    frames, _ = read_video(path, max_frames=max_frames)
    if (tw, th) != frames.shape[1:3][::-1]:
        frames = np.stack([resize_cover(f, tw, th) for f in frames])
    return torch.from_numpy(frames).float() / 255.0


def _save(frames, path: str, fps: float, provenance=None) -> None:
    from .io import write_video

    out = write_video(path, frames, fps, provenance=provenance)
    print(f"wrote {out} ({frames.shape[0]} frames, {frames.shape[2]}x{frames.shape[1]})")


def _sampling(args) -> dict:
    """The pipeline's options; those not given (None) are the model's own."""
    return dict({} if args.negative is None else {"negative": args.negative}, progress=_progress("sampling"),
                seed=args.seed, steps=args.steps, cfg=args.cfg, sampler=args.sampler, shift=args.shift,
                layout_cfg=args.layout_cfg, sequential_cfg=args.sequential_cfg, decode_tile=args.vae_tile)


def _plan(args, pipe, frames: int | None = None):
    """The prompt as the model reads it, and the scene it plans for a clip of `frames` frames (default: the
    model's own length); the scene is None where the prompt goes as written. Our models get the offline
    recaptioner's caption, printed: it writes our training captions (Wan models never do)."""
    if args.no_recaption or pipe.family != "sora-nodes":
        return args.prompt, None
    from .recaption import plan

    caption, scene = plan(args.prompt, seed=args.seed, frames=frames or pipe.defaults.frames)
    print(f"caption: {caption}", file=sys.stderr)
    return caption, scene


def _layout(pipe, scene):
    """The planned scene, printed, for a model that reads layouts (where the objects go); else None."""
    if scene is None or not pipe.reads_layouts:
        return None
    print(f"layout: {', '.join(f'{o.color} {o.shape} {o.motion}' for o in scene.objects)}", file=sys.stderr)
    return scene


def _prompt(args, pipe) -> str:
    return _plan(args, pipe)[0]


def _generate(args) -> int:
    pipe = _pipeline(args, args.frames)
    caption, scene = _plan(args, pipe, args.frames)
    frames = pipe.generate(caption, args.width, args.height, args.frames, layout=_layout(pipe, scene),
                           **_sampling(args))
    _save(frames, args.output, args.fps or pipe.defaults.fps, args.provenance)
    return 0


def _animate(args) -> int:
    pipe = _pipeline(args, args.frames)
    image = _load_frames(pipe, args.image, *_image_size(args, pipe), max_frames=1)
    frames = pipe.animate(image, _prompt(args, pipe), args.frames, **_sampling(args))
    _save(frames, args.output, args.fps or pipe.defaults.fps, args.provenance)
    return 0


def _joins(args) -> dict:
    given = {"blend_frames": args.blend_frames, "strength": getattr(args, "strength", None)}
    return {k: v for k, v in given.items() if v is not None}


def _extend(args) -> int:
    pipe = _pipeline(args, 2)
    video = _load_frames(pipe, args.video, args.width, args.height)
    frames = pipe.extend(video, _prompt(args, pipe), args.new_frames, args.context_frames, args.direction,
                         **_joins(args), **_sampling(args))
    _save(frames, args.output, args.fps or pipe.defaults.fps, args.provenance)
    return 0


def _loop(args) -> int:
    pipe = _pipeline(args, 2)
    video = _load_frames(pipe, args.video, args.width, args.height)
    frames = pipe.loop(video, _prompt(args, pipe), args.transition_frames, args.context_frames, **_joins(args),
                       **_sampling(args))
    _save(frames, args.output, args.fps or pipe.defaults.fps, args.provenance)
    return 0


def _connect(args) -> int:
    pipe = _pipeline(args, 2)
    first = _load_frames(pipe, args.first, args.width, args.height)
    second = _load_frames(pipe, args.second, first.shape[2], first.shape[1])
    frames = pipe.connect(first, second, _prompt(args, pipe), args.transition_frames, args.context_frames,
                          **_joins(args), **_sampling(args))
    _save(frames, args.output, args.fps or pipe.defaults.fps, args.provenance)
    return 0


def _edit(args) -> int:
    from .io import check_output

    pipe = _pipeline(args, None)
    video = _load_frames(pipe, args.video, args.width, args.height)
    tf = pipe.config.vae.temporal_factor
    video = video[: 1 + (video.shape[0] - 1) // tf * tf]  # the longest valid 1 + 4k prefix
    fps = args.fps or pipe.defaults.fps
    check_output(args.output, fps, frames=video.shape[0])  # the count is known only now (JPEG: one frame)
    frames = pipe.edit(video, _prompt(args, pipe), args.strength, **_sampling(args))
    _save(frames, args.output, fps, args.provenance)
    return 0


def _long(args) -> int:
    import math
    import time

    from .io import VideoStream
    from .long import LongVideo
    from .pipeline import Defaults

    if args.fps is None:  # the count is needed before the model loads (its output is checked first)
        args.fps = Defaults.fps
    if args.frames is not None:
        count, given = args.frames, f"--frames={args.frames}"
    elif math.isfinite(args.seconds) and args.seconds > 0:
        count, given = round(args.seconds * args.fps), f"--seconds={args.seconds:g} at --fps={args.fps:g}"
    else:
        raise ValueError(f"--seconds={args.seconds} is not allowed: use a positive number of seconds")
    if count < 2:
        raise ValueError(f"{given} is {count} frame(s); a long video needs more (e.g. --seconds 60)")
    pipe = _pipeline(args, count)
    start = None
    if args.image or args.video:
        start = _load_frames(pipe, args.image or args.video, args.width, args.height,
                             max_frames=1 if args.image else None)
    began = time.time()

    def progress(window: int, windows: int, step: int, steps: int) -> None:
        done = (window - 1 + step / steps) / windows
        eta = (time.time() - began) * (1 - done) / done if done > 0 else 0.0
        bar = "#" * int(20 * step / steps)
        sys.stderr.write(f"\rwindow {window}/{windows} [{bar:<20}] step {step}/{steps}  eta {eta / 60:.1f} min ")
        sys.stderr.flush()

    # every input of the job is checked here, before the stream or any window exists
    caption, scene = _plan(args, pipe, args.window_frames)  # the layout places the opening window
    layout = _layout(pipe, scene) if start is None else None  # ... when it is drawn from the prompt
    job = LongVideo(pipe, caption, count, layout=layout, width=args.width or pipe.defaults.width,
                    height=args.height or pipe.defaults.height, start=start,
                    loop=args.loop == "close", window_frames=args.window_frames, new_frames=args.new_frames,
                    context_frames=args.context_frames, drift=args.drift, retries=args.retries,
                    seam_limit=args.seam_limit, overlap_frames=args.overlap_frames, seed=args.seed,
                    negative=pipe.defaults.negative if args.negative is None else args.negative,
                    progress=progress, steps=args.steps, cfg=args.cfg, sampler=args.sampler, shift=args.shift,
                    **_joins(args))
    cancelled = False
    with VideoStream(args.output, args.fps, provenance=args.provenance) as out:
        try:
            for chunk in job:
                out.write(chunk)
        except KeyboardInterrupt:  # keep what is finished: a shorter but complete video
            cancelled = True
            if not out.frames:
                raise
    sys.stderr.write("\n")
    if job.redraws:
        print(f"{job.redraws} window(s) drawn again for a smoother join (--retries {args.retries}, "
              f"--seam-limit {args.seam_limit:g})")
    print(f"{'cancelled; ' if cancelled else ''}wrote {out.path} ({out.frames} frames, {job.width}x{job.height}, "
          f"{out.frames / args.fps:.1f} s at {args.fps:g} fps)")
    return 130 if cancelled else 0


def _train(args) -> int:
    from .train import dit, recipe, vae

    {"vae": vae, "dit": dit, "default": recipe}[args.what].run(args)
    return 0


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
    p.add_argument("--layout-cfg", type=float, default=None,
                   help="guidance toward the planned layout, for a model that reads one: a third DiT pass per step "
                        "(0: none; default 2)")
    p.add_argument("--shift", type=float, default=None, help="schedule shift (default: the model's recipe, else by "
                   "video size)")
    p.add_argument("--sampler", default="euler", choices=["euler", "heun", "dpmpp_2m"])
    p.add_argument("--fps", type=float, default=None, help="default: the model's (8 for the shipped model)")
    p.add_argument("--width", type=int, default=None)
    p.add_argument("--height", type=int, default=None)
    p.add_argument("--no-recaption", action="store_true", help="use the prompt as written (Wan models always do)")
    p.add_argument("--max-tokens", type=int, default=None,
                   help="refuse requests over this many DiT tokens (default: $SORA_MAX_TOKENS, else 65536 or the "
                        "model's native size if more)")
    p.add_argument("--max-memory", default=None,
                   help="refuse requests estimated over this much memory, e.g. 16GB (default: $SORA_MAX_MEMORY, "
                        "else the memory the device has)")
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
    g.add_argument("--vae-tile", type=int, default=None, help="decode in spatial tiles of this many latent cells "
                   "(0: never; default: tiles of 128 cells for frames larger than that)")


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


def _blend_option(p: argparse.ArgumentParser, strength: bool = True) -> None:
    """For the commands that join new frames onto a source clip (read back by `_joins`)."""
    p.add_argument("--blend-frames", type=int, default=None,
                   help="source frames crossfaded into the new ones at each join (default 4; 0: hard cut)")
    if strength:
        p.add_argument("--strength", type=float, default=None,
                       help="how far from the source the new frames start: extending, from the clip's nearest "
                            "frame held, noised this much next to it (default 0.7; 1: pure noise); a loop's or "
                            "connect's transition from a dissolve between the clips, noised this much in its "
                            "middle (default 0.6)")


def add_commands(sub) -> None:
    """Every subcommand, registered one way: a name, a help line, a function that adds its arguments
    and one that runs it and returns the exit status."""
    from .eval import run as evaluation
    from .recaption import add_caption_folder_arguments, add_recaption_arguments, run_caption_folder, run_recaption

    for name, help, arguments, run in (
        ("generate", "text to video (--frames 1: text to image)", _generate_arguments, _generate),
        ("animate", "image to video: the image becomes the first frame", _animate_arguments, _animate),
        ("extend", "extend a clip forward or backward in time", _extend_arguments, _extend),
        ("loop", "append a transition back to the start: a seamless infinite loop", _loop_arguments, _loop),
        ("connect", "first clip + generated transition + second clip", _connect_arguments, _connect),
        ("edit", "video-to-video editing with SDEdit", _edit_arguments, _edit),
        ("long", "a long video (up to minutes) by chained extension, streamed to the file", _long_arguments, _long),
        ("train", "train the VAE or the DiT (torchrun for several GPUs/processes)", _train_arguments, None),
        ("eval", "evaluate a model; the last output line is a JSON report", evaluation.add_arguments, evaluation.run),
        ("recaption", "expand a short prompt into a detailed caption", add_recaption_arguments, run_recaption),
        ("caption-folder", "write .txt captions for a folder of clips via a vision LLM", add_caption_folder_arguments,
         run_caption_folder),
        ("inspect", "what a model file is (family, variant, parameters, dtype), from its header", _inspect_arguments,
         _inspect),
    ):
        register(sub, name, help, arguments, run)


def register(sub, name: str, help: str, arguments, run) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help=help, description=help)
    # SUPPRESS: absent here, a --debug given before the command still counts
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show an error's full traceback")
    arguments(p)
    if run is not None:
        p.set_defaults(func=run)
    return p


def _generate_arguments(p: argparse.ArgumentParser) -> None:
    _common(p)
    p.add_argument("--frames", type=int, default=None, help="1 + 4k frames (default: the model's, 17 for the "
                   "shipped one; width and height default to the model's too, 64x64 for the shipped one)")


def _animate_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("image")
    _common(p)
    p.add_argument("--frames", type=int, default=None, help="1 + 4k frames (default: the model's, 17 for the "
                   "shipped one)")


def _extend_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("video")
    _common(p)
    p.add_argument("--direction", choices=["forward", "backward"], default="forward")
    p.add_argument("--new-frames", type=int, default=16, help="multiple of 4")
    p.add_argument("--context-frames", type=int, default=8, help="multiple of 4")
    _blend_option(p)


def _loop_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("video")
    _common(p)
    p.add_argument("--transition-frames", type=int, default=8)
    p.add_argument("--context-frames", type=int, default=8)
    _blend_option(p)


def _connect_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("first")
    p.add_argument("second")
    _common(p)
    p.add_argument("--transition-frames", type=int, default=16)
    p.add_argument("--context-frames", type=int, default=8)
    _blend_option(p)


def _edit_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("video")
    _common(p)
    p.add_argument("--strength", type=float, default=0.6, help="0 keeps the input, 1 ignores it")


def _long_arguments(p: argparse.ArgumentParser) -> None:
    from .long import DEFAULT_DRIFT, DRIFT, OVERLAP, RETRIES, SEAM_LIMIT

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
    p.add_argument("--drift", choices=DRIFT, default=DEFAULT_DRIFT,
                   help="colour drift control: keep each window's backdrop (its colour and how it fades across the "
                        "frame, read from the frame's outer ring) at the first window's (colour), give each window the "
                        "latent statistics of the first (anchor), or none")
    p.add_argument("--retries", type=int, default=RETRIES,
                   help=f"draw a window again, with the next seed, when its join jumps more than --seam-limit; "
                        f"up to this many times, keeping the smoothest (each costs one window; default {RETRIES})")
    p.add_argument("--seam-limit", type=float, default=SEAM_LIMIT,
                   help="the jump at a join, in multiples of the video's median frame-to-frame change, above "
                        f"which a window is drawn again (default {SEAM_LIMIT:g})")
    p.add_argument("--overlap-frames", type=int, default=None,
                   help=f"frames before each join that the next window draws again and crossfades into, spreading "
                        f"the join's jump over them (0 = none; default {OVERLAP}, or context_frames - 4 if less)")
    _blend_option(p, strength=False)  # long windows start from pure noise (long.LongVideo)
    p.epilog = ("Frames are written as each window finishes (.mp4/.mov/.mkv/.avi/.webm stream in flat memory; "
                ".gif/.webp/.png are assembled at the end). Ctrl-C stops between steps and keeps the finished "
                "windows as a shorter video (exit code 130).")


def _train_arguments(p: argparse.ArgumentParser) -> None:
    from .train import dit, recipe, vae

    which = p.add_subparsers(dest="what", required=True)
    register(which, "vae", "train the 3D VAE", vae.add_arguments, _train)
    register(which, "dit", "train the text encoder + DiT on a trained VAE", dit.add_arguments, _train)
    register(which, "default", "the default model's whole recipe: VAE, then DiT", recipe.add_arguments, _train)


def _inspect_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", help=".safetensors file (GGUF and pickles are named and refused, never opened)")
    p.add_argument("--json", action="store_true", help="print the description as JSON")


def _inspect(args) -> int:
    import json

    from .wan.files import describe, format_description

    info = describe(args.file)
    print(json.dumps(info, indent=2, ensure_ascii=False) if args.json else format_description(info))
    return 0
