"""Writes workflows/*.json: one UI-format ComfyUI workflow per capability of the Sora report.

    python3 tools/build_workflows.py                # the workflows
    python3 tools/build_workflows.py --thumbnails   # and their template-browser thumbnails (runs each one)

The Wan workflows (13 on) are the same capabilities on real open models, under the file names and
folders ComfyUI users have; weights cannot be had here, so their thumbnails are title cards (what
the graph does, the model, the files it needs), not outputs, and they are tested on tiny random
files under those names (tests/test_workflows.py, tests/test_comfyui_server.py).

Each workflow uses only this pack's nodes and core nodes and makes its own inputs (a clip is
generated first, then extended, looped, ...), so it runs with nothing but the default model.
Outputs go through Sora Save Video / Image, so every file carries a C2PA manifest; a saved clip
that another is made from is linked into that one's `sources`, so the manifests form a chain.
Widget values are given by name and written in the order the frontend saves them.

What the artist sees first is decided here. The template browser (frontend 1.49) shows a custom
pack's workflows by file name only: the title is the file name, the description repeats it, the
thumbnail is `<name>.jpg` beside the JSON and the order is the server's directory listing (glob
order: on Linux file systems, effectively arbitrary) unless the artist sorts alphabetically. So the
file names are human titles numbered with two digits, which sort in order either way. Each graph
is laid out in groups (stages read left to right, top to bottom) small enough that "fit view" stays
above the zoom where the frontend stops drawing text, and it carries a saved view (`extra.ds`) for
Workflow > Open.
Node sizes are at least what the frontend computes for them (it grows smaller ones on load,
which would cover the node below and mark the tab as modified).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS  # noqa: E402
from sora_core.wan.dit import RECIPES, Recipe  # noqa: E402
from tests.workflow_api import (  # noqa: E402
    CORE_DISPLAY_NAMES, CORE_DOUBLES, CORE_ONLY, DOM_WIDGET_H, TITLE_H, class_specs, min_node_size)

OUT = ROOT / "workflows"

# Sizes for the default model (trained around 64x64 pixels, up to 17 frames).
VIDEO = dict(width=64, height=64, frames=17)
IMAGE_SIDE = 128  # text_to_image: the largest square the default model draws well
STEPS, CFG, FPS = 20, 5.0, 8.0
MODEL_FILE = "sora-tiny.safetensors"

WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN"}

# Every node type a workflow may use: ours, and core's as tests/workflow_api.py describes them (a double,
# or the interface only), with widget defaults of our own for some core ones.
CLASSES = {**NODE_CLASS_MAPPINGS, **CORE_DOUBLES, **CORE_ONLY}
CORE_DEFAULTS = {
    "ImageScale": {"upscale_method": "bicubic", "crop": "disabled"},
}
OUTPUT_NODES = {"SoraSaveVideo", "SoraSaveImage", "PreviewImage"}  # they show their images
PROMPT_BOXES = {"text", "prompt"}  # multiline widgets that hold a prompt: wider, as tall as their text

CAPTION = ("A video clip of a medium-sized red circle on a navy background. Starting near the left edge, the "
           "medium-sized red circle moves steadily to the right. The shot is static, with no camera movement.")


# -- node sizes ----------------------------------------------------------------------------------------

# An image preview (an output node's result, a sampler's live preview): the frontend gives it at least
# 190 px when the first image arrives and grows the node to fit, so the layout leaves room for it.
PREVIEW_H = 190 + 4
SPECS = class_specs(CLASSES)


def _is_widget(spec) -> bool:
    kind = spec[0]
    opts = spec[1] if len(spec) > 1 else {}
    return (isinstance(kind, list) or kind in WIDGET_TYPES) and not opts.get("forceInput")


@dataclass
class Widget:
    name: str
    control: bool = False  # followed by the frontend's control_after_generate widget
    multiline: bool = False


def describe(node_type: str):
    """(socket inputs [(name, type)], widgets [Widget], outputs [(name, type)], display name)."""
    cls = CLASSES[node_type]
    spec = cls.INPUT_TYPES()
    sockets, widgets = [], []
    for section in ("required", "optional"):
        for name, s in spec.get(section, {}).items():
            opts = s[1] if len(s) > 1 else {}
            if _is_widget(s):
                widgets.append(Widget(name, bool(opts.get("control_after_generate")), bool(opts.get("multiline"))))
            else:
                sockets.append((name, s[0]))
    names = getattr(cls, "RETURN_NAMES", None) or cls.RETURN_TYPES
    display = NODE_DISPLAY_NAME_MAPPINGS.get(node_type) or CORE_DISPLAY_NAMES[node_type]
    return sockets, widgets, list(zip(names, cls.RETURN_TYPES)), display


def default_widgets(node_type: str) -> dict:
    out = {}
    for section in ("required", "optional"):
        for name, s in CLASSES[node_type].INPUT_TYPES().get(section, {}).items():
            if _is_widget(s):
                opts = s[1] if len(s) > 1 else {}
                out[name] = opts.get("default", s[0][0] if isinstance(s[0], list) and s[0] else "")
    return out | CORE_DEFAULTS.get(node_type, {})


class Node:
    def __init__(self, node_id: int, node_type: str, title: str | None, widgets: dict):
        self.id, self.type, self.title = node_id, node_type, title
        self.sockets, self.widget_specs, self.output_specs, self.display_name = describe(node_type)
        values = default_widgets(node_type)
        unknown = set(widgets) - {w.name for w in self.widget_specs}
        if unknown:
            raise KeyError(f"{node_type} has no widgets {sorted(unknown)}")
        values.update(widgets)
        self.values = values
        self.links_in: dict[str, int] = {}  # input name -> link id
        self.widget_links: dict[str, tuple[int, str]] = {}  # widget name -> (link id, type)
        self.links_out: dict[int, list[int]] = {}
        self.pos: list[int] = [0, 0]

    def __getitem__(self, slot: int | str) -> tuple["Node", int]:
        if isinstance(slot, str):
            slot = [name for name, _ in self.output_specs].index(slot)
        return self, slot

    def widgets_values(self) -> list:
        out = []
        for w in self.widget_specs:
            out.append(self.values[w.name])
            if w.control:
                out.append("fixed")  # the frontend's control_after_generate; fixed keeps the example reproducible
        return out

    def io(self) -> tuple[list[dict], list[dict]]:
        """(inputs, outputs) as the frontend saves them: sockets, then widgets turned into inputs by a link."""
        inputs = [{"name": name, "type": kind, "link": self.links_in.get(name)} for name, kind in self.sockets]
        inputs += [{"name": name, "type": kind, "widget": {"name": name}, "link": link}
                   for name, (link, kind) in self.widget_links.items()]
        outputs = [{"name": name, "type": kind, "links": self.links_out.get(i) or None, "slot_index": i}
                   for i, (name, kind) in enumerate(self.output_specs)]
        return inputs, outputs

    def min_size(self) -> list[int]:
        inputs, outputs = self.io()
        stub = {"type": self.type, "title": self.title, "inputs": inputs, "outputs": outputs}
        return [math.ceil(v) for v in min_node_size(stub, SPECS, self.display_name)]

    def size(self) -> list[int]:
        """The saved size: the minimum, a comfortable width, room for long text and for output previews."""
        w, h = self.min_size()
        prompts = [x for x in self.widget_specs if x.multiline and x.name in PROMPT_BOXES]
        text = next((self.values[x.name] for x in prompts if x.name not in self.widget_links), "")
        if text:  # about 34 characters a line in a 300 px text box (a CJK character takes two), 16 px a line
            chars = sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)
            h += max(0, 16 * (math.ceil(chars / 34) + 1) + 8 - DOM_WIDGET_H)
        if self.type in OUTPUT_NODES:
            h += PREVIEW_H
        return [_round_up(max(w, 300 if prompts else 250)), _round_up(h)]


def _round_up(v: float, step: int = 10) -> int:
    return int(math.ceil(v / step) * step)


# -- layout: groups of columns, read left to right, top to bottom --------------------------------------

GAP = 20  # between a node's bottom and the next node's title bar
COL_GAP = 30
GROUP_PAD = 10
GROUP_HEAD = TITLE_H + 16  # a group's title bar, and room for the pack badge above a node's title
STAGE_GAP = 24
NOTE_COLOR, NOTE_BG = "#432", "#653"
# LiteGraph's node_colors groupcolor values, one per stage in turn (pale_blue first: the model).
GROUP_COLORS = ["#3f789e", "#8A8", "#b58b2a", "#a1309b", "#88A", "#b06634"]
# The saved view (Workflow > Open restores it) frames the whole graph on the canvas of a 1600x900
# browser window (the frontend's tab bar and side bar take about 40 and 60 px), below the floating
# Graph / Run toolbars at its top, at zoom 1 at most.
VIEW_W, VIEW_H = 1540, 860
VIEW_TOP, VIEW_MARGIN = 70, 20


@dataclass
class Stage:
    """A group: rows of columns of nodes, each column stacked top to bottom."""
    title: str
    rows: list[list[list[Node]]]
    box: list[int] = field(default_factory=lambda: [0, 0, 0, 0])  # x, y, w, h of the group

    def _row_height(self, row: list[list[Node]]) -> int:
        return max(sum(TITLE_H + n.size()[1] for n in col) + GAP * (len(col) - 1) + _clearance(col[-1]) for col in row)

    def _column_widths(self) -> list[int]:
        """The i-th columns of all rows share a width, so rows line up."""
        count = max(len(row) for row in self.rows)
        return [max(max(n.size()[0] for n in row[i]) for row in self.rows if i < len(row)) for i in range(count)]

    def measure(self) -> tuple[int, int]:
        widths = self._column_widths()
        width = max(sum(widths[: len(row)]) + COL_GAP * (len(row) - 1) for row in self.rows)
        height = sum(self._row_height(row) for row in self.rows) + GAP * (len(self.rows) - 1)
        return width + 2 * GROUP_PAD, GROUP_HEAD + height + GROUP_PAD

    def place(self, x: int, y: int) -> None:
        w, h = self.measure()
        self.box = [x, y, w, h]
        widths = self._column_widths()
        top = y + GROUP_HEAD
        for row in self.rows:
            left = x + GROUP_PAD
            for col, width in zip(row, widths):
                ny = top
                for n in col:
                    n.pos = [left, ny + TITLE_H]
                    ny += TITLE_H + n.size()[1] + GAP
                left += width + COL_GAP
            top += self._row_height(row) + GAP


def _clearance(node: Node) -> int:
    """Room kept free below a sampler that ends a column: it grows by a preview's height while it
    runs with live previews on."""
    return PREVIEW_H if node.type == "SoraDiTSampler" else 0


def column(*nodes: Node) -> list[Node]:
    return list(nodes)


class Graph:
    def __init__(self, title: str, note: str):
        self.title = title
        self.nodes: list[Node] = []
        self.links: list[list] = []
        self.note = note
        self.pages: list[list[list[Stage]]] = []  # page columns of rows of stages (see layout)
        self.card: tuple[str, list[str]] | None = None  # (model, files): a title card as its thumbnail

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
        elif name in {w.name for w in target.widget_specs}:
            to_slot = len(sockets) + len(target.widget_links)
            target.widget_links[name] = (link_id, link_type)
        else:
            raise KeyError(f"{target.type} has no input {name!r}")
        self.links.append([link_id, src.id, slot, target.id, to_slot, link_type])
        src.links_out.setdefault(slot, []).append(link_id)

    def layout(self, *pages: list[Stage | list[Stage]], note_over: int = 1) -> None:
        """Page columns, left to right, of stages top to bottom (a list of stages: side by side);
        the note goes above the first one, or spans the first `note_over` (a long note on a narrow page)."""
        self.pages = [[item if isinstance(item, list) else [item] for item in page] for page in pages]
        self.note_over = note_over

    def stages(self) -> list[Stage]:
        return [s for page in self.pages for row in page for s in row]

    # -- JSON -------------------------------------------------------------------------------------
    def _note_height(self, width: int) -> int:
        text = self.note_text()
        lines = sum(math.ceil(max(1, len(line)) * 7.5 / (width - 30)) for line in text.split("\n"))
        return _round_up(40 + 21 * lines)

    def note_text(self) -> str:
        return f"# {self.title}\n\n{self.note}"

    def _place(self) -> tuple[int, int]:
        """Positions every node and group; returns the note's width and height (it sits at the top left)."""
        placed = [n.id for s in self.stages() for row in s.rows for col in row for n in col]
        if sorted(placed) != [n.id for n in self.nodes]:
            raise ValueError(f"{self.title}: every node must be laid out exactly once; placed {sorted(placed)}")
        def row_width(row: list[Stage]) -> int:
            return sum(s.measure()[0] for s in row) + STAGE_GAP * (len(row) - 1)

        under = self.pages[: self.note_over]
        note_w = row_width(self.pages[0][0]) if len(under) == 1 else (
            sum(max(row_width(row) for row in page) for page in under) + STAGE_GAP * (len(under) - 1))
        note_h = self._note_height(note_w)
        x = 0
        for i, page in enumerate(self.pages):
            y, width = (TITLE_H + note_h + STAGE_GAP if i < len(under) else 0), 0
            for row in page:
                left = x
                for stage in row:
                    stage.place(left, y)
                    left += stage.box[2] + STAGE_GAP
                y += max(s.box[3] for s in row) + STAGE_GAP
                width = max(width, left - STAGE_GAP - x)
            x += width + STAGE_GAP
        return note_w, note_h

    def to_json(self) -> dict:
        note_w, note_h = self._place()
        order = {n.id: i for i, n in enumerate(_topological(self))}
        nodes_json = []
        for n in self.nodes:
            inputs, outputs = n.io()
            entry = {"id": n.id, "type": n.type, "pos": n.pos, "size": n.size(), "flags": {}, "order": order[n.id] + 1,
                     "mode": 0, "inputs": inputs, "outputs": outputs,
                     "properties": {"Node name for S&R": n.type}, "widgets_values": n.widgets_values()}
            models = [{"name": v, "url": MODEL_SOURCES[v][1], "directory": MODEL_SOURCES[v][0]}
                      for v in n.widgets_values() if isinstance(v, str) and v in MODEL_SOURCES]
            if models:
                entry["properties"]["models"] = models
            if n.title:
                entry["title"] = n.title
            nodes_json.append(entry)
        note_id = len(self.nodes) + 1
        nodes_json.insert(0, {"id": note_id, "type": "MarkdownNote", "pos": [0, TITLE_H], "size": [note_w, note_h],
                              "flags": {}, "order": 0, "mode": 0, "inputs": [], "outputs": [], "title": "About this workflow",
                              "properties": {}, "widgets_values": [self.note_text()], "color": NOTE_COLOR,
                              "bgcolor": NOTE_BG})
        stages = self.stages()
        groups = [{"id": i + 1, "title": s.title, "bounding": s.box, "color": GROUP_COLORS[i % len(GROUP_COLORS)],
                   "flags": {}} for i, s in enumerate(stages)]
        return {"last_node_id": note_id, "last_link_id": len(self.links), "nodes": nodes_json, "links": self.links,
                "groups": groups, "config": {}, "extra": {"ds": saved_view(nodes_json, groups)}, "version": 0.4}


def _topological(g: Graph) -> list[Node]:
    """Nodes in execution order (the frontend's `order`): sources first, ties by id."""
    pending = {n.id: n for n in g.nodes}
    deps = {n.id: {link[1] for link in g.links if link[3] == n.id} for n in g.nodes}
    out: list[Node] = []
    while pending:
        ready = sorted(i for i in pending if not deps[i] & set(pending))
        out += [pending.pop(i) for i in ready]
    return out


def bounds(nodes_json: list[dict], groups: list[dict]) -> list[float]:
    """[x, y, w, h] around every node (title bar included) and group, as the frontend's fit view takes it."""
    boxes = [(n["pos"][0], n["pos"][1] - TITLE_H, n["size"][0], n["size"][1] + TITLE_H) for n in nodes_json]
    boxes += [tuple(g["bounding"]) for g in groups]
    x0 = min(b[0] for b in boxes)
    y0 = min(b[1] for b in boxes)
    return [x0, y0, max(b[0] + b[2] for b in boxes) - x0, max(b[1] + b[3] for b in boxes) - y0]


def saved_view(nodes_json: list[dict], groups: list[dict]) -> dict:
    """extra.ds; the frontend draws a node at (pos + offset) * scale."""
    x, y, w, h = bounds(nodes_json, groups)
    scale = round(min(1.0, (VIEW_W - 2 * VIEW_MARGIN) / w, (VIEW_H - VIEW_TOP - VIEW_MARGIN) / h), 3)
    left = VIEW_MARGIN + (VIEW_W - 2 * VIEW_MARGIN - w * scale) / 2  # centred in the free area, in screen px
    top = VIEW_TOP + (VIEW_H - VIEW_TOP - VIEW_MARGIN - h * scale) / 2
    return {"scale": scale, "offset": [round(left / scale - x, 1), round(top / scale - y, 1)]}


# -- building blocks ------------------------------------------------------------------------------

def load(g: Graph):
    loader = g.add("SoraModelLoader", ckpt_name=MODEL_FILE)
    negative = g.add("SoraTextEncode", title="Negative prompt", text_encoder=loader["text_encoder"], text="")
    return loader, negative


def prompt(g: Graph, loader: Node, text: str, title: str = "Positive prompt") -> Node:
    return g.add("SoraTextEncode", title=title, text_encoder=loader["text_encoder"], text=text)


def sample(g: Graph, loader: Node, positive: Node, negative: Node, latent, seed: int, title: str | None = None, **kw) -> Node:
    settings = dict(seed=seed, steps=STEPS, cfg=CFG, shift=0.0, sampler="euler") | kw
    return g.add("SoraDiTSampler", title=title, model=loader["model"], positive=positive[0], negative=negative[0],
                 latent=latent, **settings)


def decode(g: Graph, loader: Node, latent: Node, title: str | None = None, **settings) -> Node:
    return g.add("SoraVAEDecode", title=title, vae=loader["vae"], latent=latent[0], **settings)


def generate(g: Graph, loader: Node, positive: Node, negative: Node, seed: int, title: str = "Generate a clip",
             sampling: dict | None = None, decoding: dict | None = None, **grid) -> list[Node]:
    """Text to video, decoded: [Patchify Grid, DiT Sampler, VAE Decode]; the last one gives the frames."""
    size = dict(aspect_ratio="custom", long_side=64, batch_size=1) | VIDEO | grid
    latent = g.add("SoraPatchifyGrid", vae=loader["vae"], **size)
    sampler = sample(g, loader, positive, negative, latent[0], seed, title=title, **(sampling or {}))
    return [latent, sampler, decode(g, loader, sampler, **(decoding or {}))]


def save(g: Graph, loader: Node, positive: Node, images: Node, prefix: str, title: str | None = None,
         operation: str = "generate", sources: Node | None = None, node_type: str = "SoraSaveVideo", **widgets) -> Node:
    """Sora Save Video / Image: the file's C2PA manifest records the model, the operation, the prompt
    (when include_prompt is switched on) and `sources`, the files output of the save node of the clip
    this one was made from."""
    model = {"model": loader["model"]} if loader is not None else {}  # a core MODEL is no SORA_DIT: none named
    links = {"sources": sources["files"]} if sources is not None else {}
    title = title or ("Save video" if node_type == "SoraSaveVideo" else "Save image")  # the type's name is long
    return g.add(node_type, title=title, images=images[0], filename_prefix=f"sora/{prefix}", **model,
                 positive=positive[0], operation=operation, **links, **widgets)


def chain(*nodes: Node) -> list[list[Node]]:
    """One row of one-node columns."""
    return [[n] for n in nodes]


# -- the workflows --------------------------------------------------------------------------------

def text_to_video() -> Graph:
    g = Graph("Text to video", "A caption becomes a 17-frame video. **Patchify Grid** sets the size and length "
              "(any width, height and duration, frames = 1 + 4k); the **DiT Sampler** denoises the grid of "
              "spacetime patches; the **VAE Decode** turns latents into frames.\n\nDetailed captions work best: "
              "see the recaption workflow for turning a short prompt into one.")
    loader, neg = load(g)
    pos = prompt(g, loader, CAPTION)
    clip = generate(g, loader, pos, neg, seed=1, title="Sample")
    out = save(g, loader, pos, clip[-1], "text_to_video")
    g.layout([Stage("Model and prompts", [[column(loader, pos, neg)]])],
             [Stage("Generate", [chain(*clip, out)])])
    return g


def text_to_image() -> Graph:
    g = Graph("Text to image", f"An image is a one-frame video: the same model, **frames = 1**, at "
              f"{IMAGE_SIDE}x{IMAGE_SIDE}, the largest size the default model draws well.")
    loader, neg = load(g)
    text = ("An image of a large yellow star and a small blue square on a light gray background. The large yellow "
            "star sits in the center. The small blue square sits near the top left.")
    pos = prompt(g, loader, text)
    still = generate(g, loader, pos, neg, seed=7, title="Sample", width=IMAGE_SIDE, height=IMAGE_SIDE, frames=1)
    out = save(g, loader, pos, still[-1], "text_to_image", node_type="SoraSaveImage")
    g.layout([Stage("Model and prompts", [[column(loader, pos, neg)]])],
             [Stage("Generate", [chain(*still, out)])])
    return g


def aspect_ratios() -> Graph:
    g = Graph("Aspect ratios", "One prompt and one seed at three shapes: **16:9 widescreen, 9:16 vertical and "
              "1:1 square**. The model was trained on native aspect ratios, so each framing keeps the subject "
              "in view instead of cropping it. Pick the ratio and the long side in **Patchify Grid**.")
    loader, neg = load(g)
    pos = prompt(g, loader, CAPTION)
    grids, samplers, decodes, saves = [], [], [], []
    for ratio, long_side, name in (("16:9", 88, "widescreen"), ("9:16", 88, "vertical"), ("1:1", 64, "square")):
        grids.append(g.add("SoraPatchifyGrid", vae=loader["vae"], aspect_ratio=ratio, long_side=long_side,
                           frames=VIDEO["frames"]))
        samplers.append(sample(g, loader, pos, neg, grids[-1][0], seed=3, title=f"Sample {ratio}"))
        decodes.append(decode(g, loader, samplers[-1]))
        saves.append(save(g, loader, pos, decodes[-1], f"aspect_{name}", title=f"{ratio} {name}"))
    # One column per shape, read top to bottom; the tall save nodes beside them, two and one.
    g.layout([Stage("Model and prompts", [[column(loader, pos, neg)]])],
             [Stage("1. Three shapes, one seed", [chain(*grids), chain(*samplers), chain(*decodes)])],
             [Stage("2. The videos", [[column(saves[0], saves[2]), [saves[1]]]])])
    return g


def prototype_then_full_res() -> Graph:
    g = Graph("Prototype at low resolution, then full resolution",
              "Try prompts and seeds quickly at low resolution, then render the one you like at full size with "
              "the **same seed**: the prototype is upscaled (core **Upscale Image**) and encoded, **SDEdit Noise** "
              "sets how much may change (strength), and the sampler re-noises it that far and samples it again at "
              "full resolution.")
    loader, neg = load(g)
    pos = prompt(g, loader, CAPTION)
    seed = 5
    small = generate(g, loader, pos, neg, seed=seed, title="Prototype (32x32)", width=32, height=32)
    preview = save(g, loader, pos, small[-1], "prototype", title="Prototype")
    big = g.add("ImageScale", image=small[-1][0], width=VIDEO["width"], height=VIDEO["height"])
    latent = g.add("SoraVAEEncode", vae=loader["vae"], images=big[0])
    noised = g.add("SoraSDEditNoise", latent=latent[0], strength=0.6)
    sampler = sample(g, loader, pos, neg, noised[0], seed=seed, title="Full resolution")
    full = decode(g, loader, sampler)
    out = save(g, loader, pos, full, "prototype_full_res", title="Full resolution")
    g.layout([Stage("Model and prompts", [[column(loader, pos, neg)]])],
             [Stage("1. Prototype at 32x32", [chain(*small, preview)]),
              Stage("2. The same seed at 64x64", [[column(big, latent, noised), [sampler], [full], [out]]])])
    return g


def animate_image() -> Graph:
    g = Graph("Animate an image", "Image to video: a still image becomes the **first frame** of a video (or the "
              "last: set position), exactly as given. Here the still is generated in the same graph; to animate "
              "your own picture, replace it with core **Load Image** (scaled to a multiple of 8 pixels).")
    loader, neg = load(g)
    still_text = ("An image of a medium-sized green triangle on a beige background. The medium-sized green "
                  "triangle sits near the left edge.")
    image_prompt = prompt(g, loader, still_text, "Image prompt")
    still = generate(g, loader, image_prompt, neg, seed=11, title="Generate the still", frames=1)
    shown = g.add("PreviewImage", title="The still", images=still[-1][0])
    motion = ("A video clip of a medium-sized green triangle on a beige background. Starting near the left edge, "
              "the medium-sized green triangle slides steadily to the right. The shot is static, with no camera "
              "movement.")
    video_prompt = prompt(g, loader, motion, "Video prompt")
    latent = g.add("SoraAnimateImage", vae=loader["vae"], image=still[-1][0], frames=VIDEO["frames"], position="first")
    sampler = sample(g, loader, video_prompt, neg, latent[0], seed=12, title="Animate")
    video = decode(g, loader, sampler)
    out = save(g, loader, video_prompt, video, "animate_image", operation="animate")
    g.layout([Stage("Model and prompts", [[column(loader, image_prompt, video_prompt, neg)]])],
             [Stage("1. The still image", [chain(*still, shown)]),
              Stage("2. Animate it", [chain(latent, sampler, video, out)])])
    return g


def extend_forward() -> Graph:
    g = Graph("Extend a video forward", "Continues a clip: **Extend** (forward) gives the model the clip's last "
              "frames as fixed context and generates 16 new ones after them. **VAE Decode** returns the whole "
              "clip with the new frames appended (17 + 16 = 33 frames); the original frames are untouched.")
    loader, neg = load(g)
    pos = prompt(g, loader, CAPTION)
    clip = generate(g, loader, pos, neg, seed=21)
    source = save(g, loader, pos, clip[-1], "extend_source", title="Source clip")
    latent = g.add("SoraExtend", vae=loader["vae"], video=clip[-1][0], direction="forward", new_frames=16,
                   context_frames=8)
    sampler = sample(g, loader, pos, neg, latent[0], seed=22, title="Extend")
    longer = decode(g, loader, sampler)
    out = save(g, loader, pos, longer, "extend_forward", title="Extended clip", operation="extend", sources=source)
    g.layout([Stage("Model and prompts", [[column(loader, pos, neg)]])],
             [Stage("1. A source clip", [chain(*clip, source)]),
              Stage("2. Extend it forward", [chain(latent, sampler, longer, out)])])
    return g


def extend_backward() -> Graph:
    g = Graph("Extend a video backward: many beginnings, one ending",
              "As in the Sora report, one clip extended **backward in time** with three different seeds: three "
              "different beginnings that all lead into the same ending. Each output is 16 new frames followed by "
              "the unchanged clip.")
    loader, neg = load(g)
    pos = prompt(g, loader, CAPTION)
    clip = generate(g, loader, pos, neg, seed=31, title="Generate the ending")
    ending = save(g, loader, pos, clip[-1], "extend_backward_ending", title="The shared ending")
    latent = g.add("SoraExtend", vae=loader["vae"], video=clip[-1][0], direction="backward", new_frames=16,
                   context_frames=8)
    seeds = []
    for seed in (32, 33, 34):
        sampler = sample(g, loader, pos, neg, latent[0], seed=seed, title=f"Beginning, seed {seed}")
        video = decode(g, loader, sampler)
        out = save(g, loader, pos, video, f"extend_backward_seed{seed}", title=f"Seed {seed}", operation="extend",
                   sources=ending)
        seeds.append(column(sampler, video, out))
    g.layout([Stage("Model and prompts", [[column(loader, pos, neg)]])],
             [Stage("1. The ending", [[column(clip[0], clip[1]), column(clip[2], ending)]]),
              Stage("2. Extend it backward", [[[latent]]])],
             [Stage("3. Three beginnings", [seeds])])
    return g


def seamless_loop() -> Graph:
    g = Graph("Seamless infinite loop", "**Loop** generates a transition from the clip's last frames back to its "
              "first frames. The output (clip + transition) plays on repeat without a jump.")
    loader, neg = load(g)
    pos = prompt(g, loader, CAPTION)
    clip = generate(g, loader, pos, neg, seed=41)
    latent = g.add("SoraLoop", vae=loader["vae"], video=clip[-1][0], transition_frames=8, context_frames=8)
    sampler = sample(g, loader, pos, neg, latent[0], seed=42, title="Close the loop")
    looped = decode(g, loader, sampler)
    out = save(g, loader, pos, looped, "seamless_loop", title="Loop (plays on repeat)", operation="loop")
    g.layout([Stage("Model and prompts", [[column(loader, pos, neg)]])],
             [Stage("1. A clip", [chain(*clip)]),
              Stage("2. Close the loop", [chain(latent, sampler, looped, out)])])
    return g


def video_to_video_sdedit() -> Graph:
    g = Graph("Video to video (SDEdit)", "Edits a video with a new prompt while keeping its layout and motion: "
              "**VAE Encode**, then **SDEdit Noise** sets how much changes (strength 0 = keep, 1 = ignore the "
              "input) and the sampler noises it that far with its seed and re-draws it following the new prompt. "
              "To edit your own video, load it "
              "(e.g. core Load Video + Get Video Components), scale it to a multiple of 8 pixels and pass it "
              "through **Trim Frames** (1 + 4k frames).")
    loader, neg = load(g)
    source_prompt = prompt(g, loader, CAPTION, "Source prompt")
    clip = generate(g, loader, source_prompt, neg, seed=51, title="Generate a source clip")
    source = save(g, loader, source_prompt, clip[-1], "sdedit_source", title="Source")
    trimmed = g.add("SoraTrimFrames", images=clip[-1][0], drop_from="end", max_frames=0)
    latent = g.add("SoraVAEEncode", vae=loader["vae"], images=trimmed[0])
    noised = g.add("SoraSDEditNoise", latent=latent[0], strength=0.6)
    edit = ("A video clip of a medium-sized yellow star on a forest green background. Starting near the left edge, "
            "the medium-sized yellow star moves steadily to the right. The shot is static, with no camera movement.")
    edit_prompt = prompt(g, loader, edit, "Edit prompt")
    sampler = sample(g, loader, edit_prompt, neg, noised[0], seed=53, title="Re-draw")
    edited = decode(g, loader, sampler)
    out = save(g, loader, edit_prompt, edited, "sdedit_edited", title="Edited", operation="edit", sources=source)
    g.layout([Stage("Model and prompts", [[column(loader, source_prompt, edit_prompt, neg)]])],
             [Stage("1. A source clip", [chain(*clip, source)]),
              Stage("2. Re-draw it", [[column(trimmed, latent, noised), [sampler], [edited], [out]]])])
    return g


def connect_two_clips() -> Graph:
    g = Graph("Connect two clips", "**Connect** generates a transition between two different clips: it sees the "
              "end of the first and the start of the second. Output: first clip, 16 new frames, second clip.")
    loader, neg = load(g)
    first_text = CAPTION
    second_text = ("A video clip of a large blue square on a white background. The large blue square starts in "
                   "the center and spins steadily. The shot is static, with no camera movement.")
    first_prompt = prompt(g, loader, first_text, "First clip prompt")
    second_prompt = prompt(g, loader, second_text, "Second clip prompt")
    first = generate(g, loader, first_prompt, neg, seed=61, title="First clip")
    second = generate(g, loader, second_prompt, neg, seed=62, title="Second clip")
    transition = ("A video clip in which a medium-sized red circle on a navy background turns into a large blue "
                  "square on a white background.")
    transition_prompt = prompt(g, loader, transition, "Transition prompt")
    latent = g.add("SoraConnect", vae=loader["vae"], first=first[-1][0], second=second[-1][0], transition_frames=16,
                   context_frames=8)
    sampler = sample(g, loader, transition_prompt, neg, latent[0], seed=63, title="Transition")
    joined = decode(g, loader, sampler)
    out = save(g, loader, transition_prompt, joined, "connect_two_clips", title="First + transition + second",
               operation="connect")
    g.layout([Stage("Model and prompts", [[column(loader, first_prompt, second_prompt, neg)]])],
             [[Stage("1. First clip", [chain(*first[:2])]), Stage("2. Second clip", [chain(*second[:2])])],
              Stage("3. Connect them", [[column(first[2], second[2]), column(latent, transition_prompt), [sampler],
                                         [joined], [out]]])])
    return g


def recaption() -> Graph:
    g = Graph("Recaption a short prompt", "The model was trained on long, detailed captions (the Sora report's "
              "recaptioning). **Recaption** expands a short prompt into one before encoding: offline by default, "
              "or with any OpenAI-compatible LLM endpoint (backend = llm). The node shows the caption it wrote.\n\n"
              "Offline, it also plans the caption's scene, where each object starts and which way it goes: "
              "**Apply Layout** adds that plan to the caption's conditioning, and the default model follows it.")
    loader, neg = load(g)
    caption = g.add("SoraRecaption", prompt="a red ball bouncing", seed=1, backend="offline", frames=VIDEO["frames"])
    encoded = g.add("SoraTextEncode", title="Positive prompt (the caption)", text_encoder=loader["text_encoder"],
                    text=caption[0])
    pos = g.add("SoraApplyLayout", conditioning=encoded[0], text_encoder=loader["text_encoder"], layout=caption[1])
    clip = generate(g, loader, pos, neg, seed=71, title="Sample")
    out = save(g, loader, pos, clip[-1], "recaption")
    g.layout([Stage("Model", [[column(loader, neg)]])],
             [Stage("1. A short prompt becomes a caption and a layout", [chain(caption, encoded, pos)]),
              Stage("2. Generate", [chain(*clip, out)])])
    return g


def long_video() -> Graph:
    g = Graph("A minute of video", "**Long Video** makes a video of any length window by window: the first "
              "window from the prompt, then each next one continuing the last frames of the one before (the "
              "report's 'extending', forward in time). A minute at 8 fps is 480 frames, 30 windows. **drift** "
              "keeps colours from creeping over the windows (colour: each window's colours pulled back to the first's); **loop** "
              "ends on a transition back into the opening. Link an IMAGE to start_images to continue your own "
              "clip or animate your own picture.\n\nThe IMAGE output holds every frame in memory (24 MB here); "
              "for hours or large frames use `python -m sora_core long`, which streams to the file in flat memory.")
    loader, neg = load(g)
    pos = prompt(g, loader, CAPTION.replace("moves steadily to the right", "bounces around the frame"))
    video = g.add("SoraLongVideo", title="A minute, window by window", model=loader["model"], vae=loader["vae"],
                  positive=pos[0], negative=neg[0], width=VIDEO["width"], height=VIDEO["height"], seconds=60.0,
                  fps=FPS, seed=81, steps=STEPS, cfg=CFG)
    out = save(g, loader, pos, video, "long_video", title="A minute (480 frames at 8 fps)", operation="long")
    g.layout([Stage("Model and prompts", [[column(loader, pos, neg)]])],
             [Stage("Chain windows into a minute", [chain(video, out)])])
    return g


# -- Wan 2.1 / 2.2: the same capabilities on real open models -------------------------------------
# These graphs load the files ComfyUI users have, under ComfyUI's own names and folders, and use each
# model's recipe (sora_core.wan.dit.RECIPES: native size and length, steps, cfg, shift, Wan's negative
# prompt). They cannot run here (no weights), so their thumbnails are title cards (tools/thumbnails.py
# title_card: what the graph does, the model and the files it needs), not outputs.

WAN_TEXT_ENCODER = "umt5_xxl_fp8_e4m3fn_scaled.safetensors"

# Where each file comes from, as ComfyUI's own Wan templates give it (a loader node's properties.models):
# when a file is missing, the frontend names it, its folder and offers this link; nothing here downloads.
_WAN21_REPO = "https://huggingface.co/Comfy-Org/Wan_2.1_ComfyUI_repackaged/resolve/main/split_files"
_WAN22_REPO = "https://huggingface.co/Comfy-Org/Wan_2.2_ComfyUI_Repackaged/resolve/main/split_files"
MODEL_SOURCES = {  # file -> (folder under ComfyUI/models, url)
    "wan2.1_t2v_1.3B_fp16.safetensors": ("diffusion_models", f"{_WAN21_REPO}/diffusion_models/wan2.1_t2v_1.3B_fp16.safetensors"),
    "wan2.2_ti2v_5B_fp16.safetensors": ("diffusion_models", f"{_WAN22_REPO}/diffusion_models/wan2.2_ti2v_5B_fp16.safetensors"),
    "wan_2.1_vae.safetensors": ("vae", f"{_WAN21_REPO}/vae/wan_2.1_vae.safetensors"),
    "wan2.2_vae.safetensors": ("vae", f"{_WAN22_REPO}/vae/wan2.2_vae.safetensors"),
    WAN_TEXT_ENCODER: ("text_encoders", f"{_WAN21_REPO}/text_encoders/{WAN_TEXT_ENCODER}"),
}


@dataclass(frozen=True)
class WanModel:
    label: str  # as the title card and the notes name it
    dit: str  # file names, as ComfyUI's own Wan workflows name them
    vae: str
    recipe: Recipe
    vram: str  # from benchmarks/wan_workflow_memory.py (GiB, rounded up); see the README's VRAM table

    @property
    def files(self) -> list[str]:
        """Where each file goes, under ComfyUI/models/."""
        return [f"diffusion_models/{self.dit}", f"text_encoders/{WAN_TEXT_ENCODER}", f"vae/{self.vae}"]

    @property
    def size(self) -> dict:
        r = self.recipe
        return dict(width=r.width, height=r.height, frames=r.frames)

    @property
    def sampling(self) -> dict:
        r = self.recipe
        return dict(steps=r.steps, cfg=r.cfg, shift=r.shift)


WAN21 = WanModel("Wan 2.1 1.3B", "wan2.1_t2v_1.3B_fp16.safetensors", "wan_2.1_vae.safetensors",
                 RECIPES["wan2.1-t2v-1.3B"], "8 GB (7.1 with every weight on the card), 6 GB with ComfyUI's partial "
                                             "loading (5.9, slower)")
WAN22 = WanModel("Wan 2.2 5B", "wan2.2_ti2v_5B_fp16.safetensors", "wan2.2_vae.safetensors",
                 RECIPES["wan2.2-ti2v-5B"], "16 GB (15.8 with every weight on the card), 12 GB with ComfyUI's partial "
                                            "loading (11.0, slower)")
DECODING = dict(chunk=1)  # one latent frame at a time, as Wan decodes: a quarter of chunk 4's memory


def wan_note(m: WanModel, what: str, vram: str | None = None) -> str:
    """A Wan graph's note: what it does, where each file goes, the VRAM and the settings it uses."""
    r = m.recipe
    files = ", ".join(f"`{f}`" for f in m.files)
    return (f"{what}\n\n**VRAM** at {r.width}x{r.height}x{r.frames}: {vram or m.vram}. **Settings**, Wan's recipe: "
            f"{r.fps} fps, {r.steps} steps, cfg {r.cfg:g}, shift {r.shift:g}, Wan's negative prompt.\n\n"
            f"**{m.label} files**, in `ComfyUI/models/` (where core's loaders and the Sora ones find them): {files}.")


class Parts:
    """The three loaders of a Wan model, indexed like Sora Model Loader's outputs."""

    def __init__(self, model: Node, text_encoder: Node, vae: Node):
        self.nodes = {"model": model, "text_encoder": text_encoder, "vae": vae}

    def __getitem__(self, name: str) -> tuple[Node, int]:
        return self.nodes[name][name]

    def column(self) -> list[Node]:
        return column(*self.nodes.values())


def load_wan(g: Graph, m: WanModel, what: str) -> tuple[Parts, Node]:
    """The loaders and Wan's negative prompt; the graph's note and title card."""
    g.note = wan_note(m, what)
    g.card = (m.label, m.files)
    parts = Parts(g.add("SoraDiffusionModelLoader", model_name=m.dit),
                  g.add("SoraTextEncoderLoader", text_encoder_name=WAN_TEXT_ENCODER),
                  g.add("SoraVAELoader", vae_name=m.vae))
    negative = prompt(g, parts, m.recipe.negative_prompt, "Negative prompt (Wan's own)")
    return parts, negative


def wan_sample(g: Graph, m: WanModel, parts: Parts, positive: Node, negative: Node, latent, seed: int,
               title: str | None = None) -> Node:
    return sample(g, parts, positive, negative, latent, seed, title=title, **m.sampling)


def wan_generate(g: Graph, m: WanModel, parts: Parts, positive: Node, negative: Node, seed: int,
                 title: str = "Generate a clip", **size) -> list[Node]:
    size = m.size | size
    return generate(g, parts, positive, negative, seed, title, sampling=m.sampling, decoding=DECODING,
                    long_side=max(size["width"], size["height"]), **size)


def wan_decode(g: Graph, parts: Parts, latent: Node, title: str | None = None) -> Node:
    return decode(g, parts, latent, title, **DECODING)


def wan_save(g: Graph, m: WanModel, parts: Parts | None, positive: Node, images: Node, prefix: str, **kw) -> Node:
    return save(g, parts, positive, images, f"wan_{prefix}", fps=float(m.recipe.fps), **kw)


def models_stage(parts: Parts, negative: Node, *prompts: Node) -> Stage:
    return Stage("Models and prompts", [[parts.column() + [negative], column(*prompts)]])


BEACH = ("A corgi runs along a sandy beach at sunset, waves rolling in behind it. The camera tracks it from the "
         "side at a low height; warm golden light, soft shadows, a gentle lens flare.")


def wan_text_to_video() -> Graph:
    m = WAN21
    g = Graph("Wan 2.1 text to video", "")
    parts, neg = load_wan(g, m, "Text to video with Wan 2.1 T2V 1.3B through the Sora nodes: **Patchify Grid** "
                                "sets the size and length (832x480, 81 frames = 5 s), the **DiT Sampler** "
                                "generates, **VAE Decode** streams the frames out one latent frame at a time.")
    pos = prompt(g, parts, BEACH)
    clip = wan_generate(g, m, parts, pos, neg, seed=1, title="Sample")
    out = wan_save(g, m, parts, pos, clip[-1], "text_to_video")
    g.layout([models_stage(parts, neg, pos)], [Stage("Generate", [chain(*clip, out)])])
    return g


def wan_animate_image() -> Graph:
    m = WAN22
    g = Graph("Wan 2.2 animate an image", "")
    parts, neg = load_wan(g, m, "Image to video with Wan 2.2 TI2V 5B, the model made for it (it takes a timestep "
                                "per latent frame, so the given frame stays given): the still becomes the **first "
                                "frame** of a 121-frame video, exactly as given. The still is generated here at "
                                "1280x704 by the same model; to animate your own picture, replace it with core "
                                "**Load Image** and **Upscale Image** to 1280x704 (sides a multiple of 32).")
    still_text = ("A red vintage bicycle leans against a white stone wall covered in blooming bougainvillea on a "
                  "quiet Mediterranean street, morning sunlight.")
    image_prompt = prompt(g, parts, still_text, "Image prompt")
    still = wan_generate(g, m, parts, image_prompt, neg, seed=11, title="Generate the still", frames=1)
    shown = g.add("PreviewImage", title="The still", images=still[-1][0])
    motion = ("The camera slowly pushes in on a red vintage bicycle leaning against a white stone wall as "
              "bougainvillea petals drift down in a light breeze; sunlight flickers across the wall.")
    video_prompt = prompt(g, parts, motion, "Video prompt")
    latent = g.add("SoraAnimateImage", vae=parts["vae"], image=still[-1][0], frames=m.recipe.frames, position="first")
    sampler = wan_sample(g, m, parts, video_prompt, neg, latent[0], seed=12, title="Animate")
    video = wan_decode(g, parts, sampler)
    out = wan_save(g, m, parts, video_prompt, video, "animate_image", operation="animate")
    g.layout([models_stage(parts, neg, image_prompt, video_prompt)],
             [Stage("1. The still image", [chain(*still, shown)]),
              Stage("2. Animate it", [chain(latent, sampler, video, out)])])
    return g


# Extend / loop / connect windows are the model's native 81 frames: 16 frames of context at each given
# end and the rest new (1 + 16 + 64, 1 + 16 + 48 + 16).
CONTEXT, NEW, TRANSITION = 16, 64, 48


def wan_extend_forward() -> Graph:
    m = WAN21
    g = Graph("Wan 2.1 extend a video forward", "")
    parts, neg = load_wan(g, m, f"Continues a clip: **Extend** (forward) gives the model the clip's last "
                                f"{CONTEXT} frames as fixed context and generates {NEW} new frames after them, an "
                                f"81-frame window as Wan was trained on. **VAE Decode** returns the whole clip with "
                                f"the new frames appended (81 + {NEW} = {81 + NEW} frames, 9 s); the original "
                                f"frames are untouched.")
    pos = prompt(g, parts, BEACH)
    clip = wan_generate(g, m, parts, pos, neg, seed=21)
    source = wan_save(g, m, parts, pos, clip[-1], "extend_source", title="Source clip")
    latent = g.add("SoraExtend", vae=parts["vae"], video=clip[-1][0], direction="forward", new_frames=NEW,
                   context_frames=CONTEXT)
    sampler = wan_sample(g, m, parts, pos, neg, latent[0], seed=22, title="Extend")
    longer = wan_decode(g, parts, sampler)
    out = wan_save(g, m, parts, pos, longer, "extend_forward", title="Extended clip", operation="extend",
                   sources=source)
    g.layout([models_stage(parts, neg, pos)],
             [Stage("1. A source clip", [chain(*clip, source)]),
              Stage("2. Extend it forward", [chain(latent, sampler, longer, out)])])
    return g


def wan_extend_backward() -> Graph:
    m = WAN21
    g = Graph("Wan 2.1 extend backward (three beginnings)", "")
    parts, neg = load_wan(g, m, f"As in the Sora report, one clip extended **backward in time** with three seeds: "
                                f"three different beginnings that all lead into the same ending. Each output is "
                                f"{NEW} new frames followed by the unchanged clip ({NEW + 81} frames).")
    text = ("A paper boat floats down a rain-filled gutter on a city street, raindrops rippling the water around "
            "it; close-up at street level, soft overcast light.")
    pos = prompt(g, parts, text)
    clip = wan_generate(g, m, parts, pos, neg, seed=31, title="Generate the ending")
    ending = wan_save(g, m, parts, pos, clip[-1], "extend_backward_ending", title="The shared ending")
    latent = g.add("SoraExtend", vae=parts["vae"], video=clip[-1][0], direction="backward", new_frames=NEW,
                   context_frames=CONTEXT)
    seeds = []
    for seed in (32, 33, 34):
        sampler = wan_sample(g, m, parts, pos, neg, latent[0], seed=seed, title=f"Beginning, seed {seed}")
        video = wan_decode(g, parts, sampler)
        out = wan_save(g, m, parts, pos, video, f"extend_backward_seed{seed}", title=f"Seed {seed}",
                       operation="extend", sources=ending)
        seeds.append(column(sampler, video, out))
    g.layout([Stage("Models and prompts", [[parts.column() + [neg, pos]]])],
             [Stage("1. The ending, extended backward", [[column(clip[0], clip[1], latent), column(clip[2], ending)]])],
             [Stage("2. Three beginnings", [seeds])], note_over=2)
    return g


def wan_seamless_loop() -> Graph:
    m = WAN21
    g = Graph("Wan 2.1 seamless loop", "")
    parts, neg = load_wan(g, m, f"**Loop** generates a {TRANSITION}-frame transition from the clip's last "
                                f"{CONTEXT} frames back to its first {CONTEXT}. The output (clip + transition, "
                                f"{81 + TRANSITION} frames) plays on repeat without a jump.")
    text = ("A koi fish swims slowly in a clear pond among drifting lily pads, sunlight dappling the water; "
            "top-down view, calm and still.")
    pos = prompt(g, parts, text)
    clip = wan_generate(g, m, parts, pos, neg, seed=41)
    latent = g.add("SoraLoop", vae=parts["vae"], video=clip[-1][0], transition_frames=TRANSITION,
                   context_frames=CONTEXT)
    sampler = wan_sample(g, m, parts, pos, neg, latent[0], seed=42, title="Close the loop")
    looped = wan_decode(g, parts, sampler)
    out = wan_save(g, m, parts, pos, looped, "seamless_loop", title="Loop (plays on repeat)", operation="loop")
    g.layout([models_stage(parts, neg, pos)],
             [Stage("1. A clip", [chain(*clip)]),
              Stage("2. Close the loop", [chain(latent, sampler, looped, out)])])
    return g


def wan_connect_two_clips() -> Graph:
    m = WAN21
    g = Graph("Wan 2.1 connect two clips", "")
    parts, neg = load_wan(g, m, f"**Connect** generates a {TRANSITION}-frame transition between two different "
                                f"clips: it sees the last {CONTEXT} frames of the first and the first {CONTEXT} of "
                                f"the second. Output: first clip, the transition, second clip "
                                f"({81 + TRANSITION + 81} frames).")
    second_text = ("A corgi sleeps curled up on a knitted blanket in front of a crackling fireplace, warm lamp "
                   "light, the camera slowly pushing in.")
    first_prompt = prompt(g, parts, BEACH, "First clip prompt")
    second_prompt = prompt(g, parts, second_text, "Second clip prompt")
    first = wan_generate(g, m, parts, first_prompt, neg, seed=61, title="First clip")
    second = wan_generate(g, m, parts, second_prompt, neg, seed=62, title="Second clip")
    transition = ("The sunset beach slowly dissolves into a cosy living room at night as the running corgi "
                  "settles onto a blanket in front of a fireplace.")
    transition_prompt = prompt(g, parts, transition, "Transition prompt")
    latent = g.add("SoraConnect", vae=parts["vae"], first=first[-1][0], second=second[-1][0],
                   transition_frames=TRANSITION, context_frames=CONTEXT)
    sampler = wan_sample(g, m, parts, transition_prompt, neg, latent[0], seed=63, title="Transition")
    joined = wan_decode(g, parts, sampler)
    out = wan_save(g, m, parts, transition_prompt, joined, "connect_two_clips", title="First + transition + second",
                   operation="connect")
    g.layout([models_stage(parts, neg, first_prompt, second_prompt, transition_prompt)],
             [[Stage("1. First clip", [chain(*first[:2])]), Stage("2. Second clip", [chain(*second[:2])])],
              Stage("3. Connect them", [[column(first[2], second[2], latent), [sampler], [joined], [out]]])])
    return g


def wan_video_to_video() -> Graph:
    m = WAN21
    g = Graph("Wan 2.1 video to video (SDEdit)", "")
    parts, neg = load_wan(g, m, "Re-draws a video from a new prompt while keeping its layout and motion: **VAE "
                                "Encode**, then **SDEdit Noise** sets how much changes (strength 0 = keep, 1 = "
                                "ignore the input) and the sampler noises it that far with its seed. The source is "
                                "generated here; to edit your own video, load it (core Load Video + Get Video "
                                "Components), scale it to 832x480 and pass it through **Trim Frames** (1 + 4k "
                                "frames, at most 81).")
    source_prompt = prompt(g, parts, BEACH, "Source prompt")
    clip = wan_generate(g, m, parts, source_prompt, neg, seed=51, title="Generate a source clip")
    source = wan_save(g, m, parts, source_prompt, clip[-1], "sdedit_source", title="Source")
    trimmed = g.add("SoraTrimFrames", images=clip[-1][0], drop_from="end", max_frames=m.recipe.frames)
    latent = g.add("SoraVAEEncode", vae=parts["vae"], images=trimmed[0], chunk=1)
    noised = g.add("SoraSDEditNoise", latent=latent[0], strength=0.6)
    edit = ("A watercolor painting of a corgi running along a beach at sunset: loose brush strokes, soft washes "
            "of orange and blue, visible paper texture.")
    edit_prompt = prompt(g, parts, edit, "Edit prompt")
    sampler = wan_sample(g, m, parts, edit_prompt, neg, noised[0], seed=53, title="Re-draw")
    edited = wan_decode(g, parts, sampler)
    out = wan_save(g, m, parts, edit_prompt, edited, "sdedit_edited", title="Edited", operation="edit",
                   sources=source)
    g.layout([models_stage(parts, neg, source_prompt, edit_prompt)],
             [Stage("1. A source clip", [chain(*clip, source)]),
              Stage("2. Re-draw it", [[column(trimmed, latent, noised), [sampler], [edited], [out]]])])
    return g


def wan_widescreen_and_vertical() -> Graph:
    m = WAN21
    g = Graph("Wan 2.1 widescreen and vertical", "")
    r = m.recipe
    parts, neg = load_wan(g, m, f"One prompt and one seed at two shapes from one model: **{r.width}x{r.height} "
                                f"widescreen** and **{r.height}x{r.width} vertical**, the two Wan 2.1 1.3B was "
                                f"trained on. Each framing keeps the subject in view instead of cropping it.")
    text = ("A hot air balloon rises over a valley of green hills at sunrise, mist lying in the valleys, the camera "
            "slowly tilting up to follow it.")
    pos = prompt(g, parts, text)
    shapes = []
    for name, w, h in (("widescreen", r.width, r.height), ("vertical", r.height, r.width)):
        clip = wan_generate(g, m, parts, pos, neg, seed=3, title=f"Sample {name}", width=w, height=h)
        shapes.append(clip + [wan_save(g, m, parts, pos, clip[-1], f"aspect_{name}", title=f"{w}x{h} {name}")])
    g.layout([models_stage(parts, neg, pos)],
             [Stage("Two shapes, one seed", [chain(*nodes) for nodes in shapes])])
    return g


def wan_prototype_then_full_res() -> Graph:
    m = WAN21
    g = Graph("Wan 2.1 prototype small, then full resolution", "")
    r = m.recipe
    small = dict(width=r.width // 2, height=r.height // 2)
    parts, neg = load_wan(g, m, f"Try prompts and seeds at {small['width']}x{small['height']} (a quarter of the "
                                f"tokens: several times faster), then render the one you like at {r.width}x"
                                f"{r.height} with the **same seed**: the prototype is upscaled (core **Upscale "
                                f"Image**) and encoded, **SDEdit Noise** sets how much may change, and the sampler "
                                f"samples it again at full resolution.")
    text = ("A lighthouse on a rocky cliff at dusk, waves crashing against the rocks below, its beam sweeping "
            "across the darkening sea; slow aerial orbit.")
    pos = prompt(g, parts, text)
    seed = 5
    proto = wan_generate(g, m, parts, pos, neg, seed=seed, title=f"Prototype ({small['width']}x{small['height']})",
                         **small)
    preview = wan_save(g, m, parts, pos, proto[-1], "prototype", title="Prototype")
    big = g.add("ImageScale", image=proto[-1][0], width=r.width, height=r.height)
    latent = g.add("SoraVAEEncode", vae=parts["vae"], images=big[0], chunk=1)
    noised = g.add("SoraSDEditNoise", latent=latent[0], strength=0.6)
    sampler = wan_sample(g, m, parts, pos, neg, noised[0], seed=seed, title="Full resolution")
    full = wan_decode(g, parts, sampler)
    out = wan_save(g, m, parts, pos, full, "prototype_full_res", title="Full resolution")
    g.layout([models_stage(parts, neg, pos)],
             [Stage(f"1. Prototype at {small['width']}x{small['height']}", [chain(*proto, preview)]),
              Stage(f"2. The same seed at {r.width}x{r.height}",
                    [[column(big, latent, noised), [sampler], [full], [out]]])])
    return g


def wan_with_core_nodes() -> Graph:
    m = WAN21
    r = m.recipe
    g = Graph("Wan 2.1 with core nodes (KSampler extends a clip)", "")
    load_wan_note = ("Our temporal nodes inside a core Wan graph: core **Load Diffusion Model**, **Load CLIP** "
                     "(type wan) and **CLIP Text Encode** feed core **KSampler**, which makes a clip from "
                     "**Empty HunyuanVideo Latent** (core's Wan text-to-video) decoded by core **VAE Decode**. "
                     f"**Sora Extend Video** turns that clip into a latent whose `noise_mask` keeps its last "
                     f"{CONTEXT} frames and asks for {NEW} new ones; core's KSampler honours it, and **Sora VAE "
                     f"Decode** joins the new frames onto the untouched clip. Our latents are in the VAE's raw "
                     f"space and our conditioning is core's, so either sampler takes either.")
    vram = ("core's KSampler and Wan model manage their own memory; the Sora nodes here need at most 4.1 GB (VAE "
            "Decode, one latent frame at a time)")
    g.note, g.card = wan_note(m, load_wan_note, vram), (m.label, m.files)
    model = g.add("UNETLoader", unet_name=m.dit, weight_dtype="default")
    clip = g.add("CLIPLoader", clip_name=WAN_TEXT_ENCODER, type="wan", device="default")
    core_vae = g.add("VAELoader", vae_name=m.vae)
    vae = g.add("SoraVAELoader", vae_name=m.vae)
    pos = g.add("CLIPTextEncode", title="Positive prompt", clip=clip[0], text=BEACH)
    neg = g.add("CLIPTextEncode", title="Negative prompt (Wan's own)", clip=clip[0], text=r.negative_prompt)
    ksampler = dict(steps=r.steps, cfg=r.cfg, sampler_name="uni_pc", scheduler="simple", denoise=1.0)
    empty = g.add("EmptyHunyuanLatentVideo", width=r.width, height=r.height, length=r.frames, batch_size=1)
    first = g.add("KSampler", title="Generate a clip (core)", model=model[0], positive=pos[0], negative=neg[0],
                  latent_image=empty[0], seed=71, **ksampler)
    frames = g.add("VAEDecode", samples=first[0], vae=core_vae[0])
    source = wan_save(g, m, None, pos, frames, "core_source", title="Source clip")
    # strength 1: core's KSampler reads a noise_mask between 0 and 1 as a blend with the held frame at every
    # step (soft inpainting), not as a starting noise level as the Sora DiT Sampler does
    latent = g.add("SoraExtend", vae=vae["vae"], video=frames[0], direction="forward", new_frames=NEW,
                   context_frames=CONTEXT, strength=1.0)
    extend = g.add("KSampler", title="Extend (core KSampler)", model=model[0], positive=pos[0], negative=neg[0],
                   latent_image=latent[0], seed=72, **ksampler)
    longer = g.add("SoraVAEDecode", vae=vae["vae"], latent=extend[0], **DECODING)
    out = wan_save(g, m, None, pos, longer, "core_extended", title="Extended clip", operation="extend",
                   sources=source)
    g.layout([Stage("Core loaders and prompts", [[column(model, clip, core_vae, vae), column(pos, neg)]])],
             [Stage("1. A clip with core nodes", [chain(empty, first, frames, source)]),
              Stage("2. Sora Extend, core KSampler, Sora VAE Decode", [chain(latent, extend, longer, out)])])
    return g


# The template browser's order and titles: file "<n>. <title>.json" (see the module docstring).
WORKFLOWS = [
    ("Text to video", text_to_video),
    ("Text to image", text_to_image),
    ("Aspect ratios", aspect_ratios),
    ("Prototype small, then full resolution", prototype_then_full_res),
    ("Animate an image", animate_image),
    ("Extend a video forward", extend_forward),
    ("Extend backward (three beginnings)", extend_backward),
    ("Seamless loop", seamless_loop),
    ("Video to video (SDEdit)", video_to_video_sdedit),
    ("Connect two clips", connect_two_clips),
    ("Recaption a short prompt", recaption),
    ("A minute of video", long_video),
    ("Wan 2.1 text to video", wan_text_to_video),
    ("Wan 2.2 animate an image", wan_animate_image),
    ("Wan 2.1 extend a video forward", wan_extend_forward),
    ("Wan 2.1 extend backward (three beginnings)", wan_extend_backward),
    ("Wan 2.1 seamless loop", wan_seamless_loop),
    ("Wan 2.1 connect two clips", wan_connect_two_clips),
    ("Wan 2.1 video to video (SDEdit)", wan_video_to_video),
    ("Wan 2.1 widescreen and vertical", wan_widescreen_and_vertical),
    ("Wan 2.1 prototype small, then full resolution", wan_prototype_then_full_res),
    ("Wan 2.1 with core nodes (KSampler extends a clip)", wan_with_core_nodes),
]


def card_text(graph: Graph) -> tuple[str, str, list[str]]:
    """(capability, model, files) on a graph's title card: its title without the model it names first."""
    model, files = graph.card
    words = graph.title.split(" ")
    capability = " ".join(words[2:]) if " ".join(words[:2]) == model.rsplit(" ", 1)[0] else graph.title
    return capability[0].upper() + capability[1:], model, files


def workflow_names() -> list[str]:
    # Zero-padded: the browser's alphabetical sort (and any file list) then keeps the numbers in order.
    return [f"{i:02}. {title}" for i, (title, _) in enumerate(WORKFLOWS, 1)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--thumbnails", action="store_true",
                        help="also run every workflow with the default model and write its <name>.jpg thumbnail")
    args = parser.parse_args()
    OUT.mkdir(exist_ok=True)
    cards = {}
    for name, (_, build) in zip(workflow_names(), WORKFLOWS):
        path = OUT / f"{name}.json"
        graph = build()
        path.write_text(json.dumps(graph.to_json(), indent=1) + "\n")
        print(path.relative_to(ROOT))
        if graph.card:
            cards[name] = card_text(graph)
    if args.thumbnails:
        from tools.thumbnails import write_thumbnails, write_title_card

        paths = write_thumbnails(OUT, [n for n in workflow_names() if n not in cards])
        paths += [write_title_card(OUT / f"{name}.jpg", *card) for name, card in cards.items()]
        for path in paths:
            print(path.relative_to(ROOT))


if __name__ == "__main__":
    main()
