"""`edgekv bench`: the report's shape, errors that stay inside one peer, the bound arithmetic,
and the edgekv side on a tiny bundle. Nothing here creates a venv or compiles anything."""

from __future__ import annotations

import dataclasses
import json
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from edgekv.cli import main
from edgekv.tools.bench import bench, childio, membw
from edgekv.tools.bench.peers import PEERS, SetupError
from edgekv.tools.bench.report import build_report, combine, render
from edgekv.tools.bench.runner import run_child
from edgekv.tools.bench.workloads import QUICK, Workloads, cut_ids

REQUIRED = {"prefill_tps", "decode_tps", "peak_rss_mb"}


def fake(prefill: float, decode: float, rss: float = 500.0) -> dict:
    return {"prefill_tps": prefill, "decode_tps": decode, "peak_rss_mb": rss}


def fake_report() -> dict:
    edgekv = combine({**fake(400.0, 40.0), "overhead_frac": 0.03},
                     {"512": {"rss_growth": 0.01}, "2048": {"rss_growth": 0.02}})
    peers = {
        "llama_cpp": combine(fake(200.0, 80.0, 300.0), {"stream": {
            "error": "stopped after 8192 tokens", "tokens_done": 8192}}),
        "hf": combine(fake(400.0, 10.0, 1000.0), {"stream": {"rss_growth": 0.9}}),
        "ort_genai_fp32": {"error": "pip install failed"},
    }
    bound = {"membw_gbps": 40.0, "decode_tps": 80.0, "bytes_per_token": 500 * 2**20}
    return build_report(edgekv, peers, {"error": "no --int4-bundle given"}, bound)


def test_report_has_exactly_the_issue_shape_and_ratios():
    report = fake_report()
    assert list(report) == ["edgekv", "peers", "edgekv_int4", "bound"]
    assert list(report["peers"]) == ["hf", "ort_genai_fp32", "llama_cpp"]  # the issue's order
    edgekv = report["edgekv"]
    assert REQUIRED | {"rss_growth_4k_32k", "overhead_frac"} <= set(edgekv)
    assert edgekv["rss_growth_4k_32k"] == 0.02  # the worst budget
    assert edgekv["ratio_to_peers"]["hf"] == {"prefill_tps": 1.0, "decode_tps": 4.0}
    assert edgekv["ratio_to_peers"]["llama_cpp"]["decode_tps"] == 0.5
    assert edgekv["ratio_to_peers"]["ort_genai_fp32"] == {"prefill_tps": None, "decode_tps": None}
    assert report["bound"]["edgekv_frac_of_bound"] == 0.5
    assert report["peers"]["llama_cpp"]["rss_growth_4k_32k"] is None
    json.dumps(report)  # plain JSON all the way down


def test_render_shows_every_runner_ratios_bound_and_errors():
    text = render(fake_report())
    for name in ("edgekv", "edgekv_int4", "hf", "ort_genai_fp32", "llama_cpp"):
        assert name in text
    assert "stop@8192" in text and "+90.0%" in text
    assert "4.00x" in text and "0.50x" in text
    assert "80.0 tok/s" in text and "50% of it" in text
    assert "ort_genai_fp32: pip install failed" in text
    assert "llama_cpp long stream: stopped after 8192 tokens" in text


def test_a_failing_child_becomes_an_error_not_a_crash(tmp_path):
    crash = tmp_path / "crash.py"
    crash.write_text("import sys\nprint('partial output')\nsys.exit('cannot load the model')\n")
    result = run_child(sys.executable, crash, {"workload": "speed"}, tmp_path / "crash.log")
    assert set(result) == {"error"} and "cannot load the model" in result["error"]
    good = tmp_path / "good.py"
    good.write_text("import json, sys\nspec = json.load(open(sys.argv[1]))\n"
                    "print('noise')\nprint(json.dumps({'echo': spec['workload']}))\n")
    assert run_child(sys.executable, good, {"workload": "long"}, tmp_path / "g.log") == {
        "echo": "long"}
    missing = run_child(tmp_path / "no-python", good, {}, tmp_path / "m.log")
    assert "cannot start" in missing["error"]


def test_a_peer_that_cannot_be_set_up_is_reported_and_the_others_run(monkeypatch, tmp_path):
    def refuse(peer, setup):
        raise SetupError(f"{peer.name}: pip install failed (exit 1)")

    monkeypatch.setattr(bench, "prepare", refuse)
    ids = cut_ids(list(range(100)), QUICK)
    setup = bench.Setup(tmp_path, log=lambda _m: None)
    result = bench.peer_child("llama_cpp", ids, QUICK, setup, log=lambda _m: None)
    assert result == {"error": "llama_cpp: pip install failed (exit 1)"}
    assert "unknown peer" in bench.peer_child("vllm", ids, QUICK, setup, print)["error"]
    assert set(PEERS) == {"hf", "ort_genai_fp32", "ort_genai_int4", "llama_cpp", "optimum_ort"}


def test_a_quantized_runner_gets_its_perplexity_cost_against_its_own_fp32_runner():
    peers = {"hf": {**fake(400.0, 10.0), "ppl": 20.0, "ppl_tokens": 2047},
             "llama_cpp": {**fake(200.0, 80.0), "ppl": 20.2},
             "ort_genai_fp32": {**fake(400.0, 30.0), "ppl": 20.0},
             "ort_genai_int4": {**fake(500.0, 90.0), "ppl": 28.0},
             "optimum_ort": fake(200.0, 10.0)}
    report = build_report({**fake(400.0, 40.0), "ppl": 19.0, "ppl_tokens": 2047}, peers,
                          {**fake(500.0, 70.0), "ppl": 19.19},
                          {"membw_gbps": 40.0, "decode_tps": 80.0, "bytes_per_token": 2**29})
    assert report["edgekv_int4"]["ppl_cost"] == pytest.approx(0.01)
    assert report["peers"]["ort_genai_int4"]["ppl_cost"] == pytest.approx(0.4)
    assert report["peers"]["llama_cpp"]["ppl_cost"] == pytest.approx(0.01)
    assert all("ppl_cost" not in report["peers"][n] for n in ("hf", "ort_genai_fp32",
                                                             "optimum_ort"))
    assert "ppl_cost" not in report["edgekv"]
    text = render(report)
    assert "19.190 (+1.0%)" in text and "28.000 (+40.0%)" in text
    assert "first 2048 tokens" in text


def test_a_runner_speed_over_rounds_is_the_median_and_keeps_each_round():
    rounds = [{**fake(100.0, 10.0, 500.0), "overhead_frac": 0.03, "first_tokens": [1]},
              {"error": "killed"},
              {**fake(300.0, 30.0, 700.0), "overhead_frac": 0.05, "first_tokens": [1]},
              {**fake(200.0, 20.0, 600.0), "overhead_frac": 0.01, "first_tokens": [1]}]
    out = bench.median_speed(rounds)
    assert (out["prefill_tps"], out["decode_tps"], out["overhead_frac"]) == (200.0, 20.0, 0.03)
    assert out["peak_rss_mb"] == 700.0 and out["first_tokens"] == [1]
    assert out["rounds"][1] == {"error": "killed"} and len(out["rounds"]) == 4
    assert bench.median_speed([{"error": "a"}, {"error": "b"}]) == {"error": "a"}
    assert "rounds" not in bench.median_speed(rounds[:1])


def test_rounds_interleave_the_runners_then_quality_and_long_run_once(monkeypatch, tmp_path):
    calls: list[tuple[str, str]] = []

    def runner(name):
        def child(workload, tag=None, **extra):
            calls.append((name, workload))
            if workload == "quality":
                return {"ppl": 10.0, "ppl_tokens": 63}
            if workload == "long":
                return {"rss_growth": 0.01}
            return {**fake(100.0, 10.0 * len(calls)), "overhead_frac": 0.02}
        return child

    monkeypatch.setattr(bench, "text_ids", lambda bundle, text: list(range(300)))
    monkeypatch.setattr(bench, "measure_bound", lambda *a: {"membw_gbps": 40.0})
    monkeypatch.setattr(bench, "edgekv_child", lambda bundle, ids, w, logs, label: runner(label))
    monkeypatch.setattr(bench, "peer_child", lambda name, ids, w, setup, log: (
        runner(name) if name == "hf" else {"error": "not set up"}))
    monkeypatch.setattr(bench, "long_budgets", lambda bundle, w: [96])
    opts = bench.BenchOptions(bundle=tmp_path, int4_bundle=tmp_path, peers=["hf", "llama_cpp"],
                              cache_dir=tmp_path, workloads=dataclasses.replace(QUICK, rounds=2))
    report = bench.run_bench(opts, log=lambda _m: None)
    speed = [n for n, wl in calls if wl == "speed"]
    assert speed == ["edgekv", "edgekv_int4", "hf"] * 2
    assert sorted(calls[6:]) == sorted([("edgekv", "quality"), ("edgekv", "long"),
                                        ("edgekv_int4", "quality"), ("hf", "quality"),
                                        ("hf", "long")])
    assert report["edgekv"]["decode_tps"] == 25.0 and len(report["edgekv"]["rounds"]) == 2
    assert report["peers"]["llama_cpp"] == {"error": "not set up"}
    assert report["edgekv"]["rss_growth_4k_32k"] == 0.01 and report["edgekv_int4"]["ppl"] == 10.0


def test_perplexity_scores_each_next_token_once_across_chunks():
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 7, size=20).tolist()
    logits = rng.normal(size=(20, 7))
    whole = childio.Perplexity(ids)
    whole.add(logits, 0)
    parts = childio.Perplexity(ids)
    for start in range(0, 20, 6):
        parts.add(logits[start:start + 6], start)
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    want = np.exp(-np.mean([log_probs[i, ids[i + 1]] for i in range(19)]))
    for score in (whole, parts):
        assert score.scored == 19
        assert score.result()["ppl"] == pytest.approx(want, rel=1e-12)


def test_stream_long_reports_where_a_runner_stopped():
    spec = {"long_ids": list(range(2048)), "mark_tokens": 512}
    fed: list[int] = []

    def feed(part):
        if len(fed) >= 1024:
            raise RuntimeError("llama_decode returned 1")
        fed.extend(part)

    result = childio.stream_long(spec, feed, chunk=256)
    assert result["tokens_done"] == 1024 and "stopped after 1024" in result["error"]
    assert list(result["rss_mb_at"]) == [512]
    ok = childio.stream_long(spec, lambda part: None, chunk=256)
    assert list(ok["rss_mb_at"]) == [512, 2048] and "rss_growth" in ok


def test_cut_ids_repeats_a_short_text():
    ids = cut_ids([1, 2, 3], Workloads(prompt_tokens=4, long_tokens=7))
    assert ids.prompt == [1, 2, 3, 1] and ids.long == [1, 2, 3, 1, 2, 3, 1]


def test_bound_arithmetic():
    assert membw.kv_bytes(30, 3, 2048, 64, 4) == 2 * 30 * 3 * 2048 * 64 * 4
    assert membw.decode_bound_tps(500_000_000, 40.0) == pytest.approx(80.0)
    need = membw.DecodeBytes(weights=400, kv=100)
    assert need.total == 500


def test_graph_weight_bytes_counts_packed_and_shared_weights_once(tmp_path):
    fp32 = helper.make_tensor("w", TensorProto.FLOAT, [4, 8], np.zeros(32, np.float32))
    int4 = helper.make_tensor("q", TensorProto.UINT4, [6], [0] * 6)  # 6 nibbles -> 3 bytes
    shared = []
    for name in ("embed", "lm_head"):  # tied: both point at the same bytes of one file
        t = TensorProto(name=name, data_type=TensorProto.FLOAT, dims=[10, 4])
        t.data_location = TensorProto.EXTERNAL
        for k, v in {"location": "embed.bin", "offset": "0", "length": "160"}.items():
            t.external_data.add(key=k, value=v)
        shared.append(t)
    graph = helper.make_graph([], "g", [], [], initializer=[fp32, int4, *shared])
    path = tmp_path / "decoder.onnx"
    onnx.save(helper.make_model(graph), str(path))
    assert membw.graph_weight_bytes(path) == 32 * 4 + 3 + 160


def test_bandwidth_is_measured():
    assert membw.measure_bandwidth_gbps(threads=2, mib_per_thread=8, repeats=2) > 0.1


def test_bench_quick_on_a_tiny_bundle_json(tiny_bundle, tmp_path, capsys):
    bundle = tiny_bundle("llama", budget=96, chunk=16)
    rc = main(["bench", "--bundle", str(bundle), "--quick", "--peers", "none", "--json",
               "--cache-dir", str(tmp_path), "--long-tokens", "512", "--decode-tokens", "8",
               "--rounds", "2"])
    assert rc == 0
    report = json.loads(capsys.readouterr().out)
    assert list(report) == ["edgekv", "peers", "edgekv_int4", "bound"] and report["peers"] == {}
    edgekv = report["edgekv"]
    assert "error" not in edgekv, edgekv
    assert REQUIRED | {"rss_growth_4k_32k", "overhead_frac"} <= set(edgekv)
    assert edgekv["prefill_tps"] > 0 and edgekv["decode_tps"] > 0 and edgekv["peak_rss_mb"] > 10
    assert edgekv["decoded_tokens"] == 8 and 0.0 <= edgekv["overhead_frac"] < 1.0
    assert [set(r) for r in edgekv["rounds"]] == [{"prefill_tps", "decode_tps"}] * 2
    assert edgekv["bundle"] == {"dtype": "fp32", "budget": 96, "chunk": 16, "key_rope": "graph",
                                "quant_compute": "", "attention": "graph",
                                "attn_mass": True}
    assert "edgekv bundle: fp32, budget 96, chunk 16, keys rotated in the graph" in render(report)
    assert "(no ratios: no peers were run)" in render(report)
    assert edgekv["long"]["96"]["tokens_done"] == 512
    assert edgekv["ppl_tokens"] == QUICK.quality_tokens - 1 and 1.0 < edgekv["ppl"] < 1e4
    assert abs(edgekv["rss_growth_4k_32k"]) < 0.5
    assert report["edgekv_int4"] == {"error": "no --int4-bundle given"}
    bound = report["bound"]
    assert bound["membw_gbps"] > 0 and bound["decode_tps"] > 0
    assert bound["kv_bytes"] == membw.kv_bytes(2, 2, 96, 16, 4)


def test_zero_rounds_is_refused_before_anything_runs(tiny_bundle, tmp_path, capsys):
    bundle = tiny_bundle("llama", budget=96, chunk=16)
    rc = main(["bench", "--bundle", str(bundle), "--quick", "--peers", "none",
               "--cache-dir", str(tmp_path), "--rounds", "0"])
    assert rc == 2 and "--rounds must be at least 1" in capsys.readouterr().err
    assert not (tmp_path / "logs").exists()


def test_llama_cpp_is_built_for_this_cpu_but_never_with_amx():
    from edgekv.tools.bench.envs import llama_cmake_args

    args = llama_cmake_args({"avx2", "fma", "avx512f", "amx_tile", "amx_int8"})
    assert "-DGGML_NATIVE=OFF" in args and "AMX" not in args
    assert "-DGGML_AVX2=ON" in args and "-DGGML_AVX512=ON" in args
    assert "-DGGML_AVX512_VNNI=OFF" in args
