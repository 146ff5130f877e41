"""Stage 1 of smolvlm-synthetic's recipe: the vision tower learns to see before it learns to
speak.

Per patch it is taught which colour and which kind of shape covers it, from each scene's ground
truth, with no language model in the loop: a step costs milliseconds per frame instead of a
pass through SmolLM2, so the tower sees tens of thousands of frames in minutes. Trained through
the language model alone, a linear probe on the tower's patch states read the kind of shape at
44% (chance 25%), and "what colour is the square?" fell from 90% with one shape to 29% with
four: the tower told colours apart but not shapes. Stage 2 (train.py, `--init` this stage's
file) trains tower and connector through the language model and keeps this head as its
auxiliary loss.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from edgekv.export import smolvlm_synthetic as smolvlm
from edgekv.runtime.sources.scene import COLOURS, KINDS
from edgekv.tools.train_vision.questions import LABEL_GRID, SIZES, label_grid, random_scene, render

AUX_PREFIX = "aux."  # the head's tensors in the stage-1 file; stage 2 picks them up


@dataclass
class SeeOptions:
    steps: int = 1200
    batch: int = 48
    lr: float = 2e-3
    warmup: int = 50
    seed: int = 0
    threads: int = 2
    minutes: float = 30.0  # a guard: training stops (and saves) when this runs out
    eval_every: int = 200
    eval_frames: int = 256


@dataclass
class Frames:
    pixels: torch.Tensor  # [N, 3, S, S], as the processor gives them
    colour_ids: torch.Tensor  # [N, patches]: 0 = background, else colour index + 1
    kind_ids: torch.Tensor  # [N, patches]: 0 = background, else kind index + 1


def aux_head(width: int) -> torch.nn.Linear:
    """Per patch: colour logits (background + COLOURS), then kind logits (background + KINDS)."""
    return torch.nn.Linear(width, len(COLOURS) + 1 + len(KINDS) + 1)


def aux_logits(head: torch.nn.Linear, patches: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """(colour logits, kind logits) per patch."""
    logits = head(patches)
    split = len(COLOURS) + 1
    return logits[..., :split], logits[..., split:]


def aux_loss(head: torch.nn.Linear, patches: torch.Tensor, colour_ids: torch.Tensor,
             kind_ids: torch.Tensor) -> torch.Tensor:
    colour, kind = aux_logits(head, patches)
    return (F.cross_entropy(colour.flatten(0, 1), colour_ids.flatten())
            + F.cross_entropy(kind.flatten(0, 1), kind_ids.flatten()))


def set_lr(optimizer: torch.optim.Optimizer, peak: float, step: int, warmup: int, steps: int
           ) -> float:
    """Linear warm-up to `peak`, then a cosine to 0 at `steps`; returns the rate set."""
    lr = peak * min(step / warmup, 0.5 * (1 + math.cos(math.pi * step / steps)))
    for group in optimizer.param_groups:
        group["lr"] = lr
    return lr


def random_frames(rng: np.random.Generator, count: int, image_processor: Any) -> Frames:
    """`count` random scenes of 0-4 shapes, rendered at the synthetic source's sizes."""
    from PIL import Image

    pictures, colours, kinds = [], [], []
    for _ in range(count):
        width, height = SIZES[rng.integers(len(SIZES))]
        shapes = random_scene(rng, width, height, int(rng.choice([0, 1, 2, 3, 3, 4, 4])))
        pictures.append([Image.fromarray(render(rng, shapes, width, height))])
        colour, kind = label_grid(shapes, width, height, LABEL_GRID)
        colours.append(torch.from_numpy(colour))
        kinds.append(torch.from_numpy(kind))
    pixels = image_processor(pictures, return_tensors="pt")["pixel_values"][:, 0]
    return Frames(pixels, torch.stack(colours), torch.stack(kinds))


def save(state: dict[str, torch.Tensor], out: Path) -> None:
    """Write a safetensors file whole or not at all (a run can be stopped mid-save)."""
    from safetensors.torch import save_file

    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_suffix(".partial")
    save_file(state, str(partial))
    partial.replace(out)


class Seer:
    """The vision tower of a freshly built smolvlm-synthetic plus the per-patch head."""

    def __init__(self, language_model: Any, tokenizer: Any, options: SeeOptions) -> None:
        torch.manual_seed(options.seed)
        self.options = options
        self.model, self.processor = smolvlm.build(language_model, tokenizer)
        self.tower = self.model.model.vision_model
        self.head = aux_head(self.model.config.vision_config.hidden_size)
        params = [*self.tower.parameters(), *self.head.parameters()]
        self.optimizer = torch.optim.AdamW(params, lr=options.lr, betas=(0.9, 0.98),
                                           weight_decay=0.01)

    def patches(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.tower(pixel_values=pixels).last_hidden_state

    @torch.no_grad()
    def accuracy(self, frames: Frames) -> dict[str, float]:
        """Per-patch accuracy on patches a shape covers (background patches are easy)."""
        colour, kind = aux_logits(self.head, self.patches(frames.pixels))
        shown = frames.kind_ids > 0
        colour = colour.argmax(-1) == frames.colour_ids
        kind = kind.argmax(-1) == frames.kind_ids
        return {"colour": float(colour[shown].float().mean()),
                "kind": float(kind[shown].float().mean())}

    def state(self) -> dict[str, torch.Tensor]:
        """The shipped format (tower, connector, new rows as built) plus the head."""
        state = smolvlm.trained_state(self.model)
        for name, value in self.head.state_dict().items():
            state[AUX_PREFIX + name] = value.detach().float().contiguous()
        return state

    def run(self, out: Path, say: Callable[[str], None] = print) -> dict[str, Any]:
        o = self.options
        torch.set_num_threads(o.threads)
        rng = np.random.default_rng(o.seed)
        held_out = random_frames(np.random.default_rng(o.seed + 1), o.eval_frames,
                                 self.processor.image_processor)
        start, history, step = time.monotonic(), [], 0
        for step in range(1, o.steps + 1):
            lr = set_lr(self.optimizer, o.lr, step, o.warmup, o.steps)
            frames = random_frames(rng, o.batch, self.processor.image_processor)
            loss = aux_loss(self.head, self.patches(frames.pixels), frames.colour_ids,
                            frames.kind_ids)
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
            elapsed = time.monotonic() - start
            if step % 25 == 0 or step <= 3:
                say(f"see step {step}/{o.steps} loss {loss.item():.3f} lr {lr:.2e} "
                    f"{elapsed / 60:.1f} min")
            last = step == o.steps or elapsed > o.minutes * 60
            if step % o.eval_every == 0 or last:
                acc = self.accuracy(held_out)
                history.append({"step": step, "minutes": round(elapsed / 60, 2), **acc})
                say(f"held-out patches at step {step}: colour {acc['colour']:.3f} "
                    f"kind {acc['kind']:.3f}")
                save(self.state(), out)
            if last:
                break
        return {"stage": "see", "steps": step,
                "minutes": round((time.monotonic() - start) / 60, 2), "history": history,
                "options": o.__dict__}
