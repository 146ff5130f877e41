"""The bench's same-process comparison: onnxruntime-genai's graph contract driven by plain ONNX
Runtime (on a tiny graph with that contract: the builder needs its own venv), and edgekv's
step alternated with it in one child."""

from __future__ import annotations

import json

import genai_like
import numpy as np
import pytest

from edgekv.tools.bench import bench
from edgekv.tools.bench.genai_graph import GenaiGraph
from edgekv.tools.bench.report import build_report, render
from edgekv.tools.bench.runner import run_child, script
from edgekv.tools.bench.workloads import QUICK, TokenIds

VOCAB = 512  # the tiny bundles' vocabulary


@pytest.fixture(scope="module")
def genai_dir(tmp_path_factory):
    return genai_like.write(tmp_path_factory.mktemp("genai"), VOCAB)


def test_chunks_then_steps_then_a_rewind_give_the_models_logits(genai_dir):
    ids = [int(i) for i in np.random.default_rng(1).integers(0, VOCAB, 13)]
    expected = genai_like.reference_logits(genai_dir, ids)
    whole = GenaiGraph(str(genai_dir), 16, threads=1).run(ids).copy()
    np.testing.assert_allclose(whole, expected[-1], rtol=1e-4, atol=1e-4)
    graph = GenaiGraph(str(genai_dir), 16, threads=1)
    for start in range(0, 10, 4):
        graph.run(ids[start : min(start + 4, 10)])
    decoded = [graph.run([t]).copy() for t in ids[10:]]
    np.testing.assert_allclose(decoded, expected[10:], rtol=1e-4, atol=1e-4)
    graph.length = 10  # rewound: the same steps again over the same prompt
    again = [graph.run([t]).copy() for t in ids[10:]]
    np.testing.assert_allclose(again, decoded, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="exceed the buffers' 16 rows"):
        graph.run(ids[:4])


def test_an_fp16_model_is_driven_in_fp16(tmp_path):
    directory = genai_like.write(tmp_path, VOCAB, fp16=True)
    ids = [int(i) for i in np.random.default_rng(3).integers(0, VOCAB, 6)]
    graph = GenaiGraph(str(directory), 8, threads=1)
    graph.run(ids[:4])
    last = [graph.run([t]).copy() for t in ids[4:]][-1]
    assert last.dtype == np.float16 and graph.buffers[0].dtype == np.float16
    expected = genai_like.reference_logits(directory, ids)[-1]
    np.testing.assert_allclose(last.astype(np.float64), expected, rtol=0.05, atol=0.05)


def test_a_model_without_shared_buffers_is_refused(tmp_path):
    directory = genai_like.write(tmp_path, VOCAB, share_buffer=False)
    with pytest.raises(ValueError, match="past_present_share_buffer"):
        GenaiGraph(str(directory), 16, threads=1)


def test_the_child_alternates_both_and_reports_medians(genai_dir, tiny_bundle, tmp_path):
    bundle = tiny_bundle("llama", budget=96, chunk=16)
    # 257: the peer's prompt ends in a one-token chunk, whose logits buffer decoding reuses
    prompt = [int(i) for i in np.random.default_rng(2).integers(0, VOCAB, 257)]
    spec = {"bundle": str(bundle), "model": str(genai_dir), "prompt_ids": prompt, "steps": 5,
            "rounds": 3, "threads": 1, "peer_first": True}
    r = run_child(bench.sys.executable, script("same_process"), spec, tmp_path / "log")
    assert "error" not in r, r
    assert r["opened_first"] == "peer" and r["peer_rounds_agree"] is True
    assert r["decode_ratio"] == pytest.approx(r["peer_step_ms"] / r["edgekv_step_ms"])
    assert r["graph_ratio"] == pytest.approx(r["peer_graph_ms"] / r["edgekv_graph_ms"])
    assert 0 < r["edgekv_graph_ms"] <= r["edgekv_step_ms"]
    assert 0 < r["peer_graph_ms"] <= r["peer_step_ms"]
    assert 0 <= r["same_tokens"] <= 5 and (r["steps"], r["rounds"], r["context"]) == (5, 3, 257)


def test_the_bench_pairs_each_precision_and_skips_a_failed_runner(genai_dir, tiny_bundle,
                                                                  tmp_path, monkeypatch):
    bundle = tiny_bundle("llama", budget=96, chunk=16)
    monkeypatch.setattr(bench, "prepare", lambda peer, setup: (bench.sys.executable,
                                                               str(genai_dir)))
    opts = bench.BenchOptions(bundle=bundle, int4_bundle=bundle, cache_dir=tmp_path)
    ids = TokenIds(prompt=list(range(3, 35)), long=[], quality=[])
    ok = {"decode_tps": 1.0}
    results = {"edgekv": ok, "edgekv_int4": ok, "ort_genai_fp32": ok,
               "ort_genai_int4": {"error": "builder failed"}}
    runs = bench.same_process_runs(opts, ids, QUICK, bench.Setup(tmp_path), results,
                                   tmp_path / "logs", lambda m: None)
    assert list(runs) == ["ort_genai_fp32"]  # int4: its peer did not run
    fp32 = runs["ort_genai_fp32"]
    assert fp32["steps"] == QUICK.same_process_steps
    assert [o["opened_first"] for o in fp32["orders"]] == ["edgekv", "peer"]  # each first once
    assert fp32["edgekv_step_ms"] == pytest.approx(
        sum(o["edgekv_step_ms"] for o in fp32["orders"]) / 2)
    report = build_report(ok, {"ort_genai_fp32": ok}, ok, {"error": "n/a"}, runs)
    json.dumps(report)
    assert list(report) == ["edgekv", "peers", "edgekv_int4", "bound"]  # the shape
    assert report["edgekv"]["same_process"] == runs and "same_process" not in report["edgekv_int4"]
    text = render(report)
    assert "same process, alternated" in text and "vs ort_genai_fp32" in text
    failed = build_report(ok, {}, ok, {"error": "n/a"}, {"ort_genai_int4": {"error": "boom"}})
    assert "same process vs ort_genai_int4: boom" in render(failed)


def test_the_rounds_flag_sets_the_workload_and_a_negative_one_is_refused(tiny_bundle, tmp_path,
                                                                        capsys):
    from edgekv.cli import build_parser, main
    from edgekv.tools.bench.command import options_from

    bundle = str(tiny_bundle("llama", budget=96, chunk=16))
    args = build_parser().parse_args(["bench", "--bundle", bundle, "--same-process-rounds", "0"])
    assert options_from(args).workloads.same_process_rounds == 0
    rc = main(["bench", "--bundle", bundle, "--quick", "--peers", "none",
               "--cache-dir", str(tmp_path), "--same-process-rounds", "-1"])
    assert rc == 2 and "--same-process-rounds must be 0 or more" in capsys.readouterr().err


def test_both_orders_average_the_times_and_keep_a_failure():
    times = ("edgekv_step_ms", "edgekv_graph_ms", "peer_step_ms", "peer_graph_ms")
    common = {"steps": 4, "rounds": 2, "context": 9, "budget": 9}
    first = {**dict(zip(times, (10.0, 9.0, 8.0, 7.0), strict=True)), "same_tokens": 4,
             "opened_first": "edgekv", "peer_rounds_agree": True, **common}
    second = {**dict(zip(times, (12.0, 11.0, 12.0, 11.0), strict=True)), "same_tokens": 2,
              "opened_first": "peer", "peer_rounds_agree": False, **common}
    r = bench.both_orders([first, second])
    assert (r["edgekv_step_ms"], r["peer_step_ms"], r["same_tokens"]) == (11.0, 10.0, 2)
    assert r["peer_rounds_agree"] is False
    assert r["decode_ratio"] == pytest.approx(10 / 11) and r["graph_ratio"] == pytest.approx(0.9)
    assert bench.both_orders([first, {"error": "boom"}]) == {"error": "boom"}
