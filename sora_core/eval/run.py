"""`python -m sora_core eval`: measure a model on held-out synthetic prompts and real clips.

Prints progress, then as its last line one JSON object with the metrics (see `evaluate`), and
writes a contact sheet per capability so a person can look at what the numbers describe.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

from ..conditioning import check_strength, video_to_frames
from ..data.synthetic import Scene, heldout_clip
from ..io import to_uint8_frames as to_uint8
from ..long import LongVideo, join_seam, ring_median, seam_ratio
from ..pipeline import Pipeline
from ..recaption import plan
from .detector import analyse_clip, score_against


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of frames in [0, 1]."""
    mse = float((a.float() - b.float()).pow(2).mean())
    return 10 * np.log10(1.0 / max(mse, 1e-10))


def border_colour(frame: torch.Tensor) -> torch.Tensor:
    """Median colour of a (H, W, 3) frame's border, a band of 1/32 of each side (at least 2 px): the static
    background the camera sees. Not the outermost pixels alone: on a backdrop with a pattern of thin lines,
    a line can run along the edge and the median of that 1-px ring is the line's colour, not the backdrop's
    (one held-out clip's own frames read 48/255 there on a backdrop of 18)."""
    h, w = frame.shape[:2]
    return ring_median(frame[None], max(2, h // 32), max(2, w // 32))


def long_chain(pipe: Pipeline, clip: torch.Tensor, prompt: str, *, windows: int = 15, new_frames: int = 16,
               **options) -> tuple[float, list[float], torch.Tensor]:
    """`windows` chained extensions of `clip` (a `LongVideo` started from it): the colour drift, the seam
    ratio at every join (over the window before and the window after it, the span a single extend's seam
    is measured on; with overlapping windows the worst step of the join's crossfade) and the frames.

    Drift is the mean abs RGB change x 255 of the static background (`border_colour`) from the clip to the
    last window, each averaged over its frames: a single frame's background also flickers, by as much as
    the drift itself with a weak model, and flicker is not what accumulates."""
    job = LongVideo(pipe, prompt, len(clip) + windows * new_frames, start=clip, new_frames=new_frames, **options)
    frames = torch.cat(list(job))
    seams = [join_seam(frames[max(0, j - new_frames) : j + new_frames + 1], min(j, new_frames), job.overlap)
             for j in job.joins]
    return background_drift(frames, len(clip), new_frames), seams, frames


def background_drift(frames: torch.Tensor, first: int, last: int) -> float:
    """Mean abs change x 255 of the background colour, averaged over the first `first` and the last `last` frames."""
    background = torch.stack([border_colour(f) for f in frames])
    return float((background[-last:].mean(0) - background[:first].mean(0)).abs().mean() * 255)


def heldout(n: int, width: int, height: int, frames: int, seed: int, **options) -> list[dict]:
    return [heldout_clip(i, width, height, frames, seed=seed, **options) for i in range(n)]


def travel(analysis, motion: str, width: int, height: int) -> float | None:
    """How far the first tracked object moves the `motion` way ("left", ...), in frame widths/heights;
    None when nothing was tracked."""
    from ..data.world import DIRECTIONS

    if not analysis.tracks:
        return None
    dets = analysis.tracks[0].detections
    dx, dy = DIRECTIONS[motion]
    return ((dets[-1].centroid[0] - dets[0].centroid[0]) / width * dx
            + (dets[-1].centroid[1] - dets[0].centroid[1]) / height * dy)


ADHERENCE = ("color_ok", "shape_ok", "direction_ok", "count_ok")  # what text to video is scored on


def score_clip(item: dict, video: torch.Tensor) -> dict[str, bool]:
    """`score_against` of generated (T, H, W, 3) frames in [0, 1] and the held-out `item`'s scene."""
    return score_against(Scene.from_dict(item["scene"]), analyse_clip(to_uint8(video)))


def accuracies(results: list[dict[str, bool]], keys) -> dict[str, float]:
    """The share of `results` with each property in `keys` right, named *_acc."""
    return {k.replace("_ok", "_acc"): float(np.mean([r[k] for r in results])) for k in keys}


PROBE_SCENE = {"n_objects": 1, "motions": ("left", "right", "up", "down"), "camera": "still", "texture": "none",
               "occlusion": False}


PROBE_TASKS = ("t2v", "i2v", "two-stage")


def probe(pipe: Pipeline, *, n: int = 16, width: int = 64, height: int = 64, frames: int = 17, steps: int = 20,
          cfg: float = 5.0, seed: int = 0, task: str = "t2v") -> dict:
    """Quick adherence check that moves early in training (about a minute on a CPU): held-out scenes of one
    object sliding left / right / up / down on a plain backdrop, generated from their detailed captions.

    task: "t2v" generates each clip from its caption; "i2v" animates the held-out clip's own first frame
    with it (the object's place given, only its motion to draw); "two-stage" generates a 1-frame image from
    the caption first, then animates that.

    Returns color / shape / direction accuracy, `moving`: the share of clips whose object travels at all,
    and `travel`: the mean signed distance (frame widths/heights) it travels the asked way, which moves
    before direction accuracy does (truth travels ~0.2-0.5)."""
    if task not in PROBE_TASKS:
        raise ValueError(f"task={task!r} is not allowed; choose one of: {', '.join(PROBE_TASKS)}")
    sampling = dict(steps=steps, cfg=cfg)
    results, moving, travelled = [], [], []
    for i, item in enumerate(heldout(n, width, height, frames, seed + 7, **PROBE_SCENE)):
        if task == "t2v":
            video = pipe.generate(item["caption"], width, height, frames, seed=seed + i, **sampling)
        else:
            first = (video_to_frames(item["video"][None, :, :1]) if task == "i2v"
                     else pipe.generate(item["caption"], width, height, 1, seed=seed + 1000 + i, **sampling))
            video = pipe.animate(first, item["caption"], frames, seed=seed + i, **sampling)
        analysis = analyse_clip(to_uint8(video))
        results.append(score_against(Scene.from_dict(item["scene"]), analysis))
        moving.append(bool(analysis.tracks) and analysis.tracks[0].motion not in ("still", "grow", "shrink"))
        along = travel(analysis, item["scene"]["objects"][0]["motion"], width, height)
        travelled.append(0.0 if along is None else along)
    out = accuracies(results, ("color_ok", "shape_ok", "direction_ok"))
    out["moving"] = float(np.mean(moving))
    out["travel"] = float(np.mean(travelled))
    return out


def redraw(pipe: Pipeline, strengths, *, n: int = 16, width: int = 64, height: int = 64, frames: int = 17,
           steps: int = 20, cfg: float = 5.0, seed: int = 0) -> dict[str, dict[str, float]]:
    """Eval's text-to-video clips (the true ones) encoded, noised to each strength and redrawn from their
    detailed captions (`Pipeline.edit`, SDEdit), scored like text to video: how much of what the layout
    already holds the DiT keeps at each noise level (0: the VAE's round trip alone; 1: text to video).
    Low strengths judge the detail steps, high ones the layout steps, in about a minute per strength."""
    strengths = [check_strength(s) for s in strengths]
    items = heldout(n, width, height, frames, seed, occlusion=False)
    out = {}
    for s in strengths:
        results = [score_clip(item, pipe.edit(video_to_frames(item["video"][None]), item["caption"], strength=s,
                                              seed=seed + i, steps=steps, cfg=cfg))
                   for i, item in enumerate(items)]
        out[f"{s:g}"] = accuracies(results, ADHERENCE)
    return out


def text_to_video(pipe: Pipeline, n: int, width: int, height: int, frames: int, seed: int, sampling: dict,
                  each=None, plans: bool = True) -> list[dict[str, bool]]:
    """Eval's text-to-video clips: `n` held-out short prompts, each expanded by the recaptioner the way users'
    prompts are and generated with its own seed, scored against its scene (`score_clip`).
    `each(i, item, video, result)` sees every clip. `plans`: hand the recaptioner's planned scene to a model
    that reads layouts, as `generate` does (the caption is the same either way)."""
    items = heldout(n, width, height, frames, seed, occlusion=False)
    return _generate_and_score(pipe, items, width, height, frames, seed, sampling, each, plans)


def occlusion(pipe: Pipeline, n_prompts: int, width: int, height: int, seed: int, sampling: dict,
              each=None, plans: bool = True) -> list[dict[str, bool]]:
    """Eval's permanence clips: max(4, n_prompts // 2) held-out 33-frame scenes where one object passes behind
    another, generated from their expanded prompts and scored like `text_to_video`."""
    items = heldout(max(4, n_prompts // 2), width, height, 33, seed + 1, occlusion=True)
    return _generate_and_score(pipe, items, width, height, 33, seed, sampling, each, plans)


def _generate_and_score(pipe: Pipeline, items: list[dict], width: int, height: int, frames: int, seed: int,
                        sampling: dict, each, plans: bool) -> list[dict[str, bool]]:
    """Each held-out item's short prompt recaptioned and generated with seed + its index, then scored."""
    results = []
    for i, item in enumerate(items):
        caption, scene = plan(item["prompt"], seed=seed + i, frames=frames)
        video = pipe.generate(caption, width, height, frames, seed=seed + i, layout=scene if plans else None,
                              **sampling)
        results.append(score_clip(item, video))
        if each is not None:
            each(i, item, video, results[-1])
    return results


def sign_test(gained: int, lost: int) -> float:
    """Two-sided exact sign test: the chance of a split at least this uneven between clips one model gets
    right and the other wrong (`gained`) and back (`lost`), were the two models equally good."""
    n, k = gained + lost, min(gained, lost)
    if n == 0:
        return 1.0
    return min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n)


def versus(pipe: Pipeline, other: Pipeline, *, n: int = 96, width: int = 64, height: int = 64, frames: int = 17,
           steps: int = 20, cfg: float = 5.0, seed: int = 0, plans: bool = True, layout_cfg: float | None = None,
           log=print) -> dict[str, dict]:
    """Two models, clip by clip, on eval's text-to-video and permanence clips (the same prompts and seeds):
    per property, each one's accuracy (a: `pipe`, b: `other`), the clips b gets right and a wrong (`gained`)
    and back (`lost`), and the sign test's p of that split. At 32 prompts one model's clips flip both ways
    by the dozen with any change of weights (docs/training.md section 15), so compare on many.
    `layout_cfg` None: each model's own guidance toward its plan."""
    sampling = dict(steps=steps, cfg=cfg, layout_cfg=layout_cfg)
    runs = []
    for name, model in (("a", pipe), ("b", other)):
        runs.append((text_to_video(model, n, width, height, frames, seed, sampling, plans=plans),
                     occlusion(model, n, width, height, seed, sampling, plans=plans)))
        log(f"versus: model {name} done")
    out = {}
    for key, which in [(k, 0) for k in ADHERENCE] + [("permanence_ok", 1)]:
        a, b = ([r[key] for r in run[which]] for run in runs)
        gained = sum(y and not x for x, y in zip(a, b))
        lost = sum(x and not y for x, y in zip(a, b))
        out[key.replace("_ok", "")] = {"a": float(np.mean(a)), "b": float(np.mean(b)), "clips": len(a),
                                        "gained": gained, "lost": lost, "p": round(sign_test(gained, lost), 4)}
    return out


def evaluate(pipe: Pipeline, *, n_prompts: int = 16, width: int = 64, height: int = 64, frames: int = 17,
             steps: int = 20, cfg: float = 5.0, seed: int = 0, plans: bool = True, layout_cfg: float | None = None,
             log=print) -> tuple[dict, dict[str, list]]:
    """Every metric of the report card, and the clips behind them by capability (for `write_sheets`).
    `layout_cfg` None: the model's own guidance toward the plan."""
    sampling = dict(steps=steps, cfg=cfg, layout_cfg=layout_cfg)
    rows: dict[str, list] = {}
    metrics: dict[str, float] = {}

    # Text-to-video adherence, on short prompts expanded the way users' prompts are.
    start = time.time()

    def each_t2v(i: int, item: dict, video: torch.Tensor, result: dict) -> None:
        if i == 0:
            metrics["seconds_per_clip_cpu"] = round(time.time() - start, 2)
        rows.setdefault("text_to_video", []).append((item["prompt"], video))
        log(f"t2v {i + 1}/{n_prompts}: {item['prompt']!r} -> {result}")

    metrics["layout_plans"] = bool(plans and pipe.reads_layouts)  # whether the t2v rows had the plan
    metrics["layout_cfg"] = float(pipe.defaults.layout_cfg if layout_cfg is None else layout_cfg) \
        if metrics["layout_plans"] else 0.0  # and how hard they were guided toward it
    metrics.update(accuracies(text_to_video(pipe, n_prompts, width, height, frames, seed, sampling, each_t2v,
                                            plans), ADHERENCE))
    permanence = occlusion(pipe, n_prompts, width, height, seed, sampling,
                           lambda i, item, video, _: rows.setdefault("occlusion", []).append((item["prompt"], video)),
                           plans)
    metrics["permanence_acc"] = float(np.mean([r["permanence_ok"] for r in permanence]))
    log(f"permanence {metrics['permanence_acc']:.2f}")

    sources = heldout(4, width, height, frames, seed + 2)
    first_psnr, loop_r, ext_r, conn_r, drift = [], [], [], [], []
    for i, item in enumerate(sources):
        real = video_to_frames(item["video"][None])  # (T, H, W, 3) in [0, 1]
        prompt = item["caption"]
        animated = pipe.animate(real[:1], prompt, frames, seed=seed + i, **sampling)
        first_psnr.append(psnr(animated[0], real[0]))
        looped = pipe.loop(real, prompt, transition_frames=8, context_frames=8, seed=seed + i, **sampling)
        # the loop's seam is its last frame followed by its first
        wrapped = torch.cat([looped, looped[:1]])
        loop_r.append(seam_ratio(wrapped, len(looped) - 1))
        extended = pipe.extend(real, prompt, new_frames=16, context_frames=8, seed=seed + i, **sampling)
        ext_r.append(seam_ratio(extended, len(real) - 1))
        other = video_to_frames(sources[(i + 1) % len(sources)]["video"][None])
        joined = pipe.connect(real, other, prompt, transition_frames=16, context_frames=8, seed=seed + i, **sampling)
        conn_r.append(max(seam_ratio(joined, len(real) - 1), seam_ratio(joined, len(joined) - len(other) - 1)))
        chain = real
        for k in range(4):
            chain = pipe.extend(chain, prompt, new_frames=16, context_frames=8, seed=seed + 10 * i + k, **sampling)
        drift.append(float((border_colour(chain[-1]) - border_colour(real[0])).abs().mean() * 255))
        for name, clip in (("animate", animated), ("loop", looped), ("extend", extended), ("connect", joined),
                           ("extend_x4", chain)):
            rows.setdefault(name, []).append((prompt[:60], clip))
        log(f"capabilities {i + 1}/{len(sources)}")
    # Long video: 15 chained windows (drift control on, as shipped) from the first source clip; the worst
    # join against the median seam of a single extend (target <= 1.5: no join visibly worse than one extend).
    real = video_to_frames(sources[0]["video"][None])
    long_drift, long_seams, chain = long_chain(pipe, real, sources[0]["caption"], seed=seed, **sampling)
    rows["long"] = [(f"15 windows: {sources[0]['caption'][:40]}", chain)]
    log(f"long: drift {long_drift:.2f}/255, seams {[round(x, 1) for x in long_seams]}")
    metrics.update(
        long_drift=long_drift,
        long_seam_ratio=max(long_seams) / max(float(np.median(ext_r)), 1e-6),
        i2v_first_frame_psnr=float(np.mean(first_psnr)),
        loop_seam_ratio=float(np.mean(loop_r)),
        extend_seam_ratio=float(np.mean(ext_r)),
        connect_seam_ratio=float(np.mean(conn_r)),
        extend_drift=float(np.mean(drift)),
    )

    synthetic = [s["video"] for s in heldout(8, width, height, frames, seed + 3)]
    metrics["vae_psnr_synthetic"], metrics["vae_stutter"] = vae_round_trip(pipe, synthetic)
    metrics["vae_psnr_real"], _ = vae_round_trip(pipe, real_clips(frames, width * height))
    if metrics["vae_psnr_real"] is None:
        print("note: vae_psnr_real is null: no held-out real clips (pip install "
              "comfyui-workflow-templates-media-video)", file=sys.stderr)
    return {k: v if v is None or isinstance(v, bool) else round(v, 4) for k, v in metrics.items()}, rows


@torch.no_grad()
def vae_round_trip(pipe: Pipeline, videos: list[torch.Tensor]) -> tuple[float | None, float | None]:
    """Mean reconstruction PSNR (dB, frames in [0, 1]) and mean `stutter` of the VAE's round trips of
    (3, T, H, W) videos in [-1, 1], each video encoded and decoded once; None for no videos (stutter: no
    videos of more than one frame), the report's null: JSON has no NaN."""
    if not videos:
        return None, None
    vae = pipe.vae
    values, stutters = [], []
    for v in videos:
        x = v[None].to(pipe.device)
        recon = vae.decode(vae.encode(x))
        values.append(psnr((recon.clamp(-1, 1) + 1) / 2, (x + 1) / 2))
        if x.shape[2] > 1:  # an image has no steps between frames
            stutters.append(stutter(recon[0].float(), vae.temporal_factor))
    return float(np.mean(values)), float(np.mean(stutters)) if stutters else None


def stutter(video: torch.Tensor, temporal_factor: int) -> float:
    """Mean frame-to-frame change at the VAE's chunk boundaries over the mean change inside chunks, for a
    (3, T, H, W) video: ~1 for steady motion; a decoder that holds each chunk's frame and jumps to the
    next (motion at a quarter of the frame rate) scores far above 1."""
    step = (video[:, 1:] - video[:, :-1]).abs().mean(dim=(0, 2, 3))  # step i: frame i -> i + 1
    at = torch.arange(len(step)) % temporal_factor == 0  # frame 0 is a chunk of its own; then every tf
    if at.all() or not at.any():
        raise ValueError(f"a video of {video.shape[1]} frames has no steps both at and inside the chunks")
    return float(step[at].mean() / step[~at].mean().clamp(min=1e-6))


def real_clips(frames: int, area: int) -> list[torch.Tensor]:
    """The held-out real footage (animated WebPs of comfyui-workflow-templates-media-video, when
    installed; never used in training), resized to about `area` pixels at its own aspect ratio."""
    from ..data.real_clips import resize_to_area, split_template_clips
    from ..data.video_folder import frames_to_tensor
    from ..io import read_video

    out = []
    for path in split_template_clips()[1]:
        clip, _ = read_video(path, max_frames=frames)
        if len(clip) == frames:
            out.append(frames_to_tensor(resize_to_area(clip, area)))
    return out


def write_sheets(rows: dict[str, list], folder: Path) -> None:
    from .sheets import contact_sheet

    folder.mkdir(parents=True, exist_ok=True)
    for name, clips in rows.items():
        sheet = [(label, to_uint8(c)) for label, c in clips[:6]]
        contact_sheet(sheet, folder / f"{name}.png")
        contact_sheet(sheet, folder / f"{name}.gif")
    overview = [(name.replace("_", " "), to_uint8(clips[0][1])) for name, clips in rows.items()]
    contact_sheet(overview, folder / "overview.gif")  # one row per capability


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None, help="checkpoint (default: the shipped model)")
    p.add_argument("--prompts", type=int, default=16, help="held-out prompts for text-to-video adherence")
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--height", type=int, default=64)
    p.add_argument("--frames", type=int, default=17)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--cfg", type=float, default=5.0)
    p.add_argument("--layout-cfg", type=float, default=None,
                   help="guidance toward the plan for a model that reads layouts (default: the model's own, 2)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sheets", default="eval_sheets", help="folder for the contact sheets")
    p.add_argument("--probe", action="store_true",
                   help="only the quick probe (one object sliding in four directions): about a minute")
    p.add_argument("--probe-task", choices=PROBE_TASKS, default="t2v",
                   help="the probe's task: from the caption alone, animating the held-out first frame (i2v), "
                        "or a generated image then animated (two-stage)")
    p.add_argument("--redraw", default=None, metavar="STRENGTHS",
                   help="only redraw eval's true text-to-video clips from noise levels, e.g. 0,0.3,0.5,0.7 "
                        "(SDEdit; 0: the VAE alone): what the DiT keeps of a given layout, about a minute each")
    p.add_argument("--versus", default=None, metavar="CHECKPOINT",
                   help="only compare --model (a) with this checkpoint (b) clip by clip on text to video and "
                        "permanence: accuracies, clips gained and lost, the sign test's p (use --prompts 96 or more)")
    p.add_argument("--no-plans", action="store_true",
                   help="text to video and permanence from the caption alone: no planned layout even for a model "
                        "that reads one (what the model does without the recaptioner's plan)")


def run(args: argparse.Namespace) -> int:
    strengths = None
    if args.redraw is not None:  # checked before the model loads
        try:
            strengths = [check_strength(float(v)) for v in args.redraw.split(",")]
        except ValueError:
            raise ValueError(f"--redraw={args.redraw!r} is not allowed: use comma-separated numbers from 0 to 1, "
                             f"e.g. 0,0.3,0.5,0.7") from None
    if args.versus is not None and not Path(args.versus).is_file():  # checked before the model loads
        raise ValueError(f"--versus={args.versus!r} is not allowed: no such checkpoint file")
    torch.manual_seed(args.seed)
    pipe = Pipeline.load(args.model)
    if args.versus is not None:
        print(json.dumps(versus(pipe, Pipeline.load(args.versus), n=args.prompts, width=args.width,
                                height=args.height, frames=args.frames, steps=args.steps, cfg=args.cfg,
                                seed=args.seed, plans=not args.no_plans, layout_cfg=args.layout_cfg),
                         sort_keys=True))
        return 0
    if strengths is not None:
        print(json.dumps(redraw(pipe, strengths, n=args.prompts, width=args.width, height=args.height,
                                frames=args.frames, steps=args.steps, cfg=args.cfg, seed=args.seed), sort_keys=True))
        return 0
    if args.probe:
        print(json.dumps(probe(pipe, n=args.prompts, width=args.width, height=args.height, frames=args.frames,
                               steps=args.steps, cfg=args.cfg, seed=args.seed, task=args.probe_task),
                         sort_keys=True))
        return 0
    metrics, rows = evaluate(pipe, n_prompts=args.prompts, width=args.width, height=args.height,
                             frames=args.frames, steps=args.steps, cfg=args.cfg, seed=args.seed,
                             plans=not args.no_plans, layout_cfg=args.layout_cfg)
    report = json.dumps(metrics, sort_keys=True)
    print(report, flush=True)  # the report first: nothing after this can lose it
    try:
        write_sheets(rows, Path(args.sheets))
    except Exception as err:  # noqa: BLE001 - sheets are a convenience; the report stands without them
        print(f"warning: contact sheets not written to {args.sheets}: {err}", file=sys.stderr)
    print(report)  # and last, as the last line, for scripts that read it
    return 0
