"""Scenes of named coloured shapes on a gradient: what the `synthetic` source draws, what the
built-in `smolvlm-synthetic` vision tower was trained on, and what the needle benchmark asks
about. A scene is plain data (a list of `Shape`), so every frame comes with its ground truth.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Saturated, far apart in RGB, none white: the frame counter is drawn in white.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 180, 50),
    "blue": (40, 90, 235),
    "yellow": (240, 220, 30),
    "purple": (160, 50, 200),
    "orange": (250, 140, 20),
}
KINDS = ("square", "circle", "triangle")


@dataclass(frozen=True)
class Shape:
    kind: str  # one of KINDS
    colour: str  # a key of COLOURS
    x: float  # centre, pixels
    y: float
    r: float  # half the side / the radius / half the triangle's height, pixels


def background(width: int, height: int, tint: tuple[float, float, float] = (1.0, 1.0, 0.38),
               level: float = 1 / 3) -> np.ndarray:
    """A dark diagonal gradient (the default is the synthetic source's)."""
    yy, xx = np.mgrid[0:height, 0:width]
    ramp = np.stack([xx / max(width - 1, 1), yy / max(height - 1, 1), np.ones_like(xx, float)], -1)
    return (255 * level * ramp * np.asarray(tint)).astype(np.uint8)


def shape_mask(shape: Shape, xx: np.ndarray, yy: np.ndarray) -> np.ndarray:
    dx, dy = xx - shape.x, yy - shape.y
    r = shape.r
    if shape.kind == "square":
        return (np.abs(dx) <= r) & (np.abs(dy) <= r)
    if shape.kind == "circle":
        return dx * dx + dy * dy <= r * r
    if shape.kind == "triangle":  # apex up, base 2r wide at the bottom
        return (dy >= -r) & (dy <= r) & (np.abs(dx) <= (dy + r) / 2)
    raise ValueError(f"unknown shape kind {shape.kind!r} (one of {', '.join(KINDS)})")


def draw(image: np.ndarray, shapes: list[Shape]) -> np.ndarray:
    """Paint `shapes` onto `image` in place, later ones on top; returns `image`."""
    h, w = image.shape[:2]
    for shape in shapes:
        x0, x1 = max(int(shape.x - shape.r) - 1, 0), min(int(shape.x + shape.r) + 2, w)
        y0, y1 = max(int(shape.y - shape.r) - 1, 0), min(int(shape.y + shape.r) + 2, h)
        if x0 >= x1 or y0 >= y1:
            continue
        yy, xx = np.mgrid[y0:y1, x0:x1]
        image[y0:y1, x0:x1][shape_mask(shape, xx, yy)] = COLOURS[shape.colour]
    return image


def left_to_right(shapes: list[Shape]) -> list[Shape]:
    return sorted(shapes, key=lambda s: s.x)


def describe(shapes: list[Shape]) -> str:
    """'a red square and a blue circle', left to right; 'nothing' for an empty scene."""
    names = [f"{'an' if s.colour[0] in 'aeiou' else 'a'} {s.colour} {s.kind}"
             for s in left_to_right(shapes)]
    if not names:
        return "nothing"
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
