"""`edgekv eval scenes BUNDLE`: accuracy of a vision bundle on held-out synthetic scenes, one
frame and one question each (full cache), answered by greedy generation through the runtime.

The scenes and questions come from `tools/train_vision/questions.py` with a seed training
never uses (training: 0 and 1000; its progress checks: 1 and 1001; this: 7 by default).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from edgekv.tools.train_vision.questions import WEIGHTS, sampler

HELD_OUT_SEED = 7
CATEGORIES = tuple(c for c in WEIGHTS if c != "recall")


@dataclass
class SceneScore:
    right: dict[str, int] = field(default_factory=dict)
    total: dict[str, int] = field(default_factory=dict)
    mistakes: list[tuple[str, str, str]] = field(default_factory=list)  # question, truth, said

    def add(self, category: str, ok: bool) -> None:
        self.total[category] = self.total.get(category, 0) + 1
        self.right[category] = self.right.get(category, 0) + int(ok)

    def accuracy(self, categories: tuple[str, ...] | None = None) -> float:
        keys = categories or tuple(self.total)
        total = sum(self.total.get(k, 0) for k in keys)
        return sum(self.right.get(k, 0) for k in keys) / total if total else float("nan")

    def lines(self) -> list[str]:
        out = [f"{k:9s} {self.right[k]:4d}/{self.total[k]:<4d} {self.right[k] / self.total[k]:.1%}"
               for k in sorted(self.total)]
        out.append(f"colour+shape {self.accuracy(('colour', 'shape')):.1%}   all "
                   f"{self.accuracy():.1%}")
        return out


def normalise(text: str) -> str:
    return " ".join(text.lower().replace(".", " ").replace(",", " ").split())


def agrees(answer: str, truth: str) -> bool:
    """Single-word truths must be the answer's first word; descriptions must match whole."""
    said, want = normalise(answer), normalise(truth)
    return said == want if " " in want else said.split(" ")[:1] == [want]


def evaluate(session: Any, examples: int, seed: int = HELD_OUT_SEED,
             categories: tuple[str, ...] = CATEGORIES, max_new_tokens: int = 24,
             say: Callable[[str], None] = lambda _line: None) -> SceneScore:
    """Ask `examples` held-out questions, each on a fresh conversation holding one frame."""
    from edgekv.runtime.sampler import Sampler
    from edgekv.runtime.snapshot import Snapshot

    fresh = Snapshot.take(session)
    next_example = sampler(seed, categories)
    score = SceneScore()
    for i in range(examples):
        ex = next_example()
        fresh.restore(session)
        session.append_image(ex.frames[0])
        answer = "".join(session.ask(ex.question, max_new_tokens, Sampler())).strip()
        ok = agrees(answer, ex.answer)
        score.add(ex.category, ok)
        if not ok:
            score.mistakes.append((ex.question, ex.answer, answer))
        if (i + 1) % 25 == 0:
            say(f"{i + 1}/{examples}: {score.accuracy():.1%} right so far")
    fresh.restore(session)
    return score
