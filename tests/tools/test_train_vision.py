"""smolvlm-synthetic's training pieces: unambiguous questions, a model assembled around a
language model, weights that round-trip, and a trainer whose loss goes down (on a tiny LM)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edgekv.export import smolvlm_synthetic as smolvlm
from edgekv.runtime.sources.scene import Shape, describe
from edgekv.tools.train_vision.questions import sampler, single_frame_questions
from edgekv.tools.train_vision.train import Trainer, TrainOptions
from helpers import load_tiny


def ask(shapes, width=320):
    return single_frame_questions(np.random.default_rng(0), shapes, width)


def test_questions_are_only_asked_when_the_answer_is_unambiguous():
    two_squares = [Shape("square", "red", 40, 50, 10), Shape("square", "blue", 280, 50, 10),
                   Shape("circle", "red", 150, 200, 10)]
    q = ask(two_squares)
    assert [a for _, a in q["colour"]] == ["red"]  # the circle only: two squares
    assert [a for _, a in q["shape"]] == ["square"]  # "the blue object"; red is twice
    assert dict(q["count"])["How many squares are there?"] == "two"
    assert dict(q["count"])["How many triangles are there?"] == "zero"
    sides = dict(q["side"])
    assert not any("circle" in s for s in sides)  # the circle straddles the middle (x=150±10
    # is within r of 160)
    assert q["describe"][0][1] == "A red square, a red circle and a blue square."


def test_describe_and_articles():
    assert describe([Shape("circle", "orange", 5, 5, 2)]) == "an orange circle"
    assert describe([]) == "nothing"


def test_samplers_are_seeded_and_recall_has_one_triangle():
    a, b = sampler(3)(), sampler(3)()
    assert a.question == b.question and np.array_equal(a.frames[0], b.frames[0])
    recall = sampler(5, ("recall",))
    for _ in range(3):
        ex = recall()
        assert 2 <= len(ex.frames) <= 4 and ex.category == "recall"


@pytest.fixture(scope="module")
def tiny_lm(tiny_model_dir):
    """A tiny Llama whose output depends on its input: at HF's initializer_range (0.02) a
    random 2-layer model gives near-uniform logits whatever it is fed, and nothing could be
    learned through it."""
    from conftest import tiny_config
    from transformers import LlamaForCausalLM

    _, tok = load_tiny(tiny_model_dir("llama"))
    config = tiny_config("llama")
    config.initializer_range = 0.3
    torch.manual_seed(0)
    return LlamaForCausalLM(config).eval(), tok


def test_build_keeps_the_language_model_and_adds_the_tokens(tiny_lm):
    lm, tok = load_tiny_copy(tiny_lm)
    torch.manual_seed(0)
    model, processor = smolvlm.build(lm, tok)
    vocab = lm.config.vocab_size
    table = model.model.text_model.embed_tokens.weight
    assert table.shape[0] == vocab + len(smolvlm.NEW_TOKENS)
    assert torch.equal(table[:vocab], lm.model.embed_tokens.weight)
    assert model.lm_head.weight.data_ptr() == table.data_ptr()  # tied, as in SmolLM2
    assert processor.image_token_id == vocab + smolvlm.NEW_TOKENS.index("<image>")
    ids = torch.tensor([[1, 5, 9, 30]])
    want = lm(input_ids=ids).logits
    got = model(input_ids=ids).logits[..., :vocab]
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_trained_state_round_trips(tiny_lm):
    lm, tok = load_tiny_copy(tiny_lm)
    torch.manual_seed(1)
    model, _ = smolvlm.build(lm, tok)
    state = smolvlm.trained_state(model)
    assert all(v.dtype == torch.float16 for v in state.values())
    rows = state.pop("model.text_model.embed_tokens.new_rows").float()
    lm2, tok2 = load_tiny_copy(tiny_lm)
    torch.manual_seed(2)  # a different initialisation, overwritten by the state
    again, _ = smolvlm.build(lm2, tok2, {k: v.float() for k, v in state.items()})
    pixels = torch.rand(1, 3, smolvlm.FRAME, smolvlm.FRAME)
    with torch.no_grad():
        a = model.model.vision_model(pixel_values=pixels).last_hidden_state
        b = again.model.vision_model(pixel_values=pixels).last_hidden_state
    torch.testing.assert_close(a, b, rtol=2e-2, atol=2e-2)  # fp16 storage
    assert rows.shape == (len(smolvlm.NEW_TOKENS), lm.config.hidden_size)


def test_trainer_loss_goes_down_on_a_fixed_batch(tiny_lm):
    lm, tok = load_tiny_copy(tiny_lm)
    trainer = Trainer(lm, tok, TrainOptions(lr=3e-3, warmup=1))
    batch = trainer.batch([sampler(0)() for _ in range(4)])
    frozen = lm.model.layers[0].mlp.up_proj.weight.clone()
    losses = []
    for _ in range(12):
        loss = trainer.loss(batch)
        trainer.optimizer.zero_grad()
        loss.backward()
        trainer.optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]
    assert torch.equal(frozen, trainer.model.model.text_model.layers[0].mlp.up_proj.weight)


def load_tiny_copy(tiny_lm):
    """A fresh copy (build mutates the tokenizer and the trainer the model's grads)."""
    import copy

    lm, tok = tiny_lm
    return copy.deepcopy(lm), copy.deepcopy(tok)


def test_assemble_without_weights_says_how_to_make_them(tmp_path):
    from edgekv.runtime.errors import ModelError

    with pytest.raises(ModelError, match="train_vision"):
        smolvlm.assemble(tmp_path / "model", weights=tmp_path / "missing.safetensors")


def test_label_grid_counts_a_patch_a_shape_covers_off_centre():
    from edgekv.tools.train_vision.questions import label_grid

    # 80x80 frame, 8x8 grid of 10 px patches. The square covers x, y in [2, 18]: patch (0, 0)
    # whole, patch (0, 1) and (1, 0) in part (their centres at 15 are inside) and patch (1, 1)
    # only its corner, where 4 of its 16 sample points fall.
    square = Shape("square", "blue", 10, 10, 8)
    colour, kind = label_grid([square], 80, 80, 8)
    kind = kind.reshape(8, 8)
    assert kind[0, 0] == kind[1, 1] == 1  # square is KINDS[0]
    assert kind[2:, :].sum() == 0 and kind[:, 2:].sum() == 0
    assert set(colour.tolist()) == {0, 3}  # blue is the third colour
    # A sliver that reaches one sample point only is background, and later shapes win.
    sliver = Shape("circle", "red", 40 + 6.6, 45, 1.0)  # covers the point (46.25, 45) only
    on_top = Shape("triangle", "green", 10, 10, 9)
    _, kind = label_grid([square, sliver, on_top], 80, 80, 8)
    assert kind.reshape(8, 8)[4, 4] == 0
    assert kind.reshape(8, 8)[1, 1] == 3  # the triangle covers 12 of its points, on top
    assert kind.reshape(8, 8)[0, 0] == 1  # there the square keeps most points


def test_see_stage_learns_patches_and_hands_its_head_to_stage_two(tiny_lm, tmp_path):
    from edgekv.tools.train_vision.see import (
        AUX_PREFIX,
        SeeOptions,
        Seer,
        aux_loss,
        random_frames,
        save,
    )

    lm, tok = load_tiny_copy(tiny_lm)
    seer = Seer(lm, tok, SeeOptions(lr=3e-3))
    frames = random_frames(np.random.default_rng(0), 8, seer.processor.image_processor)
    assert frames.pixels.shape == (8, 3, smolvlm.FRAME, smolvlm.FRAME)
    assert (frames.kind_ids > 0).any()
    losses = []
    for _ in range(10):
        loss = aux_loss(seer.head, seer.patches(frames.pixels), frames.colour_ids,
                        frames.kind_ids)
        seer.optimizer.zero_grad()
        loss.backward()
        seer.optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]
    out = tmp_path / "see.safetensors"
    save(seer.state(), out)
    lm2, tok2 = load_tiny_copy(tiny_lm)
    trainer = Trainer(lm2, tok2, TrainOptions(init=str(out)))
    torch.testing.assert_close(trainer.aux.weight, seer.head.weight)
    tower = trainer.model.model.vision_model
    with torch.no_grad():
        torch.testing.assert_close(tower(pixel_values=frames.pixels[:1]).last_hidden_state,
                                   seer.patches(frames.pixels[:1]), rtol=2e-2, atol=2e-2)
    assert any(k.startswith(AUX_PREFIX) for k in seer.state())


def test_follow_up_turns_are_the_chat_template_of_the_whole_conversation(tiny_lm):
    lm, tok = load_tiny_copy(tiny_lm)
    trainer = Trainer(lm, tok, TrainOptions(turns=3))
    ex = sampler(4, ("colour", "shape", "count", "side"), turns=3)()
    assert len(ex.follow_ups) == 2
    batch = trainer.batch([ex])
    turns = [(ex.question, ex.answer), *ex.follow_ups]
    messages = []
    for i, (q, a) in enumerate(turns):
        content = [{"type": "image"}] * (i == 0) + [{"type": "text", "text": q}]
        messages += [{"role": "user", "content": content},
                     {"role": "assistant", "content": [{"type": "text", "text": a}]}]
    text = trainer.processor.apply_chat_template(messages)
    from edgekv.tools.train_vision.train import _pil

    want = trainer.processor(text=text, images=[[_pil(ex.frames[0])]],
                             return_tensors="pt")["input_ids"][0]
    assert batch.ids[0].tolist() == want[:-1].tolist()  # all but the template's last newline
    answers = tok.decode(batch.targets[0][batch.targets[0] != -100])
    assert answers == "".join(a + "<|im_end|>" for _, a in turns)


def test_one_turn_examples_are_the_same_with_follow_ups_on():
    singles = ("colour", "shape", "count", "side", "describe")
    one, three = sampler(9, singles, turns=1), sampler(9, singles, turns=3)
    a, b = one(), three()
    assert (a.question, a.answer) == (b.question, b.answer)
    assert np.array_equal(a.frames[0], b.frames[0])
    assert not a.follow_ups and len(b.follow_ups) == 2


def test_a_run_keeps_its_head_beside_the_weights_and_the_next_run_resumes_it(tiny_lm, tmp_path):
    from edgekv.tools.train_vision.train import aux_path

    lm, tok = load_tiny_copy(tiny_lm)
    first = Trainer(lm, tok, TrainOptions(steps=1, batch=2, recall_batch=1, eval_examples=4))
    out = tmp_path / "vision.safetensors"
    first.run(out, say=lambda _line: None)
    assert aux_path(out).is_file()
    assert not any(k.startswith("aux.") for k in smolvlm.load_state(out))  # shipped: no head
    lm2, tok2 = load_tiny_copy(tiny_lm)
    again = Trainer(lm2, tok2, TrainOptions(init=str(out)))
    torch.testing.assert_close(again.aux.weight, first.aux.weight)


def test_named_takes_the_first_colour_or_shape_word_the_question_lacks():
    from edgekv.tools.train_vision.text_bound import named

    assert named("The square is a red square.", "What colour is the square?", "colour") == "red"
    assert named("The red object is a circle.", "What shape is the red object?", "shape") == (
        "circle")
    assert named("It is a square, not a circle.", "What shape is the blue object?", "shape") == (
        "square")
    assert named("I cannot tell.", "What colour is the circle?", "colour") is None


def test_text_bound_asks_every_held_out_colour_and_shape_question_in_words(tiny_lm):
    from edgekv.tools.scene_eval import CATEGORIES
    from edgekv.tools.train_vision.text_bound import text_bound

    lm, tok = tiny_lm
    stream = sampler(7, CATEGORIES)
    first = [stream() for _ in range(12)]
    want = {c: sum(ex.category == c for ex in first) for c in ("colour", "shape")}
    assert all(ex.scene == "" for ex in first if ex.category == "recall")
    assert all(ex.scene for ex in first if ex.category != "recall")
    strict, lenient = text_bound(lm, tok, 12, seed=7, max_new_tokens=3)
    assert {c: strict.total.get(c, 0) for c in want} == want
    assert lenient.total == strict.total
    wrong = sum(lenient.total.values()) - sum(lenient.right.values())
    assert len(lenient.mistakes) == min(wrong, 20)
    assert all(text.endswith("?") and ". What " in text for text, _t, _s in lenient.mistakes)
