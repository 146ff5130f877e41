"""Train smolvlm-synthetic's vision tower + connector with SmolLM2 frozen.

The loss is the language model's cross-entropy on the answer tokens (and the closing
<|im_end|>) of chat-formatted questions about rendered scenes, so the vision tower learns to
speak in SmolLM2's embedding space. Only the vision tower, the connector and the embedding rows
of the four new special tokens change. Seeded: the same arguments give the same weights on the
same software (CPU float arithmetic, thread count fixed by --threads).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from edgekv.export import smolvlm_synthetic as smolvlm
from edgekv.tools.train_vision.questions import WEIGHTS, Example, sampler
from edgekv.tools.train_vision.see import AUX_PREFIX, aux_head, aux_loss, save, set_lr


@dataclass
class TrainOptions:
    steps: int = 900
    batch: int = 24
    recall_batch: int = 8
    lr: float = 1e-3
    warmup: int = 40
    seed: int = 0
    threads: int = 2
    minutes: float = 60.0  # a guard: training stops (and saves) when this runs out
    eval_every: int = 100
    eval_examples: int = 96
    aux_weight: float = 1.0  # the per-patch colour/kind loss (training only; not shipped)
    init: str = ""  # warm start from these shipped-format weights (a .safetensors file)
    stop_after: int = 0  # stop (and save) after this many steps, the schedule unchanged
    turns: int = 1  # questions per single-frame conversation (answers in one pass)


@dataclass
class Batch:
    ids: torch.Tensor  # [B, T]
    mask: torch.Tensor  # [B, T]
    pixels: torch.Tensor  # [F, 3, S, S], frames in order of their image tokens
    targets: torch.Tensor  # [B, T]: the token predicted at each position, -100 where no loss
    colour_ids: torch.Tensor  # [F, patches]: what each patch centre shows (0 = background)
    kind_ids: torch.Tensor  # [F, patches]


class Trainer:
    def __init__(self, language_model: Any, tokenizer: Any, options: TrainOptions) -> None:
        torch.manual_seed(options.seed)
        self.options = options
        self.model, self.processor = smolvlm.build(language_model, tokenizer)
        self.tokenizer = tokenizer
        self.base_vocab = language_model.config.vocab_size
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.vision = [*self.model.model.vision_model.parameters(),
                       *self.model.model.connector.parameters()]
        for p in self.vision:
            p.requires_grad_(True)
        table = self.model.model.text_model.embed_tokens.weight
        self.new_rows = torch.nn.Parameter(table[self.base_vocab:].clone())
        # Training-only heads: per patch, which colour and which kind of shape (or none).
        self.aux = aux_head(self.model.config.vision_config.hidden_size)
        if options.init:
            state = smolvlm.load_state(Path(options.init))
            self.new_rows.data[:] = state.pop("model.text_model.embed_tokens.new_rows")
            sidecar = aux_path(Path(options.init))
            if sidecar.is_file():  # an earlier run of this stage left its head beside
                state.update(smolvlm.load_state(sidecar))
            head = {k[len(AUX_PREFIX):]: state.pop(k) for k in list(state)
                    if k.startswith(AUX_PREFIX)}
            if head:  # a fresh head's first gradients would only shake the tower
                self.aux.load_state_dict(head)
            self.model.load_state_dict(state, strict=False)
        self.image_id = self.processor.image_token_id
        self.end_ids = tokenizer.encode("<|im_end|>", add_special_tokens=False)
        self.optimizer = torch.optim.AdamW(
            [{"params": [*self.vision, *self.aux.parameters()], "weight_decay": 0.01},
             {"params": [self.new_rows], "weight_decay": 0.0}],
            lr=options.lr, betas=(0.9, 0.98))

    # -- data ----------------------------------------------------------------------------------
    def prompt(self, example: Example) -> str:
        content = [{"type": "image"}] * len(example.frames) + [
            {"type": "text", "text": example.question}]
        return self.processor.apply_chat_template([{"role": "user", "content": content}],
                                                  add_generation_prompt=True)

    def batch(self, examples: list[Example]) -> Batch:
        rows, frames, colour_ids, kind_ids = [], [], [], []
        for ex in examples:
            enc = self.processor(text=self.prompt(ex), images=[list(map(_pil, ex.frames))],
                                 return_tensors="pt")
            seq, where = enc["input_ids"][0].tolist(), []
            for turn, (question, answer) in enumerate([(ex.question, ex.answer), *ex.follow_ups]):
                if turn:  # a follow-up: the chat template's user turn, then the assistant's
                    seq += self.encode(f"\n<|im_start|>user\n{question}<|im_end|>\n"
                                       "<|im_start|>assistant\n")
                answer_ids = self.encode(answer) + self.end_ids
                where.append((len(seq), answer_ids))
                seq += answer_ids
            rows.append((seq, where))
            frames.append(enc["pixel_values"][0])
            colour_ids += [torch.from_numpy(c) for c, _ in ex.labels]
            kind_ids += [torch.from_numpy(k) for _, k in ex.labels]
        width = max(len(seq) for seq, _ in rows)
        ids = torch.zeros(len(rows), width, dtype=torch.long)
        mask = torch.zeros(len(rows), width, dtype=torch.long)
        targets = torch.full((len(rows), width), -100, dtype=torch.long)
        for i, (seq, where) in enumerate(rows):
            ids[i, : len(seq)] = torch.tensor(seq)
            mask[i, : len(seq)] = 1
            for start, answer in where:  # position t predicts token t+1
                targets[i, start - 1 : start - 1 + len(answer)] = torch.tensor(answer)
        return Batch(ids, mask, torch.cat(frames), targets, torch.stack(colour_ids),
                     torch.stack(kind_ids))

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False)

    # -- model ---------------------------------------------------------------------------------
    def hidden(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """(the language model's last hidden states, the vision tower's patch states)."""
        inner = self.model.model
        patches = inner.vision_model(pixel_values=batch.pixels).last_hidden_state
        features = inner.connector(patches)
        table = inner.text_model.embed_tokens.weight[: self.base_vocab]
        vocab = torch.cat([table, self.new_rows])
        embeds = F.embedding(batch.ids, vocab)
        is_image = batch.ids == self.image_id
        embeds = embeds.masked_scatter(is_image[..., None],
                                       features.reshape(-1, features.shape[-1]).to(embeds.dtype))
        out = inner.text_model(inputs_embeds=embeds, attention_mask=batch.mask)
        return out.last_hidden_state, patches

    def logits_at(self, hidden: torch.Tensor, where: torch.Tensor) -> torch.Tensor:
        table = self.model.model.text_model.embed_tokens.weight[: self.base_vocab]
        return hidden[where] @ torch.cat([table, self.new_rows]).T  # tied lm_head

    def loss(self, batch: Batch) -> torch.Tensor:
        where = batch.targets != -100
        hidden, patches = self.hidden(batch)
        answer = F.cross_entropy(self.logits_at(hidden, where), batch.targets[where])
        if not self.options.aux_weight:
            return answer
        seen = aux_loss(self.aux, patches, batch.colour_ids, batch.kind_ids)
        return answer + self.options.aux_weight * seen

    @torch.no_grad()
    def accuracy(self, examples: list[Example]) -> dict[str, float]:
        """Share of examples whose whole answer is the argmax at every answer position
        (teacher-forced; greedy generation agrees with it up to the first mistake)."""
        right: dict[str, list[bool]] = {}
        for start in range(0, len(examples), 16):
            part = examples[start : start + 16]
            batch = self.batch(part)
            logits = self.logits_at(self.hidden(batch)[0], batch.targets != -100)
            guess = logits.argmax(-1)
            sizes = (batch.targets != -100).sum(1).tolist()
            for ex, g, t in zip(part, guess.split(sizes), batch.targets[batch.targets != -100]
                                .split(sizes), strict=True):
                right.setdefault(ex.category, []).append(bool((g == t).all()))
        return {k: float(np.mean(v)) for k, v in sorted(right.items())}

    def state(self) -> dict[str, torch.Tensor]:
        table = self.model.model.text_model.embed_tokens.weight
        table.data[self.base_vocab:] = self.new_rows.data
        return smolvlm.trained_state(self.model)

    # -- loop ----------------------------------------------------------------------------------
    def run(self, out: Path, say: Callable[[str], None] = print) -> dict[str, Any]:
        o = self.options
        torch.set_num_threads(o.threads)
        singles = sampler(o.seed, tuple(c for c in WEIGHTS if c != "recall"), turns=o.turns)
        recalls = sampler(o.seed + 1000, ("recall",))
        choose = np.random.default_rng(o.seed + 2000)
        held_out = held_out_examples(o.seed + 1, o.eval_examples)
        start, history, step = time.monotonic(), [], 0
        for step in range(1, o.steps + 1):
            lr = set_lr(self.optimizer, o.lr, step, o.warmup, o.steps)
            if choose.random() < WEIGHTS["recall"]:
                examples = [recalls() for _ in range(o.recall_batch)]
            else:
                examples = [singles() for _ in range(o.batch)]
            loss = self.loss(self.batch(examples))
            self.optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_([*self.vision, *self.aux.parameters(), self.new_rows],
                                           1.0)
            self.optimizer.step()
            elapsed = time.monotonic() - start
            if step % 10 == 0 or step <= 3:
                say(f"step {step}/{o.steps} loss {loss.item():.3f} lr {lr:.2e} "
                    f"{elapsed / 60:.1f} min")
            last = step in (o.steps, o.stop_after) or elapsed > o.minutes * 60
            if step % o.eval_every == 0 or last:
                acc = self.accuracy(held_out)
                history.append({"step": step, "minutes": round(elapsed / 60, 2), **acc})
                say(f"held-out accuracy at step {step}: "
                    + ", ".join(f"{k} {v:.2f}" for k, v in acc.items()))
                save(self.state(), out)
                save({AUX_PREFIX + k: v.detach() for k, v in self.aux.state_dict().items()},
                     aux_path(out))
            if last:
                break
        return {"steps": step, "minutes": round((time.monotonic() - start) / 60, 2),
                "history": history, "options": o.__dict__}


def held_out_examples(seed: int, count: int) -> list[Example]:
    """`count` single-frame examples and count/4 recall examples of a seed training never
    uses."""
    singles = sampler(seed, tuple(c for c in WEIGHTS if c != "recall"))
    recalls = sampler(seed + 1000, ("recall",))
    return [singles() for _ in range(count)] + [recalls() for _ in range(count // 4)]


def aux_path(weights: Path) -> Path:
    """Where a run keeps its auxiliary head: beside the weights, not in them (not shipped)."""
    return weights.with_name(weights.stem + ".aux.safetensors")


def _pil(frame: np.ndarray) -> Any:
    from PIL import Image

    return Image.fromarray(frame)
