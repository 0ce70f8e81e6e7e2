"""The synthetic world's vocabulary, scene description and kinematics.

Everything that defines *what exists* in the procedural world lives here, so that the
renderer, the captioner, the prompt parser and the evaluation detector share one
definition of a colour, a shape, a size or a motion.

Coordinates: positions are fractions of the frame (x of the width, y of the height, origin
at the top-left corner, y pointing down); object sizes are fractions of sqrt(width*height)
so the same scene looks alike at every aspect ratio and resolution. Angles are degrees,
positive = clockwise on screen.
"""

from __future__ import annotations

import math
from functools import lru_cache
from dataclasses import asdict, dataclass, field

import numpy as np

# Saturated object colours, chosen far (CIE76 > 35) from every background and from each
# other, so a blurry generated frame still names them unambiguously.
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 190, 60),
    "blue": (40, 90, 230),
    "yellow": (245, 215, 40),
    "purple": (150, 60, 200),
    "orange": (250, 140, 20),
    "cyan": (30, 200, 220),
    "pink": (245, 110, 190),
}

# Muted / neutral backdrops; none of them is close to a palette colour.
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "black": (14, 14, 16),
    "white": (240, 240, 236),
    "dark gray": (60, 60, 62),
    "light gray": (172, 172, 168),
    "navy": (26, 34, 70),
    "beige": (220, 205, 175),
    "forest green": (34, 70, 42),
    "brown": (90, 66, 48),
}

SHAPES = ("circle", "square", "triangle", "star")
SIZES: dict[str, float] = {"small": 0.10, "medium": 0.14, "large": 0.19}
TEXTURES = ("none", "stripes", "grid", "dots")
CAMERA_MOTIONS = ("still", "left", "right", "up", "down")

DIRECTIONS: dict[str, tuple[int, int]] = {
    "left": (-1, 0),
    "right": (1, 0),
    "up": (0, -1),
    "down": (0, 1),
    "up-left": (-1, -1),
    "up-right": (1, -1),
    "down-left": (-1, 1),
    "down-right": (1, 1),
}
MOTIONS = ("still", *DIRECTIONS, "bounce", "rotate", "grow", "shrink")

# Outline of each shape in units of the object's radius r, with the extent of its
# axis-aligned box at angle 0 (left, top, right, bottom), used to keep objects in frame.
_STAR_POINTS, _STAR_OUTER, _STAR_INNER = 5, 1.3, 0.5
_TRIANGLE_R = 1.35
_SQUARE_HALF = 0.9

# What the world treats as "clearly moved": the same thresholds decide the ground-truth
# label of a trajectory and the detector's reading of a generated one.
MIN_DISPLACEMENT = 0.08  # fraction of the frame between first and last frame
MIN_SCALE_RATIO = 1.5  # size change (linear) that counts as growing / shrinking
MIN_ROTATION = 20.0  # degrees over the clip


def _check_choice(name: str, value, allowed) -> None:
    if value not in allowed:
        raise ValueError(f"{name}={value!r} is not allowed; choose one of: {', '.join(map(str, allowed))}")


@dataclass
class SceneObject:
    """One coloured shape and how it moves; enough to redraw it at any frame."""

    shape: str
    color: str
    size: str
    x: float  # world position at frame 0, fraction of width
    y: float  # world position at frame 0, fraction of height
    motion: str = "still"
    vx: float = 0.0  # fraction of the width per frame
    vy: float = 0.0  # fraction of the height per frame
    angle: float = 0.0
    spin: float = 0.0  # degrees per frame, clockwise positive
    scale_start: float = 1.0
    scale_end: float = 1.0

    def __post_init__(self) -> None:
        _check_choice("shape", self.shape, SHAPES)
        _check_choice("color", self.color, PALETTE)
        _check_choice("size", self.size, SIZES)
        _check_choice("motion", self.motion, MOTIONS)
        if self.scale_start <= 0 or self.scale_end <= 0:
            raise ValueError(
                f"scale_start={self.scale_start}, scale_end={self.scale_end}: scales must be > 0"
            )


@dataclass
class Scene:
    """A whole clip: frame geometry, backdrop, camera and objects (listed back to front)."""

    width: int
    height: int
    frames: int
    background: str
    gradient: bool = False
    texture: str = "none"
    camera: str = "still"
    camera_speed: float = 0.0  # fraction of the frame per frame along the pan direction
    objects: list[SceneObject] = field(default_factory=list)

    def __post_init__(self) -> None:
        for name in ("width", "height"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or value < 8:
                raise ValueError(f"{name}={value!r} is not allowed; use an integer >= 8 pixels")
        if not isinstance(self.frames, (int, np.integer)) or self.frames < 1:
            raise ValueError(f"frames={self.frames!r} is not allowed; use an integer >= 1")
        _check_choice("background", self.background, BACKGROUNDS)
        _check_choice("texture", self.texture, TEXTURES)
        _check_choice("camera", self.camera, CAMERA_MOTIONS)

    @property
    def scale_px(self) -> float:
        """Pixels per unit of object size: sizes follow the frame's area, not one side."""
        return math.sqrt(self.width * self.height)

    def camera_offset(self, t: float) -> tuple[float, float]:
        """Where the camera has moved by frame t, as fractions of the frame (x, y)."""
        if self.camera == "still":
            return 0.0, 0.0
        dx, dy = DIRECTIONS[self.camera]
        return dx * self.camera_speed * t, dy * self.camera_speed * t

    def to_dict(self) -> dict:
        """JSON-ready description; `from_dict` rebuilds the identical scene."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Scene":
        """Inverse of `to_dict`; validates every field on the way in."""
        data = dict(data)
        objects = [SceneObject(**o) for o in data.pop("objects", [])]
        return cls(**data, objects=objects)


def object_radius_px(scene: Scene, obj: SceneObject) -> float:
    """Base radius in pixels (before grow/shrink)."""
    return SIZES[obj.size] * scene.scale_px


def object_scale(scene: Scene, obj: SceneObject, t: float) -> float:
    """Geometric interpolation so growth looks uniform frame to frame."""
    if scene.frames == 1:
        return obj.scale_start
    return obj.scale_start * (obj.scale_end / obj.scale_start) ** (t / (scene.frames - 1))


def shape_vertices(shape: str, angle: float) -> np.ndarray:
    """Outline [N,2] of a unit shape (radius 1) rotated clockwise by `angle` degrees."""
    if shape == "circle":
        phi = np.linspace(0, 2 * np.pi, 64, endpoint=False)
        pts = np.stack([np.cos(phi), np.sin(phi)], 1)
    elif shape == "square":
        h = _SQUARE_HALF
        pts = np.array([[-h, -h], [h, -h], [h, h], [-h, h]])
    elif shape == "triangle":
        phi = np.deg2rad([-90, 30, 150])
        pts = _TRIANGLE_R * np.stack([np.cos(phi), np.sin(phi)], 1)
    elif shape == "star":
        phi = np.deg2rad(-90 + 36 * np.arange(2 * _STAR_POINTS))
        rad = np.where(np.arange(2 * _STAR_POINTS) % 2 == 0, _STAR_OUTER, _STAR_OUTER * _STAR_INNER)
        pts = rad[:, None] * np.stack([np.cos(phi), np.sin(phi)], 1)
    else:
        raise ValueError(f"shape={shape!r} is not allowed; choose one of: {', '.join(SHAPES)}")
    a = math.radians(angle)
    # y points down, so this standard rotation turns the outline clockwise on screen.
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    return pts @ rot.T


@lru_cache(maxsize=None)
def shape_extent(shape: str, rotating: bool) -> tuple[float, float, float, float]:
    """Box around a unit shape (left, top, right, bottom distances from its centre).

    A rotating shape can point anywhere, so it needs its full circumradius on every side.
    """
    pts = shape_vertices(shape, 0.0)
    if rotating:
        r = float(np.max(np.hypot(pts[:, 0], pts[:, 1])))
        return r, r, r, r
    return float(-pts[:, 0].min()), float(-pts[:, 1].min()), float(pts[:, 0].max()), float(pts[:, 1].max())


@lru_cache(maxsize=None)
def shape_area(shape: str) -> float:
    """Area of the unit shape, to turn a visible pixel count into a visible fraction."""
    if shape == "circle":
        return math.pi
    p = shape_vertices(shape, 0.0)
    return 0.5 * abs(float(np.dot(p[:, 0], np.roll(p[:, 1], 1)) - np.dot(p[:, 1], np.roll(p[:, 0], 1))))


def bounds(scene: Scene, obj: SceneObject) -> tuple[float, float, float, float]:
    """Range (x_lo, y_lo, x_hi, y_hi) of the centre that keeps the whole object in frame."""
    r = object_radius_px(scene, obj) * max(obj.scale_start, obj.scale_end)
    left, top, right, bottom = shape_extent(obj.shape, rotating=obj.spin != 0)
    return (
        left * r / scene.width,
        top * r / scene.height,
        1 - right * r / scene.width,
        1 - bottom * r / scene.height,
    )


def _reflect(p: np.ndarray, lo: float, hi: float) -> tuple[np.ndarray, np.ndarray]:
    """Fold an unbounded coordinate into [lo, hi] like a ball between two walls.

    Returns the folded positions and the number of wall hits so far (for bounce events).
    """
    span = hi - lo
    if span <= 0:
        return np.full_like(p, (lo + hi) / 2), np.zeros(p.shape, int)
    u = (p - lo) / span
    hits = np.floor(u).astype(int)
    frac = u - hits
    folded = np.where(hits % 2 == 0, frac, 1 - frac)
    return lo + folded * span, hits


def world_path(scene: Scene, obj: SceneObject) -> tuple[np.ndarray, np.ndarray, list[tuple[int, str]]]:
    """World-space centre (fractions) at every frame, plus bounce events (frame, wall)."""
    t = np.arange(scene.frames, dtype=np.float64)
    x = obj.x + obj.vx * t
    y = obj.y + obj.vy * t
    events: list[tuple[int, str]] = []
    if obj.motion == "bounce":
        x_lo, y_lo, x_hi, y_hi = bounds(scene, obj)
        x, hx = _reflect(x, x_lo, x_hi)
        y, hy = _reflect(y, y_lo, y_hi)
        for hits, names in ((hx, ("left", "right")), (hy, ("top", "bottom"))):
            for f in np.nonzero(np.diff(hits))[0] + 1:
                # Moving towards +x after the hit means the wall was on the low side.
                going_up = hits[f] > hits[f - 1]
                wall = names[1] if going_up == (hits[f - 1] % 2 == 0) else names[0]
                events.append((int(f), wall))
        events.sort()
    return x, y, events


def screen_path(scene: Scene, obj: SceneObject) -> tuple[np.ndarray, np.ndarray]:
    """Centre on screen (fractions) at every frame: world position minus camera motion."""
    x, y, _ = world_path(scene, obj)
    t = np.arange(scene.frames)
    cx, cy = scene.camera_offset(1.0)
    return x - cx * t, y - cy * t


def direction_name(dx: float, dy: float) -> str:
    """Name of the 8-way direction of a displacement given in frame fractions (y down)."""
    angle = math.degrees(math.atan2(-dy, dx)) % 360  # counterclockwise from "right"
    names = ("right", "up-right", "up", "up-left", "left", "down-left", "down", "down-right")
    return names[int(((angle + 22.5) % 360) // 45)]


def _reverses(p: np.ndarray) -> bool:
    """True if a coordinate goes clearly one way and then clearly back (a bounce)."""
    if len(p) < 3:
        return False
    for extreme in (np.argmax(p), np.argmin(p)):
        excursion = min(abs(p[extreme] - p[0]), abs(p[extreme] - p[-1]))
        if 0 < extreme < len(p) - 1 and excursion >= MIN_DISPLACEMENT * 0.75:
            return True
    return False


def classify_motion(
    xs: np.ndarray,
    ys: np.ndarray,
    scales: np.ndarray | None = None,
    rotation: float = 0.0,
    t: np.ndarray | None = None,
) -> str:
    """One rule for what a trajectory *looks like*: shared by ground truth and the detector.

    xs, ys: screen positions (frame fractions) at frames `t` (default 0, 1, 2, ...);
    scales: linear size at the first and last of those frames (or at every one);
    rotation: total degrees turned (clockwise +).
    Order matters: a reversal is a bounce even if the net displacement is small.
    """
    xs, ys = np.asarray(xs, float), np.asarray(ys, float)
    if len(xs) < 2:
        return "still"
    if _reverses(xs) or _reverses(ys):
        return "bounce"
    t = np.arange(len(xs)) if t is None else np.asarray(t, float)
    span = t[-1] - t[0]
    dx = np.polyfit(t, xs, 1)[0] * span
    dy = np.polyfit(t, ys, 1)[0] * span
    if math.hypot(dx, dy) >= MIN_DISPLACEMENT:
        return direction_name(dx, dy)
    if scales is not None and len(scales) >= 2:
        ratio = float(scales[-1] / scales[0])
        if ratio >= MIN_SCALE_RATIO:
            return "grow"
        if ratio <= 1 / MIN_SCALE_RATIO:
            return "shrink"
    if abs(rotation) >= MIN_ROTATION:
        return "rotate"
    return "still"
