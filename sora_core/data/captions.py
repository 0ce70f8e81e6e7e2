"""Text for scenes: rich training captions and short user-style prompts.

The report trains on highly descriptive captions and expands short user prompts into the
same style at inference. Both directions share this module's grammar: `describe` writes what
the ground truth says (varied wording, never varied facts); `short_prompt` writes what a user
would type; the offline recaptioner parses such prompts with the same word lists.

Facts always stated in a caption: the background colour, each object's colour, canonical
shape noun (circle/square/triangle/star), size, starting position and motion (with its
direction), bounces, occlusions and camera pans.
"""

from __future__ import annotations

import math

import numpy as np

from .world import DIRECTIONS, Scene

SHAPE_WORDS = {
    "circle": ("circle", "ball", "dot"),
    "square": ("square", "box", "block"),
    "triangle": ("triangle",),
    "star": ("star",),
}
PLURALS = {"box": "boxes"}
SIZE_WORDS = {"small": ("small", "little"), "medium": ("medium-sized", "mid-sized"), "large": ("large", "big")}
NUMBER_WORDS = {1: "one", 2: "two", 3: "three"}

DIRECTION_PHRASES = {
    "left": ("to the left", "leftward"),
    "right": ("to the right", "rightward"),
    "up": ("upward", "up"),
    "down": ("downward", "down"),
    "up-left": ("up and to the left", "diagonally up and to the left"),
    "up-right": ("up and to the right", "diagonally up and to the right"),
    "down-left": ("down and to the left", "diagonally down and to the left"),
    "down-right": ("down and to the right", "diagonally down and to the right"),
}
MOVE_VERBS = ("moves", "slides", "glides", "drifts", "travels")
STILL_PHRASES = ("stays still", "remains motionless", "does not move", "sits still", "stays in place")
SPEED_WORDS = {"slow": ("slowly", "gently"), "medium": ("steadily", "smoothly"), "fast": ("quickly", "rapidly")}

# Short-prompt verbs ("-ing" forms), also the parser's motion vocabulary.
PROMPT_MOTIONS = {
    "still": ("sitting still", "standing still", "resting"),
    "bounce": ("bouncing", "bouncing around"),
    "rotate": ("spinning", "rotating"),
    "grow": ("growing", "getting bigger"),
    "shrink": ("shrinking", "getting smaller"),
}
PROMPT_MOVES = ("moving", "sliding", "drifting")

TEXTURE_PHRASES = {
    "stripes": ("with faint diagonal stripes", "covered in faint diagonal stripes"),
    "grid": ("with a faint grid of thin lines", "with a faint grid pattern"),
    "dots": ("with a faint pattern of small dots", "dotted with faint polka dots"),
}
GRADIENT_PHRASES = ("with a soft vertical gradient, lighter at the top", "fading softly darker toward the bottom")
CAMERA_PHRASES = ("The camera pans {speed} {dir}.", "The camera {speed} pans {dir}, so the background pattern drifts {opposite}.",
                  "The view pans {speed} {dir} across the backdrop.")
CAMERA_DIRECTIONS = {"left": "to the left", "right": "to the right", "up": "upward", "down": "downward"}
STATIC_CAMERA = ("The camera stays fixed.", "The camera is static.", "The shot is static, with no camera movement.")
OPPOSITE = {"left": "to the right", "right": "to the left", "up": "downward", "down": "upward"}


def _pick(rng: np.random.Generator, options):
    return options[int(rng.integers(len(options)))]


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _a(phrase: str) -> str:
    """Phrase with its indefinite article ("an orange star", "a red ball")."""
    return ("an " if phrase[:1] in "aeiou" else "a ") + phrase


def position_phrase(x: float, y: float, rng: np.random.Generator) -> str:
    """Where on screen a point (frame fractions) is, in words: a 3x3 grid of regions."""
    col = "left" if x < 1 / 3 else "right" if x > 2 / 3 else None
    row = "top" if y < 1 / 3 else "bottom" if y > 2 / 3 else None
    if row and col:
        return _pick(rng, (f"in the {row} {col} corner", f"near the {row} {col}"))
    if row:
        return _pick(rng, (f"near the {row} of the frame", f"at the {row} center"))
    if col:
        return _pick(rng, (f"on the {col} side", f"near the {col} edge"))
    return _pick(rng, ("in the center", "near the middle of the frame"))


def _speed_class(v: float) -> str:
    return "slow" if v < 0.016 else "medium" if v < 0.026 else "fast"


def _name(truth_obj: dict, rng, with_size: bool = True) -> str:
    size = _pick(rng, SIZE_WORDS[truth_obj["size"]]) + " " if with_size else ""
    return f"{size}{truth_obj['color']} {truth_obj['shape']}"


def _walls(events: list[dict], i: int) -> list[str]:
    return [e["wall"] for e in events if e["event"] == "bounce" and e["object"] == i]


def _motion_phrase(scene: Scene, i: int, truth: dict, rng) -> str:
    """Verb phrase for one object's motion, grounded in its (screen) trajectory."""
    obj = scene.objects[i]
    frames = truth["objects"][i]["frames"]
    m = obj.motion
    if m in DIRECTIONS:
        speed = _pick(rng, SPEED_WORDS[_speed_class(math.hypot(obj.vx, obj.vy))])
        verb, where = _pick(rng, MOVE_VERBS), _pick(rng, DIRECTION_PHRASES[m])
        phrase = f"{verb} {speed} {where}"
        end = frames[-1]["center"]
        if rng.random() < 0.6:
            phrase += ", ending " + position_phrase((end[0] + 0.5) / scene.width, (end[1] + 0.5) / scene.height, rng)
        return phrase
    if m == "bounce":
        if obj.vx == 0:
            phrase = _pick(rng, ("bounces up and down", "bounces vertically between the top and bottom"))
        elif obj.vy == 0:
            phrase = _pick(rng, ("bounces from side to side", "bounces back and forth horizontally"))
        else:
            phrase = _pick(rng, ("bounces around the frame", "bounces diagonally around the frame"))
        walls = _walls(truth["events"], i)
        if walls:
            named = [f"the {w} edge" for w in walls[:3]]
            listed = named[0] if len(named) == 1 else ", then ".join(named)
            phrase += _pick(rng, (f", rebounding off {listed}", f" and hits {listed}"))
        return phrase
    if m == "rotate":
        turn = "clockwise" if obj.spin > 0 else "counterclockwise"
        speed = "slowly" if abs(obj.spin) < 6 else "quickly"
        return _pick(rng, (f"rotates {speed} {turn} in place", f"spins {turn} without moving",
                           f"{speed} spins {turn} on the spot"))
    if m in ("grow", "shrink"):
        ratio = obj.scale_end / obj.scale_start
        k = max(ratio, 1 / ratio)
        amount = "about twice" if k < 2.5 else "about three times" if k < 3.5 else "several times"
        if m == "grow":
            return _pick(rng, ("grows larger", "grows steadily bigger", f"grows to {amount} its starting size"))
        return _pick(rng, ("shrinks", "shrinks steadily", f"shrinks to {'about half' if k < 2.5 else 'a fraction of'} its starting size"))
    return _pick(rng, STILL_PHRASES)


def _background_phrase(scene: Scene, rng) -> str:
    parts = []
    if scene.gradient:
        parts.append(_pick(rng, GRADIENT_PHRASES))
    if scene.texture != "none":
        parts.append(_pick(rng, TEXTURE_PHRASES[scene.texture]))
    return " and ".join(parts)


def _object_list(names: list[str]) -> str:
    items = [_a(n) for n in names]
    if len(items) == 1:
        return items[0]
    listed = ", ".join(items[:-1]) + " and " + items[-1]
    return f"{NUMBER_WORDS[len(items)]} shapes: {listed}" if len(items) == 3 else listed


def _occlusion_sentence(truth: dict, event: dict, rng) -> str:
    n = truth["frames"]
    hid, by = truth["objects"][event["object"]], truth["objects"][event["by"]]
    a, b = _name(hid, rng, with_size=False), _name(by, rng, with_size=False)
    mid = (event["start"] + event["end"]) / 2 / max(n - 1, 1)
    when = "Early on" if mid < 0.34 else "Later" if mid > 0.66 else _pick(rng, ("Midway through", "Halfway through"))
    if event["seen_before"] and event["seen_after"]:
        return _pick(rng, (
            f"{when}, the {a} passes behind the {b}, disappearing from view for a moment before reappearing on the other side.",
            f"{when}, the {a} slips behind the {b} and is briefly hidden, then comes back into view.",
        ))
    if event["seen_before"]:
        return f"{when}, the {a} moves behind the {b} and stays hidden."
    return f"The {a} starts hidden behind the {b} and then emerges into view."


def describe(scene: Scene, rng: np.random.Generator, truth: dict | None = None) -> str:
    """Highly descriptive caption of a scene from its ground truth (wording varies with rng).

    `truth` is `ground_truth(scene)`; pass it when already computed to skip a re-render.
    """
    if truth is None:
        from .render import ground_truth  # render imports nothing from here; lazy keeps it cheap

        truth = ground_truth(scene)
    video = scene.frames > 1
    objs = truth["objects"]
    names = [_name(o, rng) for o in objs]
    bg_detail = _background_phrase(scene, rng)
    detail_in_intro = bool(bg_detail) and rng.random() < 0.5
    bg = scene.background + (f" background {bg_detail}" if detail_in_intro else " background")
    kind = _pick(rng, ("short video", "video clip", "clip", "animation")) if video else _pick(rng, ("image", "picture", "still image"))
    listed = _object_list(names) if objs else "nothing but an empty backdrop"
    sentences = [_pick(rng, (
        f"{_cap(_a(kind))} of {listed} on {_a(bg)}.",
        f"This {kind} shows {listed} against {_a(bg)}.",
        f"The {kind} features {listed}, set on {_a(bg)}.",
    ))]
    if bg_detail and not detail_in_intro:
        sentences.append(f"The backdrop is {scene.background}, {bg_detail}.")

    body = []
    for i, o in enumerate(objs):
        first = o["frames"][0]["center"]
        where = position_phrase((first[0] + 0.5) / scene.width, (first[1] + 0.5) / scene.height, rng)
        ref = f"the {names[i]}"
        if not video:
            body.append(_pick(rng, (f"{_cap(ref)} sits {where}.", f"{_cap(where)} is {ref}.")))
            continue
        motion = _motion_phrase(scene, i, truth, rng)
        body.append(_pick(rng, (
            f"{_cap(ref)} starts {where} and {motion}.",
            f"{_cap(where)}, {ref} {motion}.",
            f"Starting {where}, {ref} {motion}.",
        )))
    if len(body) > 1 and rng.random() < 0.3:
        rng.shuffle(body)  # order carries no meaning; don't let the model learn one
    sentences += body

    sentences += [_occlusion_sentence(truth, e, rng) for e in truth["events"] if e["event"] == "hidden"]
    if scene.camera != "still":
        speed = "slowly" if scene.camera_speed < 0.012 else "steadily"
        sentences.append(_pick(rng, CAMERA_PHRASES).format(speed=speed, dir=CAMERA_DIRECTIONS[scene.camera], opposite=OPPOSITE[scene.camera]))
    elif video and rng.random() < 0.5:
        sentences.append(_pick(rng, STATIC_CAMERA))
    return " ".join(sentences)


def _prompt_motion(scene: Scene, i: int, rng) -> str:
    obj = scene.objects[i]
    if obj.motion in DIRECTIONS:
        where = obj.motion.replace("-", " and to the ") if "-" in obj.motion else obj.motion
        return f"{_pick(rng, PROMPT_MOVES)} {where}"
    if obj.motion == "rotate" and rng.random() < 0.4:
        return f"spinning {'clockwise' if obj.spin > 0 else 'counterclockwise'}"
    return _pick(rng, PROMPT_MOTIONS[obj.motion])


def _plural(word: str) -> str:
    return PLURALS.get(word, word + "s")


def short_prompt(scene: Scene, rng: np.random.Generator, truth: dict | None = None) -> str:
    """What a user would type for this scene: few words, synonyms, details left out."""
    if truth is None:
        from .render import ground_truth

        truth = ground_truth(scene)
    objs = scene.objects
    behind = {e["object"]: e["by"] for e in truth["events"]
              if e["event"] == "hidden" and e["seen_before"] and e["seen_after"]}
    video = scene.frames > 1
    same = len(objs) > 1 and not behind and len({(o.shape, o.motion) for o in objs}) == 1
    if same:
        word = _pick(rng, SHAPE_WORDS[objs[0].shape])
        colours = " and ".join(o.color for o in objs)
        head = f"{NUMBER_WORDS[len(objs)]} {_plural(word)}, {colours}"
        text = head + (f", {_prompt_motion(scene, 0, rng)}" if video and objs[0].motion != "still" else "")
    else:
        parts, covered = [], set(behind.values())
        for i, o in enumerate(objs):
            if i in covered:
                continue
            size = f"{o.size} " if o.size != "medium" and rng.random() < 0.25 else ""
            part = _a(f"{size}{o.color} {_pick(rng, SHAPE_WORDS[o.shape])}")
            if video and (o.motion != "still" or rng.random() < 0.3):
                part += " " + _prompt_motion(scene, i, rng)
            if i in behind:
                j = behind[i]
                part += " behind " + _a(f"{objs[j].color} {_pick(rng, SHAPE_WORDS[objs[j].shape])}")
            parts.append(part)
        text = " and ".join(parts)
    if rng.random() < 0.35 or scene.texture != "none" and rng.random() < 0.3:
        text += f" on {_a(scene.background)} background"
        if scene.texture != "none":
            text += f" with {'stripes' if scene.texture == 'stripes' else scene.texture}"
    if scene.camera != "still":
        text += _pick(rng, (f", camera panning {scene.camera}", f" as the camera pans {scene.camera}"))
    return text
