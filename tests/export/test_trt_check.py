"""`edgekv check --target tensorrt-10.3` on the bundles the tests export, and on small ONNX
models made to break one rule each."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from edgekv.cli import main
from edgekv.export.trt_check import check_bundle, check_graph
from edgekv.export.trt_support import load_support

SUPPORT = load_support("tensorrt-10.3")
@pytest.mark.parametrize("family", ["llama", "qwen3"])
def test_exported_decoder_passes_the_static_check(family, tiny_bundle):
    # RMSNorm is written as sum * (1/n): the exporter's ReduceMean took a computed `axes`
    # input, which the parser rejects ("Axis input must be an initializer!").
    bundle = tiny_bundle(family, budget=320, chunk=32, target="tensorrt")
    report = check_bundle(bundle, "tensorrt-10.3")
    (graph,) = report.graphs
    assert graph.errors() == []
    assert report.ok
    notes = [f for f in graph.findings if f.severity == "note"]
    assert [n.rule for n in notes] == ["int64"] and "chunk_pos, slot_pos" in notes[0].message


def test_ort_target_bundle_fails_with_the_fix(tiny_bundle, capsys):
    # The default target uses ONNX Runtime's fused RotaryEmbedding: not for TensorRT.
    assert main(["check", str(tiny_bundle("llama", budget=320, chunk=32))]) == 1
    out = capsys.readouterr().out
    assert "com.microsoft" in out and "--target tensorrt" in out


def test_cli_check_prints_report_and_passes(tiny_bundle, capsys):
    assert main(["check", str(tiny_bundle("llama", budget=320, chunk=32, target="tensorrt"))]) == 0
    out = capsys.readouterr().out
    assert "ok     ops" in out and "ok     constants-in" in out
    assert out.rstrip().endswith("PASS: 0 error(s)")


def _save(tmp_path, nodes, inputs, outputs, initializers=(), opset=18):
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    return path


def _vi(name, elem, shape):
    return helper.make_tensor_value_info(name, elem, shape)


def _rules(path, chunk_axes=None):
    report = check_graph(path, SUPPORT, chunk_axes or {})
    return {(f.rule, f.severity) for f in report.findings}, report


def test_clean_model_passes(tmp_path):
    axes = helper.make_tensor("axes", TensorProto.INT64, [1], [-1])
    path = _save(tmp_path, [helper.make_node("ReduceMean", ["x", "axes"], ["y"])],
                 [_vi("x", TensorProto.FLOAT, [1, "c", 8])], [_vi("y", TensorProto.FLOAT,
                                                                   [1, "c", 1])], [axes])
    rules, report = _rules(path, {"x": 1})
    assert rules == set() and not report.errors()


def test_unsupported_op_fails(tmp_path):
    path = _save(tmp_path, [helper.make_node("Det", ["x"], ["y"])],
                 [_vi("x", TensorProto.FLOAT, [2, 2])], [_vi("y", TensorProto.FLOAT, [])])
    rules, report = _rules(path)
    assert ("ops", "error") in rules and "Det is not supported" in report.errors()[0].message


def test_minus_inf_constant_fails(tmp_path):
    mask = helper.make_node("Constant", [], ["m"], value=helper.make_tensor(
        "v", TensorProto.FLOAT, [2], [0.0, -np.inf]))
    path = _save(tmp_path, [mask, helper.make_node("Add", ["x", "m"], ["y"])],
                 [_vi("x", TensorProto.FLOAT, [2])], [_vi("y", TensorProto.FLOAT, [2])])
    rules, report = _rules(path)
    assert rules == {("inf", "error")} and "-inf" in report.errors()[0].message


def test_int64_matmul_fails(tmp_path):
    path = _save(tmp_path, [helper.make_node("MatMul", ["a", "b"], ["y"])],
                 [_vi("a", TensorProto.INT64, [2, 2]), _vi("b", TensorProto.INT64, [2, 2])],
                 [_vi("y", TensorProto.INT64, [2, 2])])
    rules, report = _rules(path)
    assert ("int64", "error") in rules
    assert "MatMul on INT64" in report.errors()[0].message


def test_dynamic_axis_other_than_chunk_fails(tmp_path):
    path = _save(tmp_path, [helper.make_node("Relu", ["x"], ["y"])],
                 [_vi("x", TensorProto.FLOAT, ["batch", "c"])],
                 [_vi("y", TensorProto.FLOAT, ["batch", "c"])])
    rules, report = _rules(path, {"x": 1})
    messages = " ".join(f.message for f in report.errors())
    assert ("shapes", "error") in rules
    assert "input x axis 0 is dynamic ('batch')" in messages
    assert "output y axis 0" in messages and "axis 1" not in messages


def test_computed_reduce_axes_fail(tmp_path):
    path = _save(tmp_path, [helper.make_node("ReduceSum", ["x", "axes"], ["y"])],
                 [_vi("x", TensorProto.FLOAT, [2, 3]), _vi("axes", TensorProto.INT64, [1])],
                 [_vi("y", TensorProto.FLOAT, [2, 1])])
    rules, report = _rules(path)
    assert ("constants-in", "error") in rules and len(report.errors()) == 1
    assert "computed by a graph input" in report.errors()[0].message


def test_opset_beyond_the_target_fails(tmp_path):
    path = _save(tmp_path, [helper.make_node("Relu", ["x"], ["y"])],
                 [_vi("x", TensorProto.FLOAT, [2])], [_vi("y", TensorProto.FLOAT, [2])],
                 opset=21)
    rules, _ = _rules(path)
    assert ("opset", "error") in rules


def test_support_table_records_its_source():
    assert SUPPORT.source["repo"] == "onnx/onnx-tensorrt"
    assert "Attention" not in SUPPORT.ops and "RMSNormalization" not in SUPPORT.ops  # post-10.3
    assert "INT64" not in SUPPORT.ops["Pow"].types  # integer Pow arrived in 10.8 / 10.12


def test_cli_export_takes_the_tensorrt_target(tiny_model_dir, tmp_path):
    out = tmp_path / "trt"
    assert main(["export", str(tiny_model_dir("llama")), "--out", str(out), "--budget", "96",
                 "--chunk", "16", "--target", "tensorrt"]) == 0
    assert check_bundle(out, "tensorrt-10.3").ok
