"""Peer `optimum_ort`: optimum-onnx's ONNX export, run by ONNX Runtime with a dynamic KV cache.

Runs in its own venv (optimum-onnx pins transformers < 4.58), from the HF directory that
`hf_dir` saved (that transformers misreads SmolLM2's GGUF). Workloads:
  prepare  `main_export(HF_DIR, OUT, task="text-generation-with-past")` once into the cache
  speed    ORTModelForCausalLM.generate, greedy; the first token marks the end of prefill
  long     forward passes of 512-token chunks, handing the growing past back each time
"""

from __future__ import annotations

import time

from childio import TokenClock, emit, log, read_spec, speed_result, stream_long


def prepare(spec: dict) -> None:
    from optimum.exporters.onnx import main_export

    main_export(spec["hf_dir"], output=spec["out"], task="text-generation-with-past",
                device="cpu", do_validation=False)
    emit({"prepared": spec["out"]})


def main() -> None:
    spec = read_spec()
    if spec["workload"] == "prepare":
        prepare(spec)
        return
    import onnxruntime as ort
    import torch
    from optimum.onnxruntime import ORTModelForCausalLM

    torch.set_num_threads(spec["threads"])
    options = ort.SessionOptions()
    options.intra_op_num_threads = spec["threads"]
    options.inter_op_num_threads = 1
    model = ORTModelForCausalLM.from_pretrained(spec["model"], session_options=options,
                                                use_cache=True)
    log(f"optimum_ort: loaded {spec['model']}")
    if spec["workload"] == "long":
        state = {"past": None, "pos": 0}

        def feed(part: list[int]) -> None:
            n, pos = len(part), state["pos"]
            out = model(input_ids=torch.tensor([part]),
                        attention_mask=torch.ones(1, pos + n, dtype=torch.int64),
                        position_ids=torch.arange(pos, pos + n)[None],
                        past_key_values=state["past"], use_cache=True)
            state["past"], state["pos"] = out.past_key_values, pos + n

        emit(stream_long(spec, feed))
        return
    prompt, n = torch.tensor([spec["prompt_ids"]]), spec["decode_tokens"]
    clock = TokenClock()
    start = time.perf_counter()
    model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=n,
                   min_new_tokens=n, do_sample=False, streamer=clock)
    emit(speed_result(prompt.shape[1], clock.times[0] - start, len(clock.times) - 1,
                      clock.times[-1] - clock.times[0], clock.tokens))


if __name__ == "__main__":
    main()
