"""Training and held-out examples: random scenes (see runtime/sources/scene.py) with questions
about them and their answers, drawn from a seeded generator.

Questions are only asked where the answer is unambiguous: "what colour is the square?" needs
exactly one square, "is there a circle on the left?" needs no circle near the middle.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from edgekv.runtime.sources.scene import (
    COLOURS,
    KINDS,
    Shape,
    background,
    describe,
    draw,
    shape_mask,
)
from edgekv.runtime.sources.synthetic import draw_counter

LABEL_GRID = 8  # smolvlm-synthetic's patch grid: 96 / 12
NUMBERS = ["zero", "one", "two", "three", "four", "five"]
SIZES = [(320, 240), (320, 240), (256, 256), (640, 480), (160, 120)]


@dataclass
class Example:
    frames: list[np.ndarray]  # RGB uint8 pictures, in stream order
    question: str
    answer: str
    category: str  # colour, shape, count, side, describe, recall
    # Per frame: what covers each patch (colour index + 1, kind index + 1; 0 for the
    # background), for the auxiliary loss that teaches the tower what to see.
    labels: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)
    # More (question, answer) turns about the same frames, asked after the first answer in one
    # conversation: training gets several answers per pass through the language model.
    follow_ups: list[tuple[str, str]] = field(default_factory=list)
    scene: str = ""  # single frames: the scene in words, as `describe` says it


def label_grid(shapes: list[Shape], width: int, height: int, grid: int, samples: int = 4
               ) -> tuple[np.ndarray, np.ndarray]:
    """(colour ids, kind ids) [grid*grid] of the squeezed square frame: per patch, the shape
    that covers most of its samples x samples points (at least two of them; later shapes are
    drawn on top), else 0. Patches on an outline count too: that is where the kind shows, and
    a patch-centre label left the tower's kind probe at 44% (see.py)."""
    if not shapes:
        return np.zeros(grid * grid, dtype=np.int64), np.zeros(grid * grid, dtype=np.int64)
    fine = grid * samples
    centres = (np.arange(fine) + 0.5) / fine
    yy, xx = np.meshgrid(centres * height, centres * width, indexing="ij")
    owner = np.zeros((fine, fine), dtype=np.int64)  # index + 1 of the shape on top
    for i, s in enumerate(shapes):
        owner[shape_mask(s, xx, yy)] = i + 1
    per_patch = owner.reshape(grid, samples, grid, samples).transpose(0, 2, 1, 3)
    per_patch = per_patch.reshape(grid * grid, samples * samples)
    counts = np.stack([(per_patch == i + 1).sum(1) for i in range(len(shapes))], 1)
    top = np.where(counts.max(1) >= 2, counts.argmax(1) + 1, 0)
    colour_of = np.array([0] + [list(COLOURS).index(s.colour) + 1 for s in shapes])
    kind_of = np.array([0] + [KINDS.index(s.kind) + 1 for s in shapes])
    return colour_of[top], kind_of[top]


def random_scene(rng: np.random.Generator, width: int, height: int, count: int,
                 kinds: tuple[str, ...] = KINDS) -> list[Shape]:
    """`count` shapes (fewer if they do not fit) that do not overlap, inside the frame."""
    shapes: list[Shape] = []
    names = list(COLOURS)
    side = min(width, height)
    for _ in range(count * 30):
        if len(shapes) == count:
            break
        r = rng.uniform(side / 14, side / 6)
        x, y = rng.uniform(r, width - r), rng.uniform(r, height - r)
        if all(np.hypot(x - s.x, y - s.y) > 1.15 * (r + s.r) for s in shapes):
            shapes.append(Shape(kinds[rng.integers(len(kinds))],
                                names[rng.integers(len(names))], float(x), float(y), float(r)))
    return shapes


def render(rng: np.random.Generator, shapes: list[Shape], width: int, height: int) -> np.ndarray:
    tint = tuple(rng.uniform(0.3, 1.0, 3))
    image = draw(background(width, height, tint, level=rng.uniform(0.15, 0.45)), shapes)
    if rng.random() < 0.9:  # the synthetic source always shows its frame counter
        draw_counter(image, int(rng.integers(0, 10_000)))
    return image


def colour_word(rng: np.random.Generator) -> str:
    return "colour" if rng.random() < 0.5 else "color"


def single_frame_questions(rng: np.random.Generator, shapes: list[Shape], width: int
                           ) -> dict[str, list[tuple[str, str]]]:
    """Every unambiguous (question, answer) about one frame, by category."""
    kinds = [s.kind for s in shapes]
    colours = [s.colour for s in shapes]
    out: dict[str, list[tuple[str, str]]] = {c: [] for c in ("colour", "shape", "count", "side",
                                                            "describe")}
    for s in shapes:
        if kinds.count(s.kind) == 1:
            out["colour"].append((f"What {colour_word(rng)} is the {s.kind}?", s.colour))
        if colours.count(s.colour) == 1:
            out["shape"].append((f"What shape is the {s.colour} object?", s.kind))
    for kind in KINDS:
        out["count"].append((f"How many {kind}s are there?", NUMBERS[kinds.count(kind)]))
        if all(abs(s.x - width / 2) > s.r for s in shapes if s.kind == kind):
            side = "left" if rng.random() < 0.5 else "right"
            there = any((s.x < width / 2) == (side == "left") for s in shapes if s.kind == kind)
            out["side"].append((f"Is there a {kind} on the {side}?", "yes" if there else "no"))
    question = "What do you see?" if rng.random() < 0.5 else "Describe the scene."
    text = describe(shapes)
    out["describe"].append((question, text[0].upper() + text[1:] + "."))
    return out


WEIGHTS = {"colour": 0.3, "shape": 0.2, "count": 0.15, "side": 0.15, "describe": 0.1,
           "recall": 0.1}


def single_frame(rng: np.random.Generator, categories: tuple[str, ...], turns: int = 1
                 ) -> Example:
    """One frame and `turns` questions about it, each of a category drawn by WEIGHTS (the
    first draws what it drew before follow-ups existed: held-out sets stay the same)."""
    width, height = SIZES[rng.integers(len(SIZES))]
    while True:
        shapes = random_scene(rng, width, height, int(rng.choice([1, 2, 2, 3, 3, 4])))
        options = single_frame_questions(rng, shapes, width)
        weights = np.array([WEIGHTS[c] if options[c] else 0.0 for c in categories])
        if weights.sum() > 0:
            break
    p = weights / weights.sum()
    category = categories[rng.choice(len(categories), p=p)]
    question, answer = options[category][rng.integers(len(options[category]))]
    example = Example([render(rng, shapes, width, height)], question, answer, category,
                      [label_grid(shapes, width, height, LABEL_GRID)], scene=describe(shapes))
    for _ in range(turns - 1):
        more = options[categories[rng.choice(len(categories), p=p)]]
        example.follow_ups.append(more[rng.integers(len(more))])
    return example


def recall(rng: np.random.Generator, frames: int) -> Example:
    """`frames` frames of squares and circles; one of them (not the last) also shows a
    triangle. The question asks for its colour after the last frame (the needle task)."""
    width, height = SIZES[rng.integers(len(SIZES))]
    needle = int(rng.integers(0, frames - 1))
    pictures, colour, labels = [], "", []
    for i in range(frames):
        shapes = random_scene(rng, width, height, int(rng.integers(1, 4)), ("square", "circle"))
        if i == needle:
            extra = random_scene(rng, width, height, 1, ("triangle",))
            shapes = [s for s in shapes if all(np.hypot(s.x - t.x, s.y - t.y) > s.r + t.r
                                               for t in extra)] + extra
            colour = extra[0].colour
        pictures.append(render(rng, shapes, width, height))
        labels.append(label_grid(shapes, width, height, LABEL_GRID))
    return Example(pictures, f"What {colour_word(rng)} was the triangle?", colour, "recall",
                   labels)


def sampler(seed: int, categories: tuple[str, ...] = tuple(WEIGHTS),
            max_frames: int = 4, turns: int = 1) -> Callable[[], Example]:
    """A function giving the next example of a seeded stream. Different seeds give disjoint
    streams in practice (training uses seed 0, held-out evaluation seed 1)."""
    rng = np.random.default_rng(seed)
    single = tuple(c for c in categories if c != "recall")
    share = WEIGHTS["recall"] if "recall" in categories else 0.0
    share = share / (share + sum(WEIGHTS[c] for c in single)) if single else 1.0

    def next_example() -> Example:
        if rng.random() < share:
            return recall(rng, int(rng.integers(2, max_frames + 1)))
        return single_frame(rng, single, turns)

    return next_example
