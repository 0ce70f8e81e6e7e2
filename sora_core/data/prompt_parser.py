"""Read a short user prompt in the synthetic world's vocabulary into a partial scene spec.

"two squares, blue and yellow, sliding left" -> two objects {shape: square, color: blue /
yellow, motion: left}. Anything the parser does not recognise is returned verbatim in
`leftover`, so a caller can keep it instead of silently dropping what the user asked for.
The word lists mirror `captions.py` (what `short_prompt` writes), plus common synonyms.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .world import BACKGROUNDS, DIRECTIONS, PALETTE

_DIRECTIONS = tuple(DIRECTIONS)

# phrase -> (kind, value); phrases are matched longest first on hyphen-split words.
_LEXICON: dict[str, tuple[str, object]] = {}


def _add(kind: str, value, *phrases: str) -> None:
    for p in phrases:
        _LEXICON[p] = (kind, value)


for _c in PALETTE:
    _add("color", _c, _c)
_add("color", "red", "crimson", "scarlet")
_add("color", "green", "lime", "emerald")
_add("color", "blue", "azure", "cobalt")
_add("color", "yellow", "gold", "golden", "lemon")
_add("color", "purple", "violet", "lilac", "lavender")
_add("color", "cyan", "teal", "turquoise", "aqua")
_add("color", "pink", "magenta", "fuchsia", "rose")
for _b in BACKGROUNDS:
    _add("bgcolor", _b, _b)
_add("bgcolor", "dark gray", "gray", "dark grey", "grey", "charcoal")
_add("bgcolor", "light gray", "light grey", "silver")
_add("bgcolor", "navy", "dark blue", "navy blue", "midnight blue")
_add("bgcolor", "forest green", "dark green")
_add("bgcolor", "beige", "tan", "cream", "sand", "sandy")
_add("bgcolor", "black", "pitch black")
_add("bgcolor", "brown", "chocolate")

_add("shape", "circle", "circle", "circles", "ball", "balls", "dot", "dots", "disc", "discs", "disk", "disks",
     "sphere", "spheres", "orb", "orbs", "ring", "rings")
_add("shape", "square", "square", "squares", "box", "boxes", "cube", "cubes", "block", "blocks",
     "rectangle", "rectangles", "tile", "tiles")
_add("shape", "triangle", "triangle", "triangles", "pyramid", "pyramids")
_add("shape", "star", "star", "stars")
_add("shape", None, "shape", "shapes", "object", "objects", "thing", "things", "something", "item", "items")
_PLURAL_NOUNS = {p for p, (k, _) in _LEXICON.items() if k == "shape" and p.endswith("s") and p != "something"}

_add("count", 1, "a", "an", "one", "single", "1", "lone")
_add("count", 2, "two", "2", "pair of", "a pair of", "couple of", "a couple of")
_add("count", 3, "three", "3", "trio of", "a trio of")
_add("count", 0, "some", "several", "few", "a few", "multiple")  # 0: two or three, seeded

_add("size", "small", "small", "tiny", "little", "mini", "smaller")
_add("size", "medium", "medium", "medium sized", "mid sized", "mid size", "moderate")
_add("size", "large", "large", "big", "huge", "giant", "larger", "bigger")

_add("move", None, "moving", "moves", "move", "sliding", "slides", "slide", "drifting", "drifts", "drift",
     "gliding", "glides", "glide", "travelling", "traveling", "travels", "going", "goes", "flying", "flies",
     "floating", "floats", "rolling", "rolls", "racing", "races", "heading", "heads", "crossing", "crosses",
     "zooming", "zooms", "dashing", "shooting", "passing", "passes", "walking", "running", "runs")
_add("dir", "left", "left", "leftward", "leftwards", "to the left", "westward")
_add("dir", "right", "right", "rightward", "rightwards", "to the right", "eastward")
_add("dir", "up", "up", "upward", "upwards", "rising", "rises", "ascending", "climbing", "climbs")
_add("dir", "down", "down", "downward", "downwards", "falling", "falls", "dropping", "drops", "sinking",
     "sinks", "descending")
_add("from", "right", "from the left", "in from the left")
_add("from", "left", "from the right", "in from the right")
_add("from", "down", "from the top", "in from the top")
_add("from", "up", "from the bottom", "in from the bottom")
_add("motion", "bounce", "bouncing", "bounces", "bounce", "bouncy", "ricocheting", "rebounding", "bouncing around")
_add("motion", "rotate", "spinning", "spins", "spin", "rotating", "rotates", "rotate", "turning", "turns",
     "twirling", "twirls", "whirling", "revolving", "rotation")
_add("motion", "grow", "growing", "grows", "grow", "expanding", "expands", "enlarging", "getting bigger",
     "getting larger", "swelling", "inflating", "growing bigger", "growing larger")
_add("motion", "shrink", "shrinking", "shrinks", "shrink", "contracting", "getting smaller", "deflating",
     "shrinking down")
_add("motion", "still", "still", "stationary", "static", "motionless", "resting", "not moving", "idle",
     "standing still", "sitting still", "sitting", "standing", "staying still", "stays still", "at rest",
     "frozen", "unmoving")
_add("spin", "clockwise", "clockwise")
_add("spin", "counterclockwise", "counterclockwise", "counter clockwise", "anticlockwise", "anti clockwise")
_add("camera", None, "camera", "the camera", "view", "shot")
_add("pan", None, "pan", "pans", "panning", "tracking", "tracks")
_add("behind", None, "behind", "passing behind", "passes behind", "goes behind", "hidden by", "hides behind",
     "occluded by", "disappearing behind", "disappears behind")
_add("texture", "stripes", "stripes", "striped", "stripy", "with stripes", "diagonal stripes")
_add("texture", "grid", "grid", "gridded", "grid lines", "grid pattern", "checkered", "with a grid")
_add("texture", "dots", "dotted", "polka dots", "polka dot", "with dots", "spotted", "dot pattern")
_add("texture", "none", "plain")
_add("gradient", True, "gradient", "graded", "fading", "shaded")
_add("background", None, "background", "backdrop", "bg", "backgrounds")
_add("image", None, "image", "picture", "photo", "photograph", "still image", "still picture", "snapshot")
_add("stop", None, "the", "and", "on", "in", "with", "of", "is", "are", "it", "its", "to", "at", "while", "as",
     "both", "each", "that", "which", "this", "there", "be", "being", "then", "across", "around", "over",
     "into", "toward", "towards", "video", "clip", "animation", "scene", "showing", "shows", "of a", "against",
     "diagonally", "slowly", "quickly", "fast", "steadily", "gently", "smoothly", "rapidly", "other", "another",
     "one another", "each other", "together", "frame", "screen", "side", "direction", "from", "where",
     "by", "very", "slow", "speed", "lots", "lot")

_MAX_PHRASE = max(len(p.split()) for p in _LEXICON)
# "in the top left corner" is where an object starts, never a direction of motion.
_PLACE = re.compile(
    r"\b(?:in|at|near|on)\s+the\s+(?:(?:top|bottom|upper|lower|middle|center|centre)\b\s*)?"
    r"(?:(?:left|right)\b\s*)?(?:corner|side|edge|half|area|part|of the frame|of the screen)?",
)


@dataclass
class PromptSpec:
    """What a prompt asks for, as `sample_scene` keyword arguments, plus what was not understood."""

    objects: list[dict] = field(default_factory=list)
    background: str | None = None
    texture: str | None = None
    gradient: bool | None = None
    camera: str | None = None  # "still", a direction, "pan" (direction open) or None
    occlusion: bool | None = None
    image: bool = False
    leftover: list[str] = field(default_factory=list)

    def scene_options(self, rng) -> dict:
        """Keyword arguments for `sample_scene`; rng settles what the prompt left open
        ("moving" with no direction, a pan with no direction)."""
        objects = []
        for obj in self.objects:
            obj = {k: v for k, v in obj.items() if v is not None}
            if obj.get("motion") == "move":
                obj["motion"] = _DIRECTIONS[int(rng.integers(len(_DIRECTIONS)))]
            objects.append(obj)
        camera = self.camera
        if camera == "pan":
            camera = ("left", "right", "up", "down")[int(rng.integers(4))]
        opts = {"objects": objects or None, "background": self.background, "texture": self.texture,
                "gradient": self.gradient, "camera": camera, "occlusion": self.occlusion}
        return {k: v for k, v in opts.items() if v is not None}


def _place_xy(phrase: str) -> tuple[float, float]:
    """Frame position (fractions) named by a place phrase: thirds of the frame, like captions."""
    x = 0.2 if "left" in phrase else 0.8 if "right" in phrase else 0.5
    y = 0.2 if re.search(r"top|upper", phrase) else 0.8 if re.search(r"bottom|lower", phrase) else 0.5
    return x, y


def _tokens(text: str) -> list[tuple[str, int, int]]:
    """Lower-case words (hyphens split, grey -> gray) with their character spans."""
    out = []
    for m in re.finditer(r"[a-z0-9]+|[^\sa-z0-9-]", text.lower()):
        word = {"grey": "gray", "centre": "center"}.get(m.group(), m.group())
        out.append((word, m.start(), m.end()))
    return out


def _match(tokens) -> list[tuple[str, object, int, int]]:
    """Longest-match lexicon items: (kind, value, first token, last token + 1)."""
    items, i = [], 0
    while i < len(tokens):
        for n in range(min(_MAX_PHRASE, len(tokens) - i), 0, -1):
            phrase = " ".join(t[0] for t in tokens[i : i + n])
            if phrase in _LEXICON:
                kind, value = _LEXICON[phrase]
                items.append((kind, value, i, i + n))
                i += n
                break
        else:
            items.append(("unknown" if tokens[i][0].isalnum() else "punct", tokens[i][0], i, i + 1))
            i += 1
    return items


def _group(count: int, shape, colors: list[str], size) -> dict:
    return {"count": max(count, len(colors)), "shape": shape, "colors": colors, "size": size,
            "motion": None, "h": None, "v": None, "spin": None}


def _motion_of(g: dict) -> str | None:
    """Motion name of a group; "move" means moving in a direction the prompt did not say."""
    if g["motion"] not in (None, "move"):
        return g["motion"]
    if g["h"] or g["v"]:
        return "-".join(d for d in (g["v"], g["h"]) if d)
    return g["motion"]


def _next_kind(items, idx: int) -> str | None:
    """Kind of the next item that is not a filler word (punctuation counts: it ends a phrase)."""
    for kind, *_ in items[idx + 1 :]:
        if kind != "stop":
            return kind
    return None


class _Reader:
    """Left-to-right reading state: which object (or the camera) the next words are about."""

    def __init__(self, text: str):
        self.places = [(m.start(), m.end(), _place_xy(m.group())) for m in _PLACE.finditer(text.lower())
                       if re.search(r"top|bottom|upper|lower|left|right|middle|center|centre", m.group())]
        self.tokens = _tokens(text)
        self.in_place = [next((i for i, (a, b, _) in enumerate(self.places) if a <= s < b), None)
                         for _, s, _ in self.tokens]
        self.placed: set[int] = set()
        self.items = _match(self.tokens)
        self.spec = PromptSpec()
        self.groups: list[dict] = []
        self.colors: list[str] = []  # colours waiting for their noun
        self.size = self.count = None
        self.waiting: list[tuple[int, int]] = []  # token spans of words waiting for their noun
        self.pending = _group(1, None, [], None)  # motion words seen before any object
        self.camera: dict | None = None  # open camera clause ("the camera pans left")
        self.camera_seen: dict | None = None  # the first camera clause, kept after it closes
        self.text = text
        self.mover = self.occluder = None
        self.used = [False] * len(self.tokens)

    def target_object(self) -> dict:
        return self.groups[-1] if self.groups else self.pending

    def target(self) -> dict:
        return self.camera if self.camera is not None else (self.groups[-1] if self.groups else self.pending)

    def read(self) -> PromptSpec:
        for idx, (kind, value, a, b) in enumerate(self.items):
            if kind in ("stop", "punct"):
                if kind == "punct" and value in ",;.":
                    self.camera = None  # "camera panning left, a red ball ..." ends the clause
                continue
            place = self.in_place[a]
            if place is not None:  # "in the top left corner": where the last object starts
                if place not in self.placed:
                    self.placed.add(place)
                    self.target_object().update(zip(("x", "y"), self.places[place][2]))
                self.used[a:b] = [True] * (b - a)
                continue
            verdict = self.take(kind, value, idx, a, b)
            if verdict == "wait":  # "a", "big", "red": understood only once a noun claims them
                self.waiting.append((a, b))
            elif verdict:
                self.used[a:b] = [True] * (b - a)
        return self.finish()

    def take(self, kind: str, value, idx: int, a: int, b: int) -> bool | str | None:
        """Apply one lexicon item: True if understood, False if it cannot apply here (then it
        is kept as text), "wait" if it depends on a noun that may still come."""
        nxt = _next_kind(self.items, idx)
        spec = self.spec
        if kind == "color":
            if nxt == "background":
                spec.background = {"blue": "navy", "green": "forest green"}.get(value)
                return spec.background is not None
            self.colors.append(value)
            self.waiting.append((a, b))
            if nxt not in ("color", "size", "shape", "count") and self.groups:
                self._fill_last_group()
            return None  # already recorded as waiting (and maybe claimed)
        elif kind == "bgcolor":
            if nxt in ("shape", "size"):
                return False  # "a white ball": no object can have a backdrop colour here
            spec.background = value
        elif kind == "size":
            self.size = value
            return "wait"
        elif kind == "count":
            self.count = value or (3 if " ".join(t[0] for t in self.tokens[a:b]) in ("several", "multiple") else 2)
            return "wait"
        elif kind == "shape":
            plural = " ".join(t[0] for t in self.tokens[a:b]) in _PLURAL_NOUNS
            colors = self.colors
            n = self.count or (2 if plural else 1)
            if len(colors) == 1 and n > 1:  # "two red balls": both are red
                colors = colors * n
            g = _group(n, value, colors, self.size)
            self._claim()
            for key in ("motion", "h", "v", "spin", "x", "y"):
                g[key] = self.pending.get(key)
            self.groups.append(g)
            if self.mover is not None and self.occluder is None:
                self.occluder = g
            self.pending = _group(1, None, [], None)
            self.colors, self.size, self.count, self.camera = [], None, None, None
        elif kind in ("camera", "pan"):
            if self.camera is None:
                self.camera = self.camera_seen or {"motion": None, "h": None, "v": None}
                self.camera_seen = self.camera
            if kind == "pan":
                self.camera["motion"] = self.camera["motion"] or "move"
        elif kind == "move":
            t = self.target()
            t["motion"] = t["motion"] or "move"
        elif kind in ("dir", "from"):
            self.target()["h" if value in ("left", "right") else "v"] = value
        elif kind == "motion":
            t = self.target()
            if t is self.camera and value != "still":
                return False  # cameras here pan or stay; they do not bounce or spin
            t["motion"] = value
        elif kind == "spin":
            t = self.target()
            if t is self.camera:
                return False
            t["spin"] = value
            if t["motion"] in (None, "move"):
                t["motion"] = "rotate"
        elif kind == "behind":
            spec.occlusion = True
            self.mover = self.groups[-1] if self.groups else None
        elif kind == "texture":
            spec.texture = value
            if value == "none":
                spec.gradient = False
        elif kind == "gradient":
            spec.gradient = True
        elif kind == "image":
            spec.image = True
        elif kind != "background":
            return False
        return True

    def _claim(self) -> None:
        """The words waiting for a noun found one: they were understood after all."""
        for a, b in self.waiting:
            self.used[a:b] = [True] * (b - a)
        self.waiting = []

    def _fill_last_group(self) -> None:
        """'two squares, blue and yellow': colours after the noun fill that noun's group."""
        g = self.groups[-1]
        room = max(g["count"] - len(g["colors"]), 0)
        if room:
            g["colors"] += self.colors[:room]
            self.colors = self.colors[room:]
            if not self.colors:
                self._claim()

    def finish(self) -> PromptSpec:
        spec, groups = self.spec, self.groups
        if self.colors:  # "something red", or colours nobody claimed
            if groups and len(groups[-1]["colors"]) < groups[-1]["count"]:
                self._fill_last_group()
            if self.colors:
                groups.append(_group(len(self.colors), None, self.colors, self.size))
                self._claim()
        if not groups and any(self.pending[k] for k in ("motion", "h", "v", "spin")):
            groups.append(self.pending)
        cam = self.camera_spec()
        if cam is not None:
            spec.camera = cam
        if spec.occlusion and self.mover is not None and self.occluder is not None:
            # sample_scene's convention: objects[0] passes behind objects[1].
            groups = [self.mover, self.occluder] + [g for g in groups if g not in (self.mover, self.occluder)]
        for g in groups:
            motion = _motion_of(g)
            for k in range(g["count"]):
                spec.objects.append({
                    "shape": g["shape"],
                    "color": g["colors"][k] if k < len(g["colors"]) else None,
                    "size": g["size"],
                    "motion": motion,
                    "spin": g["spin"],
                    # One place for a group: only its first member can start there.
                    "x": g.get("x") if k == 0 else None,
                    "y": g.get("y") if k == 0 else None,
                })
        spec.objects = spec.objects[:3]  # the world holds at most three objects
        spec.leftover = _leftover(self.text, self.tokens, self.used)
        return spec

    def camera_spec(self) -> str | None:
        """"still", a pan direction, "pan" (direction left open) or None (not mentioned)."""
        cam = self.camera_seen
        if cam is None or (cam["motion"] is None and not (cam["h"] or cam["v"])):
            return None
        if cam["motion"] == "still":
            return "still"
        return cam["h"] or cam["v"] or "pan"


def parse_prompt(text: str) -> PromptSpec:
    """Partial scene spec from a short prompt; see the module docstring."""
    return _Reader(text).read()


def _leftover(text: str, tokens, used: list[bool]) -> list[str]:
    """Runs of the original text made of words the parser did not use, if any is a real word."""
    spans, run = [], []
    for (word, s, e), u in zip(tokens, used):
        if u:
            if run:
                spans.append(run)
            run = []
        else:
            run.append((word, s, e))
    if run:
        spans.append(run)
    out = []
    for run in spans:
        # Worth keeping if it holds a word that is not mere filler ("of a", "and the").
        if any(_LEXICON.get(w, ("content",))[0] not in ("stop", "count") for w, _, _ in run if w.isalnum()):
            piece = text[run[0][1] : run[-1][2]].strip(" ,;.")
            out.append(re.sub(r"^(?:and|with)\s+", "", piece))
    return out
