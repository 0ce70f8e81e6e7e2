"""Procedural training world with exact ground truth: sampling scenes and streaming clips.

This is the public face of the synthetic data: `sample_scene` draws a random (or partly
specified) `Scene`, `render` / `ground_truth` turn it into pixels and facts, `describe` /
`short_prompt` into the two kinds of text, and `clip` all of it as one item (for training batches
and eval's held-out split). Sampling keeps every object inside the frame for the whole clip and apart
from the others (unless an occlusion is asked for), so what a caption says is what is seen.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Sequence

import numpy as np
import torch

from .captions import describe, short_prompt
from .render import ground_truth, render, render_with_truth
from .world import (
    BACKGROUNDS,
    CAMERA_MOTIONS,
    DIRECTIONS,
    MOTIONS,
    PALETTE,
    SHAPES,
    SIZES,
    TEXTURES,
    Scene,
    SceneObject,
    bounds,
    object_radius_px,
    screen_path,
    shape_extent,
)

__all__ = [
    "BACKGROUNDS", "MOTIONS", "PALETTE", "SHAPES", "SIZES", "TEXTURES", "CAMERA_MOTIONS",
    "Scene", "SceneObject", "clip", "describe", "ground_truth", "heldout_clip", "render",
    "render_with_truth", "sample_scene", "short_prompt",
]

# Per-frame speeds (fractions of the frame). Chosen so a 17-33 frame clip shows the motion
# plainly while the object stays in view; speeds are capped further to fit the frame.
LINEAR_SPEED = (0.012, 0.03)
BOUNCE_SPEED = (0.03, 0.05)
CAMERA_SPEED = (0.008, 0.016)
SPIN_DEGREES = (4.0, 9.0)  # per frame; below half of the star's 72 deg symmetry, so no aliasing
GROW_RANGE = (0.7, 1.3)  # linear scale at the start and end of a growing object
_GAP_PX = 1.5  # minimum clearance between objects that must not touch


def _pick(rng: np.random.Generator, options: Sequence):
    return options[int(rng.integers(len(options)))]


def _linear_velocity(rng, direction: str, speed: float) -> tuple[float, float]:
    dx, dy = DIRECTIONS[direction]
    if dx and dy:  # keep diagonal speed comparable to straight speed
        speed /= math.sqrt(2)
    return dx * speed, dy * speed


def _fit_velocity(v: float, cam: float, span: float, frames: int) -> float:
    """Shrink an object's own speed until its on-screen travel fits in `span`."""
    # Most of the span, not all of it, so other objects still find room beside the path.
    room = 0.7 * span / max(frames - 1, 1)
    for f in np.linspace(1, 0, 21):
        if abs(f * v - cam) <= room:
            return float(f * v)
    return 0.0


def _start(rng, lo: float, hi: float, travel: float, pin: float | None = None) -> float:
    """Start so that start + travel stays within [lo, hi]: uniform, or nearest to `pin`."""
    a, b = lo - min(travel, 0), hi - max(travel, 0)
    if b <= a:
        return (lo + hi - travel) / 2
    return float(np.clip(pin, a, b)) if pin is not None else float(rng.uniform(a, b))


def _bounce_start(rng, lo: float, hi: float, v: float, frames: int) -> float:
    """Start a bouncing object close enough to the wall it heads for to hit it mid-clip."""
    if v == 0 or hi <= lo:
        return float(rng.uniform(lo, hi)) if hi > lo else (lo + hi) / 2
    travel = abs(v) * (frames - 1)
    far = min(hi - lo, max(0.12, travel - 0.12))
    d = float(rng.uniform(min(0.1, far), far))
    return hi - d if v > 0 else lo + d


def _kinematics(rng, scene: Scene, obj: SceneObject) -> SceneObject:
    """Give an object speeds, spin and scale that realise its motion name."""
    m = obj.motion
    if m in DIRECTIONS:
        vx, vy = _linear_velocity(rng, m, rng.uniform(*LINEAR_SPEED))
        return replace(obj, vx=vx, vy=vy)
    if m == "bounce":
        s = rng.uniform(*BOUNCE_SPEED)
        theta = math.radians(_pick(rng, (0.0, 90.0, rng.uniform(25, 65))))
        return replace(obj, vx=s * math.cos(theta) * _pick(rng, (-1, 1)),
                       vy=s * math.sin(theta) * _pick(rng, (-1, 1)))
    if m == "rotate":
        return replace(obj, angle=float(rng.uniform(0, 360)),
                       spin=float(rng.uniform(*SPIN_DEGREES) * _pick(rng, (-1, 1))))
    if m in ("grow", "shrink"):
        # Cap the largest scale so the object still fits in the shorter side.
        r = object_radius_px(scene, obj) * max(shape_extent(obj.shape, False))
        big = min(GROW_RANGE[1], 0.45 * min(scene.width, scene.height) / r)
        small = min(GROW_RANGE[0], big / 2.0)
        a, b = (small, big) if m == "grow" else (big, small)
        return replace(obj, scale_start=float(a), scale_end=float(b))
    return obj


def _place(rng, scene: Scene, obj: SceneObject, slow: float = 1.0, pin: tuple | None = None) -> SceneObject:
    """Choose a start position (and fit the speed) so the object stays fully on screen.

    slow < 1 shortens a translating object's path, which helps it fit beside others;
    pin = (x, y) asks for a start as close to that point as the path allows (None: random).
    """
    px, py = pin or (None, None)
    T = scene.frames
    if obj.motion in DIRECTIONS:
        obj = replace(obj, vx=obj.vx * slow, vy=obj.vy * slow)
    cam = scene.camera_offset(1.0)
    x_lo, y_lo, x_hi, y_hi = bounds(scene, obj)
    if obj.motion == "bounce":
        x = _bounce_start(rng, x_lo, x_hi, obj.vx, T) if px is None else float(np.clip(px, x_lo, x_hi))
        y = _bounce_start(rng, y_lo, y_hi, obj.vy, T) if py is None else float(np.clip(py, y_lo, y_hi))
        return replace(obj, x=x, y=y)
    vx = _fit_velocity(obj.vx, cam[0], x_hi - x_lo, T)
    vy = _fit_velocity(obj.vy, cam[1], y_hi - y_lo, T)
    # Screen travel is own motion minus camera motion; place the start in screen space,
    # then convert back to the world position at frame 0 (camera offset is zero there).
    x = _start(rng, x_lo, x_hi, (vx - cam[0]) * (T - 1), px)
    y = _start(rng, y_lo, y_hi, (vy - cam[1]) * (T - 1), py)
    return replace(obj, x=x, y=y, vx=vx, vy=vy)


def _occlusion_pair(rng, scene: Scene, mover: SceneObject, occluder: SceneObject):
    """Set up `mover` (behind) to pass fully behind `occluder` (in front) mid-clip and come back out."""
    T = scene.frames
    horizontal = mover.motion in ("left", "right") or (
        mover.motion not in ("up", "down") and scene.width >= scene.height
    )
    direction = mover.motion if mover.motion in ("left", "right", "up", "down") else (
        _pick(rng, ("left", "right")) if horizontal else _pick(rng, ("up", "down")))
    mover = replace(mover, motion=direction)
    s = scene.scale_px
    r_occ = object_radius_px(scene, occluder) * max(shape_extent(occluder.shape, False))
    r_mov = object_radius_px(scene, mover) * max(shape_extent(mover.shape, False))
    side = scene.width if horizontal else scene.height
    x_lo, y_lo, x_hi, y_hi = bounds(scene, mover)
    lo, hi = (x_lo, x_hi) if horizontal else (y_lo, y_hi)
    # Long enough to be fully in view for a while before and after the hidden stretch.
    travel = min((2 * (r_occ + r_mov) + 0.06 * s) / side * 1.6, hi - lo)
    speed = travel / max(T - 1, 1)
    sign = DIRECTIONS[direction][0] + DIRECTIONS[direction][1]
    # The occluder sits on the mover's line, where the mover's whole path stays on screen.
    cross = float(rng.uniform(0.4, 0.6))
    a, b = max(0.4, lo + travel / 2), min(0.6, hi - travel / 2)
    along = float(rng.uniform(a, b)) if b > a else (lo + hi) / 2
    if horizontal:
        occluder = replace(occluder, x=along, y=cross)
        mover = replace(mover, x=along - sign * travel / 2, y=cross, vx=sign * speed, vy=0.0)
    else:
        occluder = replace(occluder, x=cross, y=along)
        mover = replace(mover, x=cross, y=along - sign * travel / 2, vx=0.0, vy=sign * speed)
    return mover, occluder


def _boxes(scene: Scene, obj: SceneObject) -> np.ndarray:
    """Screen box [T, 4] (x0, y0, x1, y1 in pixels) that holds the object at every frame."""
    x, y = screen_path(scene, obj)
    t = np.arange(scene.frames)
    r = object_radius_px(scene, obj) * obj.scale_start * (obj.scale_end / obj.scale_start) ** (
        t / max(scene.frames - 1, 1))
    left, top, right, bottom = shape_extent(obj.shape, rotating=obj.spin != 0)
    cx, cy = x * scene.width, y * scene.height
    return np.stack([cx - left * r, cy - top * r, cx + right * r, cy + bottom * r], 1)


def _clear_of_each_other(scene: Scene, skip_pair: tuple[int, int] | None) -> bool:
    """True if no two objects' boxes come within `_GAP_PX` of each other at any frame."""
    boxes = [_boxes(scene, o) for o in scene.objects]
    for i in range(len(boxes)):
        for j in range(i + 1, len(boxes)):
            if (i, j) == skip_pair:
                continue
            a, b = boxes[i], boxes[j]
            apart_x = (a[:, 2] + _GAP_PX <= b[:, 0]) | (b[:, 2] + _GAP_PX <= a[:, 0])
            apart_y = (a[:, 3] + _GAP_PX <= b[:, 1]) | (b[:, 3] + _GAP_PX <= a[:, 1])
            if not (apart_x | apart_y).all():
                return False
    return True


def _fill_hints(rng, hints: list[dict], frames: int, camera: str, motions: Sequence[str]) -> list[dict]:
    """Complete partial object specs: distinct colours, plausible sizes and motions."""
    used = {h["color"] for h in hints if h.get("color")}
    free = [c for c in PALETTE if c not in used]
    out = []
    for h in hints:
        h = dict(h)
        if not h.get("color"):
            h["color"] = free.pop(int(rng.integers(len(free)))) if free else _pick(rng, list(PALETTE))
        h.setdefault("shape", None)
        h["shape"] = h["shape"] or _pick(rng, SHAPES)
        # Crowded frames get smaller objects, or three moving shapes rarely fit in 64 px.
        size_p = {1: (1 / 3, 1 / 3, 1 / 3), 2: (0.4, 0.4, 0.2)}.get(len(hints), (0.5, 0.4, 0.1))
        h["size"] = h.get("size") or str(rng.choice(list(SIZES), p=size_p))
        if not h.get("motion"):
            if frames == 1:
                h["motion"] = "still"
            else:
                # A panning camera already moves everything; own translation on top would
                # make the scene hard to read, so pick in-place motions then.
                allowed = [m for m in motions if camera == "still" or m in ("still", "rotate", "grow", "shrink")]
                allowed = [m for m in allowed if not (m == "rotate" and h["shape"] == "circle")] or ["still"]
                h["motion"] = _pick(rng, allowed)
        out.append(h)
    return out


_HINT_CHOICES = {"shape": SHAPES, "color": tuple(PALETTE), "size": tuple(SIZES), "motion": MOTIONS,
                 "spin": ("clockwise", "counterclockwise"), "x": None, "y": None}


def _check_hint(hint: dict) -> None:
    """Reject misspelt keys or values in a partial object spec before sampling around them."""
    for key, value in hint.items():
        if key not in _HINT_CHOICES:
            raise ValueError(f"objects entry key {key!r} is not allowed; use: {', '.join(_HINT_CHOICES)}")
        if key in ("x", "y"):
            if value is not None and not (isinstance(value, (int, float)) and 0 <= value <= 1):
                raise ValueError(f"objects entry {key}={value!r} is not allowed; use a fraction of the frame in [0, 1]")
        elif value is not None and value not in _HINT_CHOICES[key]:
            raise ValueError(f"objects entry {key}={value!r} is not allowed; choose one of: "
                             f"{', '.join(_HINT_CHOICES[key])}")


def _pin(hint: dict) -> tuple[float | None, float | None]:
    return hint.get("x"), hint.get("y")


def _make_object(rng, scene: Scene, hint: dict) -> SceneObject:
    obj = SceneObject(shape=hint["shape"], color=hint["color"], size=hint["size"], x=0.5, y=0.5,
                      motion=hint["motion"])
    obj = _kinematics(rng, scene, obj)
    if hint.get("spin") and obj.spin:  # "clockwise" / "counterclockwise" asked for
        obj = replace(obj, spin=abs(obj.spin) * (1 if hint["spin"] == "clockwise" else -1))
    return obj


def sample_scene(
    rng: np.random.Generator,
    width: int,
    height: int,
    frames: int,
    *,
    n_objects: int | None = None,
    objects: Sequence[dict] | None = None,
    background: str | None = None,
    gradient: bool | None = None,
    texture: str | None = None,
    camera: str | None = None,
    occlusion: bool | None = None,
    motions: Sequence[str] = MOTIONS,
    p_camera: float = 0.15,
    p_occlusion: float = 0.2,
    p_texture: float = 0.35,
    p_gradient: float = 0.4,
    max_tries: int = 60,
) -> Scene:
    """Draw a scene; every argument left as None is sampled, every one given is honoured.

    objects: partial specs, one per object, with optional keys shape / color / size /
        motion / spin ("clockwise" | "counterclockwise") / x, y (wished start, frame
        fractions; both or neither); when given they fix the count.
    occlusion: objects[0] passes behind objects[1] mid-clip and comes out again.
    motions: the motions random objects may get (e.g. leave out "bounce" for a curriculum).
    """
    probe = Scene(width, height, frames, background or "black")  # validates the geometry
    for name, value, allowed in (("background", background, BACKGROUNDS), ("texture", texture, TEXTURES),
                                 ("camera", camera, CAMERA_MOTIONS)):
        if value is not None and value not in allowed:
            raise ValueError(f"{name}={value!r} is not allowed; choose one of: {', '.join(allowed)}")
    bad = [m for m in motions if m not in MOTIONS]
    if bad or not motions:
        raise ValueError(f"motions={list(motions)!r} is not allowed; use a non-empty subset of {', '.join(MOTIONS)}")
    if n_objects is not None and not 1 <= n_objects <= 3 and objects is None:
        raise ValueError(f"n_objects={n_objects!r} is not allowed; use 1, 2 or 3")

    given = objects is not None
    for hint in objects or []:
        _check_hint(hint)
    hints = [dict(h) for h in objects] if given else [{} for _ in range(n_objects or int(rng.choice([1, 2, 3], p=[0.4, 0.35, 0.25])))]
    if occlusion is None:
        occlusion = not given and len(hints) >= 2 and frames >= 9 and rng.random() < p_occlusion
    if camera is None:
        # A pan would carry the occlusion pair around; keep those shots steady unless asked.
        pan = frames > 1 and not occlusion and rng.random() < p_camera
        camera = _pick(rng, CAMERA_MOTIONS[1:]) if pan else "still"
    cam_speed = 0.0 if camera == "still" else min(rng.uniform(*CAMERA_SPEED), 0.45 / max(frames - 1, 1))
    if texture is None:
        # A pan is only visible on a pattern varying in two directions: stripes moving left
        # look exactly like stripes moving up.
        if camera != "still":
            texture = _pick(rng, ("grid", "dots"))
        else:
            texture = _pick(rng, TEXTURES[1:]) if rng.random() < p_texture else "none"
    base = replace(
        probe,
        background=background or _pick(rng, list(BACKGROUNDS)),
        gradient=bool(rng.random() < p_gradient) if gradient is None else gradient,
        texture=texture,
        camera=camera,
        camera_speed=float(cam_speed),
    )
    if occlusion and len(hints) < 2:
        hints.append({})
    if occlusion:
        # A small mover behind a large, solid occluder is what makes "hidden" unambiguous.
        # Along the long side of the frame there is room to be seen before and after.
        along = ("left", "right") if width >= height else ("up", "down")
        defaults = [{"size": "small", "motion": _pick(rng, along)},
                    {"size": "large", "shape": _pick(rng, ("square", "circle")), "motion": "still"}]
        for hint, default in zip(hints, defaults):
            hint.update({k: v for k, v in default.items() if not hint.get(k)})
        occlusion = hints[0]["motion"] in ("left", "right", "up", "down")

    while True:
        for attempt in range(max_tries // 10):
            filled = _fill_hints(rng, hints, frames, camera, motions)
            scene = _place_all(rng, base, filled, occlusion, tries=10)
            if scene is not None:
                return scene
        if given or n_objects is not None or len(hints) <= (2 if occlusion else 1):
            # The caller fixed these objects: an overlap beats dropping one.
            objs = [_place(rng, base, _make_object(rng, base, h), pin=_pin(h)) for h in filled]
            if occlusion:
                objs[0], objs[1] = _occlusion_pair(rng, base, objs[0], objs[1])
            return replace(base, objects=objs)
        hints = hints[:-1]


def _place_all(rng, base: Scene, filled: list[dict], occlusion: bool, tries: int) -> Scene | None:
    """Place objects one at a time, each clear of those already placed; None if stuck.

    Sequential placement succeeds far more often than redrawing every object at once.
    """
    objs: list[SceneObject | None] = [None] * len(filled)
    first = 0
    if occlusion:
        objs[0], objs[1] = _occlusion_pair(rng, base, _make_object(rng, base, filled[0]),
                                           _make_object(rng, base, filled[1]))
        first = 2
    for i in range(first, len(filled)):
        for k in range(tries):
            slow = 1.0 - 0.5 * k / tries
            objs[i] = _place(rng, base, _make_object(rng, base, filled[i]), slow, _pin(filled[i]))
            placed = replace(base, objects=[o for o in objs[: i + 1]])
            if _clear_of_each_other(placed, (0, 1) if occlusion else None):
                break
        else:
            return None
    return replace(base, objects=objs)


def clip(rng: np.random.Generator, width: int, height: int, frames: int, *, captions: bool = True,
         **scene_options) -> dict:
    """One scene drawn from `rng` and rendered: "video" (3, T, H, W) float in [-1, 1], "scene" (a dict)
    and, with `captions`, the detailed "caption" and short "prompt", drawn from `rng` after the scene.
    The one way a synthetic clip is made: training batches and eval's held-out set both come from it."""
    scene = sample_scene(rng, width, height, frames, **scene_options)
    item = {"scene": scene.to_dict()}
    if captions:
        video, truth = render_with_truth(scene)
        item.update(caption=describe(scene, rng, truth), prompt=short_prompt(scene, rng, truth))
    else:
        video = render(scene)
    item["video"] = torch.from_numpy(video).permute(3, 0, 1, 2).float() / 127.5 - 1
    return item


def heldout_clip(index: int, width: int, height: int, frames: int, *, seed: int = 0, **scene_options) -> dict:
    """Item `index` of the held-out split (eval's synthetic clips): it depends only on (seed, index) and
    comes from its own seed sequence, which training's streams (`train.data.synthetic_batches`) never use."""
    return clip(np.random.default_rng([seed, 1, index, 0]), width, height, frames, **scene_options)
