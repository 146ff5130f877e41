"""Peer `hf`: HF transformers `generate` with its default (dynamic, growing) cache, fp32.

Runs in edgekv's own environment (transformers 5, gguf) on the GGUF dequantized to fp32, the
same weights the fp32 bundle holds. `python peer_hf.py SPEC.json` prints one JSON line.
"""

from __future__ import annotations

import time

from childio import Perplexity, TokenClock, chunks, emit, log, read_spec, speed_result, stream_long


def main() -> None:
    spec = read_spec()
    import torch
    from transformers import AutoModelForCausalLM, DynamicCache

    from edgekv.tools.hf_cache import cache_kwargs

    torch.set_num_threads(spec["threads"])
    model = AutoModelForCausalLM.from_pretrained(spec["model"], dtype=torch.float32).eval()
    log(f"hf: loaded {spec['model']}")
    with torch.inference_mode():
        if spec["workload"] == "quality":
            ids = spec["quality_ids"]
            as_cache = cache_kwargs(model, DynamicCache(config=model.config))
            score = Perplexity(ids)
            for start, part in chunks(ids, 512):
                positions = torch.arange(start, start + len(part))[None]
                out = model(input_ids=torch.tensor([part]), **as_cache,
                            position_ids=positions, use_cache=True)
                score.add(out.logits[0].float().numpy(), start)
            emit(score.result())
            return
        if spec["workload"] == "long":
            as_cache = cache_kwargs(model, DynamicCache(config=model.config))
            pos = [0]

            def feed(part: list[int]) -> None:
                ids = torch.tensor([part])
                positions = torch.arange(pos[0], pos[0] + len(part))[None]
                model(input_ids=ids, **as_cache, position_ids=positions,
                      use_cache=True, logits_to_keep=1)
                pos[0] += len(part)

            emit(stream_long(spec, feed))
            return
        prompt = torch.tensor([spec["prompt_ids"]])
        n = spec["decode_tokens"]
        clock = TokenClock()
        start = time.perf_counter()
        model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=n,
                       min_new_tokens=n, do_sample=False,
                       streamer=clock)
    # The first new token arrives when the prompt is processed: that is prefill; the rest is
    # decode (n - 1 steps, each reading the whole model and the cache).
    prefill_s = clock.times[0] - start
    decoded = len(clock.times) - 1
    decode_s = clock.times[-1] - clock.times[0]
    emit(speed_result(prompt.shape[1], prefill_s, decoded, decode_s, clock.tokens))


if __name__ == "__main__":
    main()
