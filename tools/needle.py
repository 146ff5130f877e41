"""`edgekv bench-needle BUNDLE`: needle in a stream. A synthetic stream of squares and circles;
one frame (after `lead` frames) also shows a triangle; `gap` frames later the model is asked the
triangle's colour. Accuracy by policy, budget and gap, with the question known in advance (a
standing instruction fed first as protected tokens) and not known (no instruction).

One stream per (policy, budget, mode, trial) serves every gap: at each gap the session is
snapshotted, asked, and restored, so the stream goes on as if nothing had been asked.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from edgekv.runtime.errors import BudgetError, EdgeKVError
from edgekv.runtime.sources.scene import COLOURS, Shape, draw
from edgekv.runtime.sources.synthetic import SyntheticOptions, SyntheticSource

MAX_FRAMES = 2000


@dataclass
class NeedleOptions:
    gaps: tuple[int, ...] = (1, 25, 100)  # frames between the needle and the question
    lead: int = 10  # frames before the needle
    trials: int = 6
    policies: tuple[str, ...] = ("window", "streaming", "h2o", "inf-mllm", "structured")
    budgets: tuple[int, ...] = (512,)
    size: tuple[int, int] = (320, 240)
    shapes: int = 3
    seed: int = 0
    instruction: str = "Watch the frames. A triangle will appear once: remember its colour."
    question: str = "What colour was the triangle?"
    max_new_tokens: int = 8

    @property
    def frames(self) -> int:
        return self.lead + 1 + max(self.gaps)

    def check(self) -> None:
        if not self.gaps or min(self.gaps) < 1:
            raise EdgeKVError("--gaps must be positive frame counts")
        if self.lead < 0 or self.trials < 1:
            raise EdgeKVError("--lead must be >= 0 and --trials >= 1")
        if self.frames > MAX_FRAMES:
            raise EdgeKVError(f"lead + 1 + largest gap = {self.frames} frames; at most "
                              f"{MAX_FRAMES}")


@dataclass
class Cell:
    policy: str
    budget: int
    known: bool  # the question was announced before the stream
    gap: int
    answers: list[str] = field(default_factory=list)
    truth: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def correct(self) -> int:
        return sum(colour_in(a) == t for a, t in zip(self.answers, self.truth, strict=True))


def colour_in(answer: str) -> str | None:
    """The first colour name in an answer ('The triangle was red.' -> 'red')."""
    words = [w.strip(".,!?:;\"'") for w in answer.lower().split()]
    return next((w for w in words if w in COLOURS), None)


def needle_stream(options: NeedleOptions, trial: int) -> tuple[Iterator[np.ndarray], str]:
    """(frames, the triangle's colour) of one trial: the synthetic source with squares and
    circles only, and a triangle drawn on top of frame `lead`."""
    seed = options.seed * 1000 + trial
    width, height = options.size
    source = SyntheticSource(SyntheticOptions(seed=seed, width=width, height=height,
                                              shapes=options.shapes,
                                              kinds=("square", "circle")))
    rng = np.random.default_rng(seed + 7)
    r = float(rng.uniform(min(width, height) / 10, min(width, height) / 6))
    colour = list(COLOURS)[int(rng.integers(len(COLOURS)))]
    needle = Shape("triangle", colour, float(rng.uniform(r, width - r)),
                   float(rng.uniform(r, height - r)), r)

    def frames() -> Iterator[np.ndarray]:
        for i in range(options.frames):
            image = source.render(i)
            yield draw(image, [needle]) if i == options.lead else image

    return frames(), colour


def run_stream(open_session: Callable[[str, int], Any], policy: str, budget: int, known: bool,
               options: NeedleOptions, trial: int, cells: dict[int, Cell]) -> None:
    """One stream; appends this trial's answer at every gap to `cells` (keyed by gap)."""
    from edgekv.runtime.frame_feed import StreamingFeeder
    from edgekv.runtime.sampler import Sampler
    from edgekv.runtime.snapshot import Snapshot

    session = open_session(policy, budget)
    if known:
        session.add_system(options.instruction)
    feeder = StreamingFeeder(session)
    frames, colour = needle_stream(options, trial)
    for i, frame in enumerate(frames):
        feeder.append_image(frame)
        gap = i - options.lead
        if gap in cells:
            saved = Snapshot.take(session)
            answer = "".join(feeder.ask(options.question, options.max_new_tokens, Sampler()))
            saved.restore(session)
            cells[gap].answers.append(answer.strip())
            cells[gap].truth.append(colour)


def run(open_session: Callable[[str, int], Any], options: NeedleOptions,
        full_session: Callable[[str, int], Any] | None = None, full_budget: int = 0,
        say: Callable[[str], None] = lambda _line: None) -> list[Cell]:
    """Every cell of the table. `open_session(policy, budget)` opens a fresh Session; `full`
    runs on `full_session` at `full_budget` when given (a bundle big enough for the stream)."""
    options.check()
    rows = [(p, b, open_session) for p in options.policies for b in options.budgets]
    if full_session is not None:
        rows.insert(0, ("full", full_budget, full_session))
    cells: list[Cell] = []
    for policy, budget, opener in rows:
        for known in (True, False):
            by_gap = {g: Cell(policy, budget, known, g) for g in options.gaps}
            for trial in range(options.trials):
                try:
                    run_stream(opener, policy, budget, known, options, trial, by_gap)
                except BudgetError as exc:
                    for cell in by_gap.values():
                        cell.error = str(exc)
                    break
                done = by_gap[options.gaps[0]]
                say(f"{policy}@{budget} {'known' if known else 'unknown'} trial {trial + 1}/"
                    f"{options.trials}: {done.answers[-1]!r} (truth {done.truth[-1]})")
            cells.extend(by_gap.values())
    return cells


def table(cells: list[Cell], options: NeedleOptions) -> list[str]:
    head = ["policy", "budget"] + [f"{'known' if k else 'unknown'} gap {g}"
                                   for k in (True, False) for g in options.gaps]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    rows: dict[tuple[str, int], dict[tuple[bool, int], Cell]] = {}
    for c in cells:
        rows.setdefault((c.policy, c.budget), {})[(c.known, c.gap)] = c
    for (policy, budget), by in rows.items():
        values = []
        for k in (True, False):
            for g in options.gaps:
                c = by[(k, g)]
                values.append("does not fit" if c.error else f"{c.correct}/{len(c.answers)}")
        lines.append(f"| {policy} | {budget} | " + " | ".join(values) + " |")
    return lines


def to_json(cells: list[Cell], options: NeedleOptions) -> str:
    return json.dumps({"options": asdict(options), "cells": [
        {**asdict(c), "correct": c.correct} for c in cells]}, indent=1)


def say_stderr(line: str) -> None:
    sys.stderr.write(line + "\n")
    sys.stderr.flush()
