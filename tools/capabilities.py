"""docs/capabilities.png: one row per capability of the report, made with the shipped model.

    python tools/capabilities.py                # -> docs/capabilities.png
    python tools/capabilities.py --model F --out sheet.png

Sources are held-out synthetic scenes (never trained on); every row uses the library calls an
artist's workflow runs, at the default size, 20 steps, cfg 5.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sora_core.conditioning import video_to_frames  # noqa: E402
from sora_core.data.synthetic import heldout_clip  # noqa: E402
from sora_core.eval.sheets import contact_sheet  # noqa: E402
from sora_core.pipeline import Pipeline  # noqa: E402
from sora_core.recaption import plan  # noqa: E402


def clip(index: int):
    item = heldout_clip(index, 64, 64, 17, seed=7)
    return video_to_frames(item["video"][None]), item["caption"]  # (T, H, W, 3) in [0, 1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="checkpoint (default: the shipped model)")
    p.add_argument("--out", default=str(REPO / "docs" / "capabilities.png"))
    args = p.parse_args()
    pipe = Pipeline.load(args.model)
    a, caption = clip(0)
    b, _ = clip(1)
    s = dict(steps=20, cfg=5.0, seed=1)

    def generate(prompt: str, **size):  # as `python -m sora_core generate` does: recaptioned, with its layout
        detailed, layout = plan(prompt, seed=s["seed"], frames=size.get("frames", pipe.defaults.frames))
        return pipe.generate(detailed, layout=layout, **size, **s)

    rows = [
        ("text to video: a pink ball moving right on navy", generate("a pink ball moving right on navy")),
        ("text to image, 16:9", generate("a blue square and an orange star on gray with stripes",
                                         width=112, height=64, frames=1)),
        ("animate image (first frame given)", pipe.animate(a[:1], caption, 17, **s)),
        ("extend forward (source = first 17)", pipe.extend(a, caption, new_frames=16, **s)),
        ("extend backward (source = last 17)", pipe.extend(a, caption, new_frames=16, direction="backward", **s)),
        ("seamless loop (clip + transition)", pipe.loop(a, caption, transition_frames=8, **s)),
        ("connect A -> transition -> B", pipe.connect(a, b, caption, transition_frames=16, **s)),
        ("SDEdit 0.6: 'a green star'", pipe.edit(a, "a green star", strength=0.6, **s)),
    ]
    contact_sheet(rows, args.out, cell_height=64)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
