"""`edgekv check --target tensorrt-10.3` on the bundles the tests export, and on small ONNX
models made to break one rule each."""

import shutil

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from edgekv.cli import main
from edgekv.export.manifest import load_manifest
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
    assert "decoder graph (decoder.onnx)" in out and "  => decoder: PASS" in out
    # A text bundle ships one graph: the verdict is the decoder's.
    assert out.rstrip().endswith("PASS: 0 error(s) in 1 graph(s) (decoder)")


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


@pytest.fixture(scope="module")
def trt_vlm_bundle(tmp_path_factory, vlm_dir):
    """A tiny LLaVA (CLIP) bundle exported for TensorRT: decoder.onnx and vision.onnx."""
    from edgekv.export.exporter import ExportOptions, export

    out = tmp_path_factory.mktemp("trt-vlm") / "llava-clip"
    options = ExportOptions(budget=64, chunk=16, validate=False, target="tensorrt")
    export(str(vlm_dir("llava-clip")), out, options, log=lambda _m: None)
    return out


def _with_vision_op(bundle, dst, op_type, domain=""):
    """A copy of `bundle` whose vision graph ends in one `op_type` node, its sha256s redone so
    the manifest still verifies. Weights stay external: only the graph is rewritten."""
    shutil.copytree(bundle, dst)
    manifest = load_manifest(dst)
    path = dst / manifest.vision.graph
    model = onnx.load(str(path), load_external_data=False)
    out = model.graph.output[0].name
    for node in model.graph.node:
        node.input[:] = [f"{out}.pre" if x == out else x for x in node.input]
        node.output[:] = [f"{out}.pre" if x == out else x for x in node.output]
    model.graph.node.append(helper.make_node(op_type, [f"{out}.pre"], [out], name="injected",
                                             domain=domain))
    if domain:
        model.opset_import.append(helper.make_opsetid(domain, 1))
    onnx.save(model, path)
    manifest.with_files(dst).save(dst)
    return dst


def test_multimodal_bundle_checks_the_vision_graph_too(trt_vlm_bundle, capsys):
    manifest = load_manifest(trt_vlm_bundle)
    assert "vision" not in manifest.graphs  # the vision graph is listed under manifest.vision
    report = check_bundle(trt_vlm_bundle, "tensorrt-10.3")
    assert [(g.name, g.file) for g in report.graphs] == [("decoder", "decoder.onnx"),
                                                         ("vision", manifest.vision.graph)]
    vision = report.graphs[1]
    assert vision.nodes > 0 and vision.errors() == [] and report.ok
    assert main(["check", str(trt_vlm_bundle)]) == 0
    out = capsys.readouterr().out
    assert "vision graph (vision.onnx)" in out and "  => vision: PASS" in out
    assert out.rstrip().endswith("PASS: 0 error(s) in 2 graph(s) (decoder, vision)")


@pytest.mark.parametrize(("domain", "op_type", "named"), [
    ("com.microsoft", "FastGelu", "com.microsoft.FastGelu"),  # an ONNX Runtime contrib op
    ("", "Bernoulli", "Bernoulli"),  # a standard op the 10.3 parser lacks
], ids=["contrib", "standard"])
def test_unparsed_op_in_the_vision_graph_fails_the_bundle(
    trt_vlm_bundle, tmp_path, capsys, domain, op_type, named
):
    bundle = _with_vision_op(trt_vlm_bundle, tmp_path / "bundle", op_type, domain)
    report = check_bundle(bundle, "tensorrt-10.3")
    assert not report.ok
    decoder, vision = report.graphs
    assert decoder.errors() == []  # the decoder alone would still pass: it must not hide this
    assert [g.name for g in report.failing()] == ["vision"]
    assert vision.unsupported_ops() == [named]
    (error,) = vision.errors()
    assert error.rule == "ops" and "(first: " + op_type + " (injected))" in error.message
    assert main(["check", str(bundle)]) == 1
    lines = capsys.readouterr().out.rstrip().splitlines()
    assert "  => decoder: PASS" in lines
    assert f"  => vision: FAIL, 1 error(s); unsupported ops: {named}" in lines
    assert lines[-1] == ("FAIL: 1 error(s) in 2 graph(s) (decoder, vision); "
                         "failing: vision (vision.onnx)")
