"""What the frozen language model makes of a scene told in words: the held-out colour/shape
questions of `edgekv eval scenes`, each after "The picture shows <the scene>." instead of a
frame. A tower can at best hand the language model what those words say (it may steer it in
other ways too), so this is the reference its accuracy is read against (docs/smolvlm-synthetic.md).

    python -m edgekv.tools.train_vision bound [--examples 600] [--seed 7]
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from edgekv.runtime.sources.scene import COLOURS, KINDS
from edgekv.tools.scene_eval import CATEGORIES, HELD_OUT_SEED, SceneScore, agrees, normalise
from edgekv.tools.train_vision.questions import sampler

ASKED = ("colour", "shape")


def named(answer: str, question: str, category: str) -> str | None:
    """The first colour (or shape) word of `answer` that the question does not contain: an
    untrained model answers in sentences ("The square is a red square.")."""
    vocab = COLOURS if category == "colour" else KINDS
    asked = question.lower()
    return next((w for w in normalise(answer).split() if w in vocab and w not in asked), None)


def text_bound(language_model: Any, tokenizer: Any, examples: int,
               seed: int = HELD_OUT_SEED, max_new_tokens: int = 12,
               say: Callable[[str], None] = lambda _line: None) -> tuple[SceneScore, SceneScore]:
    """(strict, lenient) scores over the colour/shape questions among the first `examples`
    held-out examples. Strict grades as `edgekv eval scenes` does (the first word); lenient
    takes the first colour/shape word anywhere in the answer."""
    import torch

    next_example = sampler(seed, CATEGORIES)
    strict, lenient = SceneScore(), SceneScore()
    for i in range(examples):
        ex = next_example()
        if (i + 1) % 50 == 0 and strict.total:
            say(f"{i + 1}/{examples}: strict {strict.accuracy():.1%}, "
                f"lenient {lenient.accuracy():.1%}")
        if ex.category not in ASKED:
            continue
        chat = [{"role": "user", "content": f"The picture shows {ex.scene}. {ex.question}"}]
        ids = tokenizer.apply_chat_template(chat, add_generation_prompt=True,
                                            return_tensors="pt", return_dict=True)["input_ids"]
        with torch.no_grad():
            out = language_model.generate(ids, max_new_tokens=max_new_tokens, do_sample=False)
        answer = tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True).strip()
        strict.add(ex.category, agrees(answer, ex.answer))
        ok = named(answer, ex.question, ex.category) == ex.answer
        lenient.add(ex.category, ok)
        if not ok and len(lenient.mistakes) < 20:
            lenient.mistakes.append((f"{ex.scene}. {ex.question}", ex.answer, answer))
    return strict, lenient
