"""Does the DiT read the direction word? Its one-step prediction with the word as is and swapped.

For the probe's held-out clips (one object sliding left / right / up / down on a plain backdrop,
64x64x17), the clip's latents are noised to time t and the DiT predicts the clean clip (x0 = x_t - t v)
twice: from the clip's own detailed caption, and from the same caption with the motion's word swapped
for its opposite ("moves to the left" -> "moves to the right"). Each prediction is decoded and eval's
detector measures how far the object travels the true way (frame widths; the clips themselves travel
0.2-0.5). Near t = 1 the noisy clip says almost nothing about the motion, so a model that uses the
word predicts travel > 0 as is and < 0 swapped; one that ignores it predicts the same either way.
Near t = 1 the predictions are blurred and the detector often finds no object, so each line also
gives how much a swap changes the prediction at all (mean abs pixel change, x255), for the direction
word and, as the yardstick, for the object's colour word ("red" -> another colour).
No sampling, so it takes about a minute on a CPU. Prints one line per t, then JSON.

    python benchmarks/motion_words.py                           # the shipped model
    python benchmarks/motion_words.py --model runs/dit/model.safetensors --clips 32
"""

from __future__ import annotations

import argparse
import json
import re

import numpy as np
import torch

from sora_core.checkpoint import load_checkpoint
from sora_core.conditioning import video_to_frames
from sora_core.data.world import PALETTE
from sora_core.eval.detector import analyse_clip
from sora_core.eval.run import PROBE_SCENE, heldout, travel
from sora_core.io import to_uint8_frames
from sora_core.pipeline import default_model_path
from sora_core.text import tokenize

OPPOSITE = {"left": "right", "right": "left", "up": "down", "down": "up"}


def swap_motion_word(caption: str, motion: str) -> str | None:
    """The caption with the last mention of `motion` ("left", "leftward", ...) turned into its opposite:
    the sentence saying where the object goes comes after the one saying where it starts."""
    found = list(re.finditer(rf"\b{motion}(ward)?\b", caption))
    if not found:
        return None
    last = found[-1]
    return caption[: last.start()] + OPPOSITE[motion] + (last.group(1) or "") + caption[last.end():]


def clip_travel(video: torch.Tensor, motion: str) -> float | None:
    """eval's `travel` of a (3, T, H, W) clip in [-1, 1]: how far its object moves the `motion` way."""
    analysis = analyse_clip(to_uint8_frames(video_to_frames(video[None])))
    return travel(analysis, motion, video.shape[-1], video.shape[-2])


@torch.no_grad()
def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="checkpoint (default: the shipped model)")
    p.add_argument("--clips", type=int, default=16)
    p.add_argument("--times", default="0.98,0.9,0.7")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    times = [float(t) for t in args.times.split(",")]
    model = load_checkpoint(args.model or default_model_path()).eval()
    text_cfg = model.config.text
    gen = torch.Generator().manual_seed(0)
    rows = {t: {"as_is": [], "swapped": [], "change_direction": [], "change_colour": []} for t in times}
    colours = list(PALETTE)
    truth = []
    for item in heldout(args.clips, 64, 64, 17, 7, **PROBE_SCENE):
        motion = item["scene"]["objects"][0]["motion"]
        swapped = swap_motion_word(item["caption"], motion)
        if swapped is None:
            continue
        colour = item["scene"]["objects"][0]["color"]
        recoloured = None
        if colour not in item["scene"]["background"]:  # "green" is also in "forest green": skip those
            other = colours[(colours.index(colour) + 1) % len(colours)]
            recoloured = re.sub(rf"\b{colour}\b", other, item["caption"])
        video = item["video"][None]
        truth.append(clip_travel(item["video"], motion))
        z = model.vae.encode(video)
        noise = torch.randn(z.shape, generator=gen)
        for t in times:
            xt = (1 - t) * z + t * noise
            decoded = {}
            for key, caption in (("as_is", item["caption"]), ("swapped", swapped), ("recoloured", recoloured)):
                if caption is None:
                    continue
                ids, mask = tokenize([caption], text_cfg.vocab_size, text_cfg.max_tokens)
                v = model.dit(xt, torch.full((1, z.shape[2]), t), model.text(ids, mask), mask)
                decoded[key] = model.vae.decode(xt - t * v)[0].clamp(-1, 1)
            for key in ("as_is", "swapped"):
                rows[t][key].append(clip_travel(decoded[key], motion))
            change = lambda key: float((decoded[key] - decoded["as_is"]).abs().mean() * 127.5)  # [-1, 1] -> x255
            rows[t]["change_direction"].append(change("swapped"))
            if "recoloured" in decoded:
                rows[t]["change_colour"].append(change("recoloured"))
    mean = lambda xs: float(np.mean([x for x in xs if x is not None])) if any(x is not None for x in xs) else None
    report = {"clips": len(truth), "truth_travel": mean(truth)}
    for t, r in rows.items():
        a, s = mean(r["as_is"]), mean(r["swapped"])
        found = sum(x is not None for x in r["as_is"] + r["swapped"])
        cd, cc = mean(r["change_direction"]), mean(r["change_colour"])
        print(f"t={t}: travel the true way, caption as is {a:+.3f}, direction word swapped {s:+.3f} "
              f"(object found in {found} of {2 * len(r['as_is'])} predictions; the clips: {report['truth_travel']:+.3f}); "
              f"a swap changes the prediction by {cd:.2f} (direction word) vs {cc:.2f} (colour word) /255")
        report[f"t{t}"] = {"as_is": a, "swapped": s, "word_effect": None if a is None or s is None else a - s,
                           "change_direction": cd, "change_colour": cc}
    print(json.dumps(report))


if __name__ == "__main__":
    main()
