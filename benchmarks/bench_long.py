"""Long video: colour drift and seams over chained windows, for every drift control.

For each held-out source clip (64x64, 17 frames, as eval uses them) and each `--drift` mode,
`--windows` windows are chained onto the clip with `sora_core.long.LongVideo`. Printed per run:
the colour drift after the last window (mean abs RGB change x 255 of the static background,
`eval.run.border_colour`, the last window's frames against the clip's: `eval.run.long_chain`),
the same between the last and the first frame alone ("1 frame": it includes flicker), the drift
after every window, the seam ratio at every join (`long.seam_ratio`) and the worst join over
the median seam of single extends of the same clips (the issue's targets: drift <= 2/255, worst
join <= 1.5x). "join/chunk" is the largest frame-to-frame jump at a join over the median jump
between the 4-frame VAE chunks inside the windows: about 1 means the joins are no more visible
than the chunk boundaries every window has anyway. The last line is JSON with every figure, so
a retrained model is compared by re-running this. Windows are redrawn as `LongVideo` does by default
(`--retries`, `--seam-limit`; `--retries 0` for a single draw per window).

    python benchmarks/bench_long.py                          # the shipped model, 2 clips, 15 windows
    python benchmarks/bench_long.py --model runs/dit/model.safetensors --sources 4
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from sora_core.conditioning import video_to_frames
from sora_core.eval.run import background_drift, border_colour, heldout, long_chain
from sora_core.long import DRIFT, OVERLAP, RETRIES, SEAM_LIMIT, seam_ratio
from sora_core.pipeline import Pipeline


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="checkpoint (default: the shipped model)")
    p.add_argument("--sources", type=int, default=2, help="held-out source clips")
    p.add_argument("--windows", type=int, default=15)
    p.add_argument("--drift", nargs="+", default=list(DRIFT[::-1]), choices=DRIFT)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--cfg", type=float, default=5.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--retries", type=int, default=RETRIES, help="redraws of a window whose join jumps (LongVideo)")
    p.add_argument("--seam-limit", type=float, default=SEAM_LIMIT, help="the jump that triggers a redraw (LongVideo)")
    p.add_argument("--overlap", type=int, default=OVERLAP,
                   help="held frames each window draws again and crossfades into (LongVideo overlap_frames)")
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    pipe = Pipeline.load(args.model)
    sampling = dict(steps=args.steps, cfg=args.cfg)
    items = heldout(args.sources, 64, 64, 17, args.seed + 2)  # eval's capability sources
    clips = [(video_to_frames(it["video"][None]), it["caption"]) for it in items]

    # The reference: the seam of one extend of each clip, over three seeds.
    single = []
    for i, (clip, prompt) in enumerate(clips):
        for s in range(3):
            out = pipe.extend(clip, prompt, new_frames=16, context_frames=8, seed=args.seed + 100 * i + s, **sampling)
            single.append(seam_ratio(out, len(clip) - 1))
    median = float(np.median(single))
    print(f"single extend seam ratio: median {median:.2f} over {len(single)} ({', '.join(f'{x:.1f}' for x in single)})")

    report = {"single_extend_seam_median": round(median, 3), "windows": args.windows, "runs": {}}
    print(f"{'drift':>8} {'clip':>4} {'drift/255':>9} {'1 frame':>9} {'worst seam':>10} {'worst/single':>12} "
          f"{'join/chunk':>11} {'s':>5}  drift after each window | seam at each join")
    for mode in args.drift:
        drifts, worst = [], []
        for i, (clip, prompt) in enumerate(clips):
            start = time.time()
            drift, seams, frames = long_chain(pipe, clip, prompt, windows=args.windows, drift=mode,
                                              seed=args.seed + 100 * i, retries=args.retries,
                                              seam_limit=args.seam_limit, overlap_frames=args.overlap, **sampling)
            # after each window: its frames' background against the clip's (what `drift` is after the last)
            curve = [background_drift(frames[: len(clip) + 16 * (k + 1)], len(clip), 16) for k in range(args.windows)]
            one_frame = float((border_colour(frames[-1]) - border_colour(frames[0])).abs().mean() * 255)
            # the jump at a join against the jumps between the 4-frame chunks inside the windows
            jumps = (frames[1:] - frames[:-1]).abs().mean(dim=(1, 2, 3))
            joins = list(range(len(clip) - 1, len(jumps), 16))
            inner = [d for d in range(len(clip) + 3, len(jumps), 4) if (d + 1 - len(clip)) % 16]
            at_joins = [float(jumps[j - args.overlap : j + 1].max()) for j in joins]  # a crossfade's worst step
            chunk = max(at_joins) / max(float(jumps[inner].median()), 1e-6)
            drifts.append(drift)
            worst.append(max(seams))
            print(f"{mode:>8} {i:>4} {drift:>9.2f} {one_frame:>9.2f} {max(seams):>10.2f} {max(seams) / median:>12.2f} "
                  f"{chunk:>11.2f} {time.time() - start:>5.0f}  {' '.join(f'{c:.1f}' for c in curve)} | "
                  f"{' '.join(f'{x:.1f}' for x in seams)}", flush=True)
            report["runs"].setdefault(mode, []).append(
                {"clip": i, "drift": round(drift, 3), "drift_last_frame": round(one_frame, 3),
                 "worst_join_over_chunk_boundary": round(chunk, 3),
                 "drift_curve": [round(c, 2) for c in curve], "seams": [round(x, 2) for x in seams]})
        report.setdefault("summary", {})[mode] = {
            "drift_mean": round(float(np.mean(drifts)), 3), "drift_max": round(float(max(drifts)), 3),
            "worst_seam_over_single_median": round(float(max(worst)) / median, 3)}
        print(f"{mode:>8}  drift mean {np.mean(drifts):.2f}/255 (max {max(drifts):.2f}), worst join "
              f"{max(worst) / median:.2f}x the median single-extend seam", flush=True)
    print(json.dumps(report, sort_keys=True))


if __name__ == "__main__":
    main()
