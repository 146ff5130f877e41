"""Peers `ort_genai_fp32` / `ort_genai_int4`: onnxruntime-genai on its model builder's graphs.

Workloads:
  prepare  run the builder (`-i HF_DIR -o OUT -p fp32|int4 -e cpu`) once into the cache
  speed    prefill the prompt with append_tokens, then greedy decode with generate_next_token
  long     append the long text chunk by chunk (genai stops at the model's context length)
  quality  append quality_ids chunk by chunk and score the logits of every row
Threads go into genai_config.json's session options (genai reads them from there only).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from childio import Perplexity, chunks, emit, log, read_spec, speed_result, stream_long


def prepare(spec: dict) -> None:
    out = spec["out"]
    cmd = [sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", spec["hf_dir"],
           "-o", out, "-p", spec["precision"], "-e", "cpu", "-c", out + ".tmp"]
    log("ort_genai: " + " ".join(cmd))
    code = subprocess.run(cmd, stdout=sys.stderr).returncode
    if code != 0 or not os.path.isfile(os.path.join(out, "genai_config.json")):
        raise SystemExit(f"the onnxruntime-genai builder failed (exit {code})")
    emit({"prepared": out})


def set_threads(model_dir: str, threads: int) -> None:
    path = os.path.join(model_dir, "genai_config.json")
    with open(path) as f:
        config = json.load(f)
    options = config["model"]["decoder"].setdefault("session_options", {})
    options["intra_op_num_threads"] = threads
    options["inter_op_num_threads"] = 1
    with open(path, "w") as f:
        json.dump(config, f, indent=4)


def make_generator(og, model, max_length: int, min_length: int = 0):  # noqa: ANN001, ANN201
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=max_length, min_length=min_length, do_sample=False)
    return og.Generator(model, params)


def main() -> None:
    spec = read_spec()
    if spec["workload"] == "prepare":
        prepare(spec)
        return
    import onnxruntime_genai as og

    set_threads(spec["model"], spec["threads"])
    model = og.Model(spec["model"])
    if spec["workload"] == "quality":
        ids = spec["quality_ids"]
        generator = make_generator(og, model, len(ids))
        score = Perplexity(ids)
        for start, part in chunks(ids, 256):
            generator.append_tokens(part)
            score.add(generator.get_output("logits")[0][-len(part):], start)
        emit(score.result())
        return
    if spec["workload"] == "long":
        # Ask for the whole text: genai refuses a max_length beyond the model's context, and
        # that refusal is the result.
        n = len(spec["long_ids"])
        try:
            generator = make_generator(og, model, n)
        except Exception as exc:  # noqa: BLE001 - the refusal is what we report
            emit({"error": f"refused {n} tokens: {exc}"[:400], "tokens_done": 0})
            return
        emit(stream_long(spec, generator.append_tokens))
        return
    prompt, n = spec["prompt_ids"], spec["decode_tokens"]
    total = len(prompt) + n
    generator = make_generator(og, model, total, min_length=total)  # EOS must not stop it
    start = time.perf_counter()
    generator.append_tokens(prompt)
    times, tokens = [], []
    while not generator.is_done() and len(times) < n:
        generator.generate_next_token()
        tokens.append(int(generator.get_next_tokens()[0]))
        times.append(time.perf_counter())
    emit(speed_result(len(prompt), times[0] - start, len(times) - 1, times[-1] - times[0],
                      tokens))


if __name__ == "__main__":
    main()
