"""The exported node order makes ONNX Runtime compute each layer's attention mass right after
that layer's softmax, so the numerators do not all stay alive to the end."""

import json

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from edgekv.export.node_order import schedule_attn_mass

LAYERS = 4


def _layered_model() -> onnx.ModelProto:
    """h -> per layer: e = Exp(h W) feeds the next h (main path) and a mass (ReduceMax), the
    masses stacked as `attn_mass`, the way DecoderStep's graph is shaped."""
    rng = np.random.default_rng(0)
    nodes, inits, masses, h = [], [], [], "h0"
    for layer in range(LAYERS):
        w = f"w{layer}"
        inits.append(numpy_helper.from_array(rng.normal(size=(8, 8)).astype(np.float32) / 8, w))
        nodes += [
            helper.make_node("MatMul", [h, w], [f"s{layer}"], name=f"score{layer}"),
            helper.make_node("Exp", [f"s{layer}"], [f"e{layer}"], name=f"exp{layer}"),
            helper.make_node("Tanh", [f"e{layer}"], [f"h{layer + 1}"], name=f"main{layer}"),
            helper.make_node("ReduceMax", [f"e{layer}"], [f"m{layer}"], name=f"mass{layer}",
                             keepdims=1),
        ]
        masses.append(f"m{layer}")
        h = f"h{layer + 1}"
    nodes += [helper.make_node("Identity", [h], ["logits"], name="head"),
              helper.make_node("Concat", masses, ["attn_mass"], name="stack", axis=0)]
    graph = helper.make_graph(
        nodes, "layers", [helper.make_tensor_value_info("h0", TensorProto.FLOAT, [1, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 8]),
         helper.make_tensor_value_info("attn_mass", TensorProto.FLOAT, [LAYERS, 1])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def _run_order(model: onnx.ModelProto, tmp_path) -> list[str]:
    """Node names in the order ONNX Runtime's default executor ran them."""
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.enable_profiling = True
    opts.profile_file_prefix = str(tmp_path / "order")
    session = ort.InferenceSession(model.SerializeToString(), opts,
                                   providers=["CPUExecutionProvider"])
    session.run(None, {"h0": np.ones((1, 8), np.float32)})
    events = json.load(open(session.end_profiling()))
    return [e["name"].removesuffix("_kernel_time") for e in events
            if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")]


def test_masses_run_late_as_traced_and_at_once_when_scheduled(tmp_path):
    model = _layered_model()
    order = _run_order(model, tmp_path)
    # as traced, every mass waits until the last layer's scores are computed
    assert order.index("mass0") > order.index(f"score{LAYERS - 1}")
    assert schedule_attn_mass(model)
    onnx.checker.check_model(model)  # still topologically sorted
    order = _run_order(model, tmp_path)
    for layer in range(LAYERS - 1):
        assert order.index(f"mass{layer}") < order.index(f"score{layer + 1}")


def test_a_graph_without_the_output_is_left_alone():
    model = _layered_model()
    before = [n.name for n in model.graph.node]
    assert not schedule_attn_mass(model, output="nothing")
    assert [n.name for n in model.graph.node] == before
