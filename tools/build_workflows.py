"""Writes workflows/*.json: one UI-format ComfyUI workflow per capability of the Sora report.

    /work/venv/bin/python tools/build_workflows.py

Each workflow uses only this pack's nodes and core nodes and makes its own inputs (a clip is
generated first, then extended, looped, ...), so it runs with nothing but the default model.
Widget values are given by name and written in the order the frontend saves them; nodes are
laid out left to right in columns by their place in the graph.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nodes import NODE_CLASS_MAPPINGS  # noqa: E402

OUT = ROOT / "workflows"

# Sizes for the default model (trained around 64x64 pixels, up to 17 frames).
VIDEO = dict(width=64, height=64, frames=17)
IMAGE_SIDE = 128  # text_to_image: the largest square the default model draws well
STEPS, CFG, FPS = 20, 5.0, 8.0
MODEL_FILE = "sora-tiny.safetensors"

WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN"}
MULTILINE = {"text", "prompt"}  # text boxes: drawn much taller than one-line widgets

# Core nodes used here: (socket inputs, widget names in frontend order, outputs), as ComfyUI 0.33's
# /object_info gives them (its save nodes pass their images through).
CORE = {
    "SaveAnimatedWEBP": ([("images", "IMAGE")], ["filename_prefix", "fps", "lossless", "quality", "method"],
                         [("images", "IMAGE")]),
    "SaveImage": ([("images", "IMAGE")], ["filename_prefix"], [("images", "IMAGE")]),
    "PreviewImage": ([("images", "IMAGE")], [], [("images", "IMAGE")]),
    "ImageScale": ([("image", "IMAGE")], ["upscale_method", "width", "height", "crop"], [("IMAGE", "IMAGE")]),
    "MarkdownNote": ([], ["text"], []),
}
CORE_DEFAULTS = {
    "SaveAnimatedWEBP": {"fps": FPS, "lossless": False, "quality": 90, "method": "default"},
    "ImageScale": {"upscale_method": "bicubic", "crop": "disabled"},
}

CAPTION = ("A video clip of a medium-sized red circle on a navy background. Starting near the left edge, the "
           "medium-sized red circle moves steadily to the right. The shot is static, with no camera movement.")


def _is_widget(spec) -> bool:
    kind = spec[0]
    opts = spec[1] if len(spec) > 1 else {}
    return (isinstance(kind, list) or kind in WIDGET_TYPES) and not opts.get("forceInput")


def describe(node_type: str):
    """(socket inputs [(name, type)], widgets [(name, control_after_generate)], outputs [(name, type)])."""
    if node_type in CORE:
        sockets, widgets, outputs = CORE[node_type]
        return sockets, [(w, False) for w in widgets], outputs
    cls = NODE_CLASS_MAPPINGS[node_type]
    spec = cls.INPUT_TYPES()
    sockets, widgets = [], []
    for section in ("required", "optional"):
        for name, s in spec.get(section, {}).items():
            if _is_widget(s):
                widgets.append((name, bool(len(s) > 1 and s[1].get("control_after_generate"))))
            else:
                sockets.append((name, s[0]))
    names = getattr(cls, "RETURN_NAMES", None) or cls.RETURN_TYPES
    return sockets, widgets, list(zip(names, cls.RETURN_TYPES))


def default_widgets(node_type: str) -> dict:
    if node_type in CORE:
        return dict(CORE_DEFAULTS.get(node_type, {}))
    out = {}
    for section in ("required", "optional"):
        for name, s in NODE_CLASS_MAPPINGS[node_type].INPUT_TYPES().get(section, {}).items():
            if _is_widget(s):
                opts = s[1] if len(s) > 1 else {}
                out[name] = opts.get("default", s[0][0] if isinstance(s[0], list) else "")
    return out


class Node:
    def __init__(self, node_id: int, node_type: str, title: str | None, widgets: dict):
        self.id, self.type, self.title = node_id, node_type, title
        self.sockets, self.widget_specs, self.output_specs = describe(node_type)
        values = default_widgets(node_type)
        unknown = set(widgets) - {w for w, _ in self.widget_specs}
        if unknown:
            raise KeyError(f"{node_type} has no widgets {sorted(unknown)}")
        values.update(widgets)
        self.values = values
        self.links_in: dict[str, int] = {}  # input name -> link id
        self.widget_links: dict[str, tuple[int, str]] = {}  # widget name -> (link id, type)
        self.links_out: dict[int, list[int]] = {}

    def __getitem__(self, slot: int | str) -> tuple["Node", int]:
        if isinstance(slot, str):
            slot = [name for name, _ in self.output_specs].index(slot)
        return self, slot

    def widgets_values(self) -> list:
        out = []
        for name, control in self.widget_specs:
            out.append(self.values[name])
            if control:
                out.append("fixed")  # the frontend's control_after_generate; fixed keeps the example reproducible
        return out


class Graph:
    def __init__(self, title: str, note: str):
        self.title = title
        self.nodes: list[Node] = []
        self.links: list[list] = []
        self.note = note

    def add(self, node_type: str, *, title: str | None = None, **kwargs) -> Node:
        """kwargs: widget values by name, or (node, slot) pairs for inputs (a widget given a pair becomes an input)."""
        node = Node(len(self.nodes) + 1, node_type, title, {k: v for k, v in kwargs.items() if not isinstance(v, tuple)})
        self.nodes.append(node)
        for name, value in kwargs.items():
            if isinstance(value, tuple):
                self.connect(value, node, name)
        return node

    def connect(self, source: tuple[Node, int], target: Node, name: str) -> None:
        """A link [id, from node, from slot, to node, to slot, type]. The target's input slots are its
        sockets, then the widgets turned into inputs by a link, in the order they were linked."""
        src, slot = source
        link_type = src.output_specs[slot][1]
        link_id = len(self.links) + 1
        sockets = [s for s, _ in target.sockets]
        if name in sockets:
            target.links_in[name] = link_id
            to_slot = sockets.index(name)
        elif name in dict(target.widget_specs):
            to_slot = len(sockets) + len(target.widget_links)
            target.widget_links[name] = (link_id, link_type)
        else:
            raise KeyError(f"{target.type} has no input {name!r}")
        self.links.append([link_id, src.id, slot, target.id, to_slot, link_type])
        src.links_out.setdefault(slot, []).append(link_id)

    # -- layout ---------------------------------------------------------------------------
    def _columns(self) -> dict[int, int]:
        """Column of each node: its longest path from a source, then moved right to sit just before
        its first consumer (so a prompt sits next to the sampler that uses it)."""
        column = {n.id: 0 for n in self.nodes}
        for _ in self.nodes:  # longest path from a source; the graphs are small
            for link in self.links:
                column[link[3]] = max(column[link[3]], column[link[1]] + 1)
        for n in sorted(self.nodes, key=lambda n: -column[n.id]):
            consumers = [link[3] for link in self.links if link[1] == n.id]
            if consumers:
                column[n.id] = min(column[c] for c in consumers) - 1
        return column

    @staticmethod
    def _size(node: Node) -> list[int]:
        if node.type in ("SaveAnimatedWEBP", "SaveImage", "PreviewImage"):
            return [340, 400]
        text_boxes = [w for w, _ in node.widget_specs if w in MULTILINE and w not in node.widget_links]
        rows = len(node.widget_specs) + sum(control for _, control in node.widget_specs) - len(text_boxes)
        slots = max(len(node.sockets) + len(node.widget_links), len(node.output_specs), 1)
        return [420 if text_boxes else 330, 30 + 22 * slots + 26 * rows + 140 * len(text_boxes)]

    def to_json(self) -> dict:
        column = self._columns()
        note_text = f"# {self.title}\n\n{self.note}"
        note_height = 80 + 22 * (note_text.count("\n") + len(note_text) // 60)
        placed: dict[int, tuple[list[int], list[int]]] = {}
        x = 40
        for col in sorted(set(column.values())):
            def place_in_column(n: Node) -> tuple:
                """Below the average height of its sources (keeps links short and uncrossed), then in the
                order of the inputs it feeds (a sampler's positive prompt above its negative one)."""
                ys = [placed[link[1]][0][1] for link in self.links if link[3] == n.id and link[1] in placed]
                feeds = min(((link[3], link[4]) for link in self.links if link[1] == n.id), default=(0, 0))
                return (sum(ys) / len(ys) if ys else 0.0, feeds, n.id)

            y, width = 80 + note_height, 0
            for n in sorted((n for n in self.nodes if column[n.id] == col), key=place_in_column):
                size = self._size(n)
                placed[n.id] = ([x, y], size)
                y += size[1] + 50
                width = max(width, size[0])
            x += width + 60
        nodes_json = []
        order = {n.id: i for i, n in enumerate(sorted(self.nodes, key=lambda n: (column[n.id], n.id)))}
        for n in self.nodes:
            pos, size = placed[n.id]
            inputs = [{"name": name, "type": kind, "link": n.links_in.get(name)} for name, kind in n.sockets]
            inputs += [{"name": name, "type": kind, "widget": {"name": name}, "link": link}
                       for name, (link, kind) in n.widget_links.items()]
            outputs = [{"name": name, "type": kind, "links": n.links_out.get(i) or None, "slot_index": i}
                       for i, (name, kind) in enumerate(n.output_specs)]
            entry = {"id": n.id, "type": n.type, "pos": pos, "size": size, "flags": {}, "order": order[n.id] + 1,
                     "mode": 0, "inputs": inputs, "outputs": outputs,
                     "properties": {"Node name for S&R": n.type}, "widgets_values": n.widgets_values()}
            if n.title:
                entry["title"] = n.title
            nodes_json.append(entry)
        note_id = len(self.nodes) + 1
        nodes_json.insert(0, {"id": note_id, "type": "MarkdownNote", "pos": [40, 40], "size": [min(900, x - 100), note_height],
                              "flags": {}, "order": 0, "mode": 0, "inputs": [], "outputs": [], "title": self.title,
                              "properties": {}, "widgets_values": [note_text], "color": "#432", "bgcolor": "#653"})
        return {"last_node_id": note_id, "last_link_id": len(self.links), "nodes": nodes_json, "links": self.links,
                "groups": [], "config": {}, "extra": {"ds": {"scale": 0.8, "offset": [0, 0]}}, "version": 0.4}


# -- building blocks ------------------------------------------------------------------------------

def load(g: Graph):
    loader = g.add("SoraModelLoader", ckpt_name=MODEL_FILE)
    negative = g.add("SoraTextEncode", title="Negative prompt", text_encoder=loader["text_encoder"], text="")
    return loader, negative


def prompt(g: Graph, loader: Node, text: str, title: str = "Positive prompt") -> Node:
    return g.add("SoraTextEncode", title=title, text_encoder=loader["text_encoder"], text=text)


def sample(g: Graph, loader: Node, positive: Node, negative: Node, latent, seed: int, title: str | None = None, **kw) -> Node:
    settings = dict(seed=seed, steps=STEPS, cfg=CFG, shift=0.0, sampler="euler", denoise=1.0) | kw
    return g.add("SoraDiTSampler", title=title, model=loader["model"], positive=positive[0], negative=negative[0],
                 latent=latent, **settings)


def decode(g: Graph, loader: Node, latent: Node, title: str | None = None) -> Node:
    return g.add("SoraVAEDecode", title=title, vae=loader["vae"], latent=latent[0])


def generate(g: Graph, loader: Node, positive: Node, negative: Node, seed: int, title: str = "Generate a clip",
             **grid) -> Node:
    """Text to video, decoded: the source clip the other capabilities start from."""
    size = dict(aspect_ratio="custom", long_side=64, batch_size=1) | VIDEO | grid
    latent = g.add("SoraPatchifyGrid", vae=loader["vae"], **size)
    return decode(g, loader, sample(g, loader, positive, negative, latent[0], seed, title=title))


def save(g: Graph, images: Node, prefix: str, title: str | None = None) -> Node:
    return g.add("SaveAnimatedWEBP", title=title, images=images[0], filename_prefix=f"sora/{prefix}")


# -- the workflows --------------------------------------------------------------------------------

def text_to_video() -> Graph:
    g = Graph("Text to video", "A caption becomes a 17-frame video. **Patchify Grid** sets the size and length "
              "(any width, height and duration, frames = 1 + 4k); the **DiT Sampler** denoises the grid of "
              "spacetime patches; the **VAE Decode** turns latents into frames.\n\nDetailed captions work best: "
              "see the recaption workflow for turning a short prompt into one.")
    loader, neg = load(g)
    save(g, generate(g, loader, prompt(g, loader, CAPTION), neg, seed=1, title="Sample"), "text_to_video")
    return g


def text_to_image() -> Graph:
    g = Graph("Text to image", f"An image is a one-frame video: the same model, **frames = 1**, at "
              f"{IMAGE_SIDE}x{IMAGE_SIDE}, the largest size the default model draws well.")
    loader, neg = load(g)
    text = ("An image of a large yellow star and a small blue square on a light gray background. The large yellow "
            "star sits in the center. The small blue square sits near the top left.")
    still = generate(g, loader, prompt(g, loader, text), neg, seed=7, title="Sample",
                     width=IMAGE_SIDE, height=IMAGE_SIDE, frames=1)
    g.add("SaveImage", images=still[0], filename_prefix="sora/text_to_image")
    return g


def aspect_ratios() -> Graph:
    g = Graph("Aspect ratios", "One prompt and one seed at three shapes: **16:9 widescreen, 9:16 vertical and "
              "1:1 square**. The model was trained on native aspect ratios, so each framing keeps the subject "
              "in view instead of cropping it. Pick the ratio and the long side in **Patchify Grid**.")
    loader, neg = load(g)
    pos = prompt(g, loader, CAPTION)
    for ratio, long_side, name in (("16:9", 88, "widescreen"), ("9:16", 88, "vertical"), ("1:1", 64, "square")):
        latent = g.add("SoraPatchifyGrid", vae=loader["vae"], aspect_ratio=ratio, long_side=long_side,
                       frames=VIDEO["frames"])
        frames = decode(g, loader, sample(g, loader, pos, neg, latent[0], seed=3, title=f"Sample {ratio}"))
        save(g, frames, f"aspect_{name}", title=f"{ratio} {name}")
    return g


def prototype_then_full_res() -> Graph:
    g = Graph("Prototype at low resolution, then full resolution",
              "Try prompts and seeds quickly at low resolution, then render the one you like at full size with "
              "the **same seed**: the prototype is upscaled (core **Image Scale**), encoded, partly re-noised by "
              "**SDEdit Noise** (strength = how much may change) and sampled again at full resolution.")
    loader, neg = load(g)
    pos = prompt(g, loader, CAPTION)
    seed = 5
    small = generate(g, loader, pos, neg, seed=seed, title="Prototype (32x32)", width=32, height=32)
    g.add("PreviewImage", title="Prototype", images=small[0])
    big = g.add("ImageScale", image=small[0], width=VIDEO["width"], height=VIDEO["height"])
    latent = g.add("SoraVAEEncode", vae=loader["vae"], images=big[0])
    noised = g.add("SoraSDEditNoise", latent=latent[0], strength=0.6, seed=seed)
    full = decode(g, loader, sample(g, loader, pos, neg, noised[0], seed=seed, title="Full resolution"))
    save(g, full, "prototype_full_res", title="Full resolution")
    return g


def animate_image() -> Graph:
    g = Graph("Animate an image", "Image to video: a still image becomes the **first frame** of a video (or the "
              "last: set position). Here the still is generated in the same graph; to animate your own picture, "
              "replace it with core **Load Image** (scaled to a multiple of 8 pixels).")
    loader, neg = load(g)
    still_text = ("An image of a medium-sized green triangle on a beige background. The medium-sized green "
                  "triangle sits near the left edge.")
    still = generate(g, loader, prompt(g, loader, still_text, "Image prompt"), neg, seed=11,
                     title="Generate the still", frames=1)
    g.add("PreviewImage", title="The still", images=still[0])
    motion = ("A video clip of a medium-sized green triangle on a beige background. Starting near the left edge, "
              "the medium-sized green triangle slides steadily to the right. The shot is static, with no camera "
              "movement.")
    latent = g.add("SoraAnimateImage", vae=loader["vae"], image=still[0], frames=VIDEO["frames"], position="first")
    video = decode(g, loader, sample(g, loader, prompt(g, loader, motion, "Video prompt"), neg, latent[0], seed=12,
                                     title="Animate"))
    save(g, video, "animate_image")
    return g


def extend_forward() -> Graph:
    g = Graph("Extend a video forward", "Continues a clip: **Extend** (forward) gives the model the clip's last "
              "frames as fixed context and generates 16 new ones after them. **VAE Decode** returns the whole "
              "clip with the new frames appended (17 + 16 = 33 frames); the original frames are untouched.")
    loader, neg = load(g)
    pos = prompt(g, loader, CAPTION)
    clip = generate(g, loader, pos, neg, seed=21)
    latent = g.add("SoraExtend", vae=loader["vae"], video=clip[0], direction="forward", new_frames=16, context_frames=8)
    longer = decode(g, loader, sample(g, loader, pos, neg, latent[0], seed=22, title="Extend"))
    save(g, clip, "extend_source", title="Source clip")
    save(g, longer, "extend_forward", title="Extended clip")
    return g


def extend_backward() -> Graph:
    g = Graph("Extend a video backward: many beginnings, one ending",
              "As in the Sora report, one clip extended **backward in time** with three different seeds: three "
              "different beginnings that all lead into the same ending. Each output is 16 new frames followed by "
              "the unchanged clip.")
    loader, neg = load(g)
    pos = prompt(g, loader, CAPTION)
    clip = generate(g, loader, pos, neg, seed=31, title="Generate the ending")
    save(g, clip, "extend_backward_ending", title="The shared ending")
    latent = g.add("SoraExtend", vae=loader["vae"], video=clip[0], direction="backward", new_frames=16, context_frames=8)
    for seed in (32, 33, 34):
        video = decode(g, loader, sample(g, loader, pos, neg, latent[0], seed=seed, title=f"Beginning, seed {seed}"))
        save(g, video, f"extend_backward_seed{seed}", title=f"Seed {seed}")
    return g


def seamless_loop() -> Graph:
    g = Graph("Seamless infinite loop", "**Loop** generates a transition from the clip's last frames back to its "
              "first frames. The output (clip + transition) plays on repeat without a jump.")
    loader, neg = load(g)
    pos = prompt(g, loader, CAPTION)
    clip = generate(g, loader, pos, neg, seed=41)
    latent = g.add("SoraLoop", vae=loader["vae"], video=clip[0], transition_frames=8, context_frames=8)
    looped = decode(g, loader, sample(g, loader, pos, neg, latent[0], seed=42, title="Close the loop"))
    save(g, looped, "seamless_loop", title="Loop (plays on repeat)")
    return g


def video_to_video_sdedit() -> Graph:
    g = Graph("Video to video (SDEdit)", "Edits a video with a new prompt while keeping its layout and motion: "
              "**VAE Encode**, then **SDEdit Noise** noises it part-way (strength 0 = keep, 1 = ignore the "
              "input) and the sampler re-draws it following the new prompt. To edit your own video, load it "
              "(e.g. core Load Video + Get Video Components), scale it to a multiple of 8 pixels and pass it "
              "through **Trim Frames** (1 + 4k frames).")
    loader, neg = load(g)
    clip = generate(g, loader, prompt(g, loader, CAPTION, "Source prompt"), neg, seed=51, title="Generate a source clip")
    save(g, clip, "sdedit_source", title="Source")
    trimmed = g.add("SoraTrimFrames", images=clip[0], drop_from="end", max_frames=0)
    latent = g.add("SoraVAEEncode", vae=loader["vae"], images=trimmed[0])
    noised = g.add("SoraSDEditNoise", latent=latent[0], strength=0.6, seed=52)
    edit = ("A video clip of a medium-sized yellow star on a forest green background. Starting near the left edge, "
            "the medium-sized yellow star moves steadily to the right. The shot is static, with no camera movement.")
    edited = decode(g, loader, sample(g, loader, prompt(g, loader, edit, "Edit prompt"), neg, noised[0], seed=53,
                                      title="Re-draw"))
    save(g, edited, "sdedit_edited", title="Edited")
    return g


def connect_two_clips() -> Graph:
    g = Graph("Connect two clips", "**Connect** generates a transition between two different clips: it sees the "
              "end of the first and the start of the second. Output: first clip, 16 new frames, second clip.")
    loader, neg = load(g)
    first_text = CAPTION
    second_text = ("A video clip of a large blue square on a white background. The large blue square starts in "
                   "the center and spins steadily. The shot is static, with no camera movement.")
    first = generate(g, loader, prompt(g, loader, first_text, "First clip prompt"), neg, seed=61, title="First clip")
    second = generate(g, loader, prompt(g, loader, second_text, "Second clip prompt"), neg, seed=62, title="Second clip")
    transition = ("A video clip in which a medium-sized red circle on a navy background turns into a large blue "
                  "square on a white background.")
    latent = g.add("SoraConnect", vae=loader["vae"], first=first[0], second=second[0], transition_frames=16,
                   context_frames=8)
    joined = decode(g, loader, sample(g, loader, prompt(g, loader, transition, "Transition prompt"), neg, latent[0],
                                      seed=63, title="Transition"))
    save(g, joined, "connect_two_clips", title="First + transition + second")
    return g


def recaption() -> Graph:
    g = Graph("Recaption a short prompt", "The model was trained on long, detailed captions (the Sora report's "
              "recaptioning). **Recaption** expands a short prompt into one before encoding: offline by default, "
              "or with any OpenAI-compatible LLM endpoint (backend = llm). The node shows the caption it wrote.")
    loader, neg = load(g)
    caption = g.add("SoraRecaption", prompt="a red ball bouncing", seed=1, backend="offline")
    pos = g.add("SoraTextEncode", title="Positive prompt (the caption)", text_encoder=loader["text_encoder"],
                text=caption[0])
    save(g, generate(g, loader, pos, neg, seed=71, title="Sample"), "recaption")
    return g


def long_video() -> Graph:
    g = Graph("A minute of video: chained extension", "**Long Video** makes a video of any length window by window: "
              "the first window from the prompt, then each next one continuing the last frames of the one before "
              "(the report's 'extending', forward in time). A minute at 8 fps is 480 frames, 30 windows: about a "
              "minute on a CPU. **drift** keeps colours from creeping over the windows (anchor: every window "
              "matched to the first); **loop** ends on a transition back into the opening. Connect an IMAGE to "
              "start_images to continue your own clip or animate your own picture.\n\nThe IMAGE output holds every "
              "frame in memory (24 MB here); for hours or large frames use `python -m sora_core long`, which streams "
              "to the file in flat memory.")
    loader, neg = load(g)
    pos = prompt(g, loader, CAPTION.replace("moves steadily to the right", "bounces around the frame"))
    video = g.add("SoraLongVideo", model=loader["model"], vae=loader["vae"], positive=pos[0], negative=neg[0],
                  width=VIDEO["width"], height=VIDEO["height"], seconds=60.0, fps=FPS, seed=81, steps=STEPS, cfg=CFG)
    save(g, video, "long_video", title="A minute (480 frames at 8 fps)")
    return g


WORKFLOWS = {
    "text_to_video": text_to_video,
    "text_to_image": text_to_image,
    "aspect_ratios": aspect_ratios,
    "prototype_then_full_res": prototype_then_full_res,
    "animate_image": animate_image,
    "extend_forward": extend_forward,
    "extend_backward": extend_backward,
    "seamless_loop": seamless_loop,
    "video_to_video_sdedit": video_to_video_sdedit,
    "connect_two_clips": connect_two_clips,
    "long_video": long_video,
    "recaption": recaption,
}


def main() -> None:
    OUT.mkdir(exist_ok=True)
    for name, build in WORKFLOWS.items():
        path = OUT / f"{name}.json"
        path.write_text(json.dumps(build().to_json(), indent=1) + "\n")
        print(path.relative_to(ROOT))


if __name__ == "__main__":
    main()
