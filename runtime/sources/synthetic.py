"""`synthetic[:key=value,...]`: a generated scene for demos, tests and benchmarks. Shapes of
named colours (squares, circles, triangles: see `scene.py`) move and bounce on a gradient, and a
seven-segment counter shows the frame number, so a model (or a person) can tell frames apart.
Seeded: the same spec gives the same frames, and `shapes_at(i)` is frame i's ground truth.
It is the scene the built-in `smolvlm-synthetic` model was trained on. Pure numpy: no OpenCV.

Keys: seed (0), size (WxH, 320x240), fps (30: stream time per frame), shapes (4),
kinds (square+circle+triangle: the shapes that may appear),
frames (end after this many; default never), live (0; 1 paces frames in real time, as a
camera does).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

from edgekv.runtime.sources.base import Frame, SourceError
from edgekv.runtime.sources.scene import COLOURS, KINDS, Shape, background, draw

# Segments a..g of the digits 0-9 (a top, b top-right, c bottom-right, d bottom,
# e bottom-left, f top-left, g middle).
_SEGMENTS = ["abcdef", "bc", "abdeg", "abcdg", "bcfg", "acdfg", "acdefg", "abc", "abcdefg",
             "abcdfg"]


@dataclass
class SyntheticOptions:
    seed: int = 0
    width: int = 320
    height: int = 240
    fps: float = 30.0
    shapes: int = 4
    kinds: tuple[str, ...] = KINDS
    frames: int | None = None
    live: bool = False


class SyntheticSource:
    def __init__(self, options: SyntheticOptions) -> None:
        self.options = options
        self.name = "synthetic"
        self.live = options.live
        self.ends = options.frames is not None  # live too: `frames=N` is an end, not a drop
        self.index = 0
        self.t0 = 0.0
        rng = np.random.default_rng(options.seed)
        n, w, h = options.shapes, options.width, options.height
        self.radius = rng.integers(max(2, min(w, h) // 16), max(3, min(w, h) // 6), n)
        self.pos = rng.uniform([0, 0], [w, h], (n, 2))
        self.vel = rng.uniform(-4.0, 4.0, (n, 2)) * max(w, h) / 320
        names = list(COLOURS)
        self.colour = [names[i] for i in rng.integers(0, len(names), n)]
        kinds = options.kinds
        self.kind = [kinds[i] for i in rng.integers(0, len(kinds), n)]
        self.background = background(w, h)

    def open(self) -> None:
        self.t0 = time.monotonic()

    def read(self) -> Frame | None:
        o = self.options
        if o.frames is not None and self.index >= o.frames:
            return None
        if o.live:  # a camera gives frame i at i / fps seconds, not sooner
            wait = self.t0 + self.index / o.fps - time.monotonic()
            if wait > 0:
                time.sleep(wait)
        image = self.render(self.index)
        frame = Frame(image, self.index, self.index / o.fps)
        self.index += 1
        return frame

    def shapes_at(self, index: int) -> list[Shape]:
        """The shapes of frame `index`, in drawing order."""
        o = self.options
        # Closed-form motion (bouncing = a triangle wave), so frame i never depends on i-1.
        span = np.array([o.width, o.height], dtype=float)
        centre = span - np.abs((self.pos + self.vel * index) % (2 * span) - span)
        return [Shape(self.kind[k], self.colour[k], float(centre[k, 0]), float(centre[k, 1]),
                      float(self.radius[k])) for k in range(len(self.radius))]

    def render(self, index: int) -> np.ndarray:
        image = draw(self.background.copy(), self.shapes_at(index))
        draw_counter(image, index)
        return image

    def close(self) -> None:
        pass


def draw_counter(image: np.ndarray, value: int, scale: int | None = None) -> None:
    """Draw `value` in white seven-segment digits in the top-left corner."""
    h, w = image.shape[:2]
    s = scale or max(1, h // 60)
    dw, dh, t = 5 * s, 9 * s, s  # digit width, height, stroke
    segments = {"a": (0, 0, dw, t), "b": (dw - t, 0, t, dh // 2 + 1), "c": (dw - t, dh // 2, t,
                dh - dh // 2), "d": (0, dh - t, dw, t), "e": (0, dh // 2, t, dh - dh // 2),
                "f": (0, 0, t, dh // 2 + 1), "g": (0, dh // 2 - t // 2, dw, t)}
    for i, digit in enumerate(str(value)):
        x0, y0 = t + i * (dw + 2 * t), t
        if x0 + dw > w or y0 + dh > h:
            return
        for name in _SEGMENTS[int(digit)]:
            x, y, sw, sh = segments[name]
            image[y0 + y : y0 + y + sh, x0 + x : x0 + x + sw] = 255


# A 4K camera's frame fits (3840x2160); a typo (size=100000x100000: 30 GB a frame, more for
# the gradient drawn in float64) is refused instead of exhausting memory.
_MAX_SIDE = 4096
_BOOLS = {"0": False, "false": False, "no": False, "1": True, "true": True, "yes": True}


def parse_options(arg: str) -> SyntheticOptions:
    """'seed=3,size=64x48,frames=100' -> SyntheticOptions."""
    options = SyntheticOptions()
    for item in filter(None, (part.strip() for part in arg.split(","))):
        key, _, value = item.partition("=")
        try:
            if key == "size":
                width, height = (int(v) for v in value.lower().split("x"))
                options.width, options.height = width, height
            elif key in ("seed", "shapes", "frames"):
                setattr(options, key, int(value))
            elif key == "kinds":
                options.kinds = tuple(value.split("+"))
                if not options.kinds or set(options.kinds) - set(KINDS):
                    raise SourceError(f"synthetic: kinds are {'+'.join(KINDS)}, not {value!r}")
            elif key == "fps":
                options.fps = float(value)
            elif key == "live":
                if value.lower() not in _BOOLS:
                    raise SourceError(f"synthetic: live is 0 or 1, not {value!r}")
                options.live = _BOOLS[value.lower()]
            else:
                raise SourceError(f"synthetic: unknown key {key!r} "
                                  "(seed, size, fps, shapes, kinds, frames, live)")
        except ValueError:
            raise SourceError(f"synthetic: bad value in {item!r}") from None
    if not (8 <= options.width <= _MAX_SIDE and 8 <= options.height <= _MAX_SIDE):
        raise SourceError(f"synthetic: size must be from 8x8 to {_MAX_SIDE}x{_MAX_SIDE}, not "
                          f"{options.width}x{options.height}")
    if not (math.isfinite(options.fps) and options.fps > 0):  # nan > 0 is False, as wanted
        raise SourceError(f"synthetic: fps must be a positive number, not {options.fps}")
    if any(v is not None and v < 0 for v in (options.seed, options.shapes, options.frames)):
        raise SourceError("synthetic: seed, shapes and frames must be >= 0")
    return options


def open_synthetic(arg: str) -> SyntheticSource:
    return SyntheticSource(parse_options(arg))
