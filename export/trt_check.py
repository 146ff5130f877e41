"""`edgekv check`: static validation of a bundle's graphs against one TensorRT version.

Every graph the bundle ships is checked: the decoder and, in a multimodal bundle, the vision
graph (`manifest.vision.graph`); the bundle passes only if each of them does.

Checked without TensorRT: every op (and the types it sees) is in the ONNX-TensorRT parser's
support list, inputs the parser needs as constants are constants, shapes are static except the
decoder's chunk axis, INT64 appears only where TensorRT 10 accepts it, and no constant holds
-inf/+inf/NaN (an fp16 engine turns -inf masks into NaNs).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

from edgekv.export.graph_types import tensor_types
from edgekv.export.manifest import Manifest, load_manifest
from edgekv.export.trt_support import ONNX_TO_TRT_TYPE, TrtSupport, load_support
from edgekv.runtime.errors import BundleError

# Decoder inputs whose axis is the chunk length c (contract names; -1 = last axis, because the
# M-RoPE variant of chunk_pos is [3, c]). Every other axis of every graph must be static.
CHUNK_AXES = {"inputs_embeds": 1, "chunk_pos": -1, "mass_weight": 0}
# Input positions that hold indices, shapes or axes rather than the data an op computes on;
# the parser's "Supported Types" column is about the data, so these are not type-checked.
INDEX_INPUTS = {
    "Gather": {1}, "GatherElements": {1}, "GatherND": {1}, "Scatter": {1},
    "ScatterElements": {1}, "ScatterND": {1}, "Reshape": {1}, "Expand": {1}, "Tile": {1},
    "Slice": {1, 2, 3, 4}, "Squeeze": {1}, "Unsqueeze": {1}, "Pad": {1, 3}, "Split": {1},
    "CumSum": {1}, "TopK": {1}, "OneHot": {0, 1}, "Resize": {1, 2, 3}, "ConstantOfShape": {0},
    "Where": {0}, "CastLike": {1}, "Trilu": {1},
    **{op: {1} for op in ("ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp",
                          "ReduceMax", "ReduceMean", "ReduceMin", "ReduceProd", "ReduceSum",
                          "ReduceSumSquare")},
}
FP16_MAX = 65504.0
_FLOAT_TYPES = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE,
                onnx.TensorProto.BFLOAT16}


@dataclass(frozen=True)
class Finding:
    rule: str  # ops | types | constants-in | shapes | int64 | inf | opset
    severity: str  # error (TensorRT would reject or mis-compute) | warning | note
    message: str
    op: str = ""  # rule "ops": the op the parser lacks ("Det", "com.microsoft.RotaryEmbedding")


@dataclass
class GraphReport:
    name: str
    file: str
    nodes: int = 0
    op_types: int = 0
    opset: int = 0
    findings: list[Finding] = field(default_factory=list)

    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "error"]

    def unsupported_ops(self) -> list[str]:
        """Ops of this graph the parser has no entry for (other errors are per rule)."""
        return sorted({f.op for f in self.errors() if f.rule == "ops" and f.op})

    def verdict(self) -> str:
        """One line: does this graph pass, and if not, how many errors and which ops."""
        if not self.errors():
            return f"{self.name}: PASS"
        ops = self.unsupported_ops()
        unsupported = f"; unsupported ops: {', '.join(ops)}" if ops else ""
        return f"{self.name}: FAIL, {len(self.errors())} error(s){unsupported}"


@dataclass
class CheckReport:
    target: str
    source: str
    graphs: list[GraphReport]

    @property
    def ok(self) -> bool:
        return not self.failing()

    def failing(self) -> list[GraphReport]:
        return [g for g in self.graphs if g.errors()]

    def lines(self) -> list[str]:
        out = [f"target {self.target} (operator list: {self.source})"]
        for g in self.graphs:
            out.append(f"{g.name} graph ({g.file}): {g.nodes} nodes, {g.op_types} op types, "
                       f"opset {g.opset}")
            for rule in RULES:
                hits = [f for f in g.findings if f.rule == rule]
                if not any(f.severity == "error" for f in hits):
                    out.append(f"  ok     {rule:<12} {RULES[rule]}")
                for f in hits:
                    out.append(f"  {f.severity:<6} {rule:<12} {f.message}")
            out.append(f"  => {g.verdict()}")
        out.append(self.verdict())
        return out

    def verdict(self) -> str:
        """The last line: the bundle's verdict, naming every graph checked and those that fail
        (a multimodal bundle is only usable on TensorRT if all its graphs parse)."""
        errors = sum(len(g.errors()) for g in self.graphs)
        checked = f"{len(self.graphs)} graph(s) ({', '.join(g.name for g in self.graphs)})"
        if self.ok:
            return f"PASS: {errors} error(s) in {checked}"
        failing = ", ".join(f"{g.name} ({g.file})" for g in self.failing())
        return f"FAIL: {errors} error(s) in {checked}; failing: {failing}"


RULES = {
    "opset": "opset within the parser's range",
    "ops": "every op is in the parser's support list",
    "types": "every op sees only types the parser lists for it",
    "constants-in": "inputs the parser needs as build-time constants are constants",
    "shapes": "static shapes except the chunk axis",
    "int64": "INT64 only where TensorRT 10 accepts it",
    "inf": "no -inf/+inf/NaN constants",
}


def check_bundle(bundle_dir: str | Path, target: str = "tensorrt-10.3") -> CheckReport:
    bundle_dir = Path(bundle_dir)
    manifest = load_manifest(bundle_dir)
    support = load_support(target)
    reports = []
    for name, file in bundle_graphs(manifest).items():
        # Only the decoder has a varying axis; the vision graph's input shape is fixed at export.
        axes = ({manifest.inputs[k]: a for k, a in CHUNK_AXES.items() if k in manifest.inputs}
                if name == "decoder" else {})
        reports.append(check_graph(bundle_dir / file, support, axes, name))
    src = support.source
    return CheckReport(target, f"{src.get('repo')} {src.get('path')}", reports)


def bundle_graphs(manifest: Manifest) -> dict[str, str]:
    """Graph name -> ONNX file of every graph the bundle ships: `manifest.graphs` (the decoder)
    and, in a multimodal bundle, the vision graph, which `manifest.graphs` does not list."""
    graphs = dict(sorted(manifest.graphs.items()))
    if manifest.vision is not None:
        graphs.setdefault("vision", manifest.vision.graph)
    return graphs


def check_graph(
    path: Path, support: TrtSupport, chunk_axes: dict[str, int], name: str = ""
) -> GraphReport:
    """Check one ONNX file; `chunk_axes` maps input name -> the one axis allowed to vary."""
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf's DecodeError, or an OSError
        raise BundleError(f"{path.name} is not an ONNX graph onnx can read ({exc}); a corrupt "
                          "or truncated file: re-export the bundle") from exc
    g = model.graph
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    report = GraphReport(name or path.stem, path.name, len(g.node),
                         len({n.op_type for n in g.node}), opset)
    add = report.findings.append
    if not support.opset_min <= opset <= support.opset_max:
        add(Finding("opset", "error", f"opset {opset} is outside {support.opset_min}.."
                    f"{support.opset_max} that {support.target} parses"))
    _check_nodes(model, support, add)
    _check_shapes(g, chunk_axes, add)
    _check_io_int64(g, add)
    try:
        _check_constants(g, path.parent, add)
    except (OSError, ValueError) as exc:  # external data shorter than the graph says
        raise BundleError(f"the weights {path.name} names cannot be read ({exc}); a corrupt or "
                          "truncated file: re-export the bundle") from exc
    return report


def _check_nodes(model: onnx.ModelProto, support: TrtSupport, add) -> None:  # noqa: ANN001
    g = model.graph
    types = tensor_types(model)
    constants = {i.name for i in g.initializer} | {
        n.output[0] for n in g.node if n.op_type == "Constant"}
    producers = {out: n.op_type for n in g.node for out in n.output}
    seen: set[tuple[str, str, str]] = set()  # report each (op, rule, detail) once
    for node in g.node:
        where = f"{node.op_type} ({node.name or node.output[0]})"
        if node.domain not in ("", "ai.onnx"):
            # Named by op, not node, so each contrib op is reported once, not once per layer.
            custom = f"{node.domain}.{node.op_type}"
            _once(seen, add, Finding("ops", "error", f"{custom}: custom domain {node.domain!r} "
                                     "needs a TensorRT plugin (re-export with --target "
                                     f"tensorrt for standard ops only) (first: {where})", custom))
            continue
        op = support.ops.get(node.op_type)
        if op is None:
            _once(seen, add, Finding("ops", "error", f"{node.op_type} is not supported by the "
                                     f"ONNX-TensorRT parser of {support.target} (first: {where})",
                                     node.op_type))
            continue
        skip = INDEX_INPUTS.get(node.op_type, set())
        checked = [x for i, x in enumerate(node.input) if x and i not in skip]
        if node.op_type in ("Cast", "CastLike"):
            checked += list(node.output)
        for tensor in checked:
            onnx_type = types.get(tensor)
            if onnx_type is None:
                _once(seen, add, Finding("types", "warning",
                                         f"{node.op_type}: type of an input is unknown"))
                continue
            trt_type = ONNX_TO_TRT_TYPE.get(onnx_type, onnx_type)
            if trt_type not in op.types:
                rule = "int64" if trt_type == "INT64" else "types"
                listed = ", ".join(sorted(op.types))
                _once(seen, add, Finding(rule, "error", f"{node.op_type} on {trt_type}: the parser "
                                         f"supports {listed} (first: {where})"))
        for i in op.constant_inputs:
            if i < len(node.input) and node.input[i] and node.input[i] not in constants:
                made_by = producers.get(node.input[i], "a graph input")
                _once(seen, add, Finding("constants-in", "error", f"{where}: input {i} is computed "
                                         f"by {made_by}, but the parser needs an initializer or "
                                         f"Constant ({op.restrictions})"))


def _once(seen: set, add, finding: Finding) -> None:  # noqa: ANN001
    key = (finding.rule, finding.severity, finding.message.split(" (first:")[0])
    if key not in seen:
        seen.add(key)
        add(finding)


def _dims(info: onnx.ValueInfoProto) -> list[int | str | None]:
    return [d.dim_value if d.HasField("dim_value") else d.dim_param or None
            for d in info.type.tensor_type.shape.dim]


def _check_shapes(g: onnx.GraphProto, chunk_axes: dict[str, int], add) -> None:  # noqa: ANN001
    symbols: set[str] = set()
    for info in g.input:
        dims = _dims(info)
        allowed = chunk_axes.get(info.name)
        allowed = None if allowed is None else allowed % max(len(dims), 1)
        for axis, d in enumerate(dims):
            if isinstance(d, int):
                continue
            if axis == allowed and d is not None:
                symbols.add(d)
                continue
            add(Finding("shapes", "error", f"input {info.name} axis {axis} is dynamic ({d!r}); "
                        "only the decoder's chunk axis may vary"))
    if len(symbols) > 1:
        add(Finding("shapes", "error", f"the chunk axes use different symbols {sorted(symbols)}; "
                    "one optimization profile needs them to be one length"))
    for info in g.output:
        for axis, d in enumerate(_dims(info)):
            names = set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", d)) if isinstance(d, str) else set()
            if d is None or (isinstance(d, str) and not names <= symbols):
                add(Finding("shapes", "error", f"output {info.name} axis {axis} is {d!r}, not "
                            "static nor a function of the chunk length"))


def _check_io_int64(g: onnx.GraphProto, add) -> None:  # noqa: ANN001
    io = [i for i in [*g.input, *g.output]
          if i.type.tensor_type.elem_type == onnx.TensorProto.INT64]
    if io:
        # TensorRT >= 9 keeps INT64 I/O as INT64 (onnx-tensorrt Changelog 9.0 EA): accepted,
        # but the runtime must bind int64 buffers, so say which.
        add(Finding("int64", "note", "INT64 graph I/O " + ", ".join(i.name for i in io)
                    + ": accepted by TensorRT >= 9; bind int64 buffers"))


def _check_constants(g: onnx.GraphProto, base: Path, add) -> None:  # noqa: ANN001
    tensors = [(i.name, i) for i in g.initializer]
    tensors += [(n.output[0], a.t) for n in g.node if n.op_type == "Constant"
                for a in n.attribute if a.name == "value"]
    for name, t in tensors:
        if t.data_type not in _FLOAT_TYPES:
            continue
        values = _values(t, base)
        if not np.all(np.isfinite(values)):
            kinds = sorted({str(v) for v in np.unique(values[~np.isfinite(values)])})
            add(Finding("inf", "error", f"constant {name} holds {', '.join(kinds)}; use a large "
                        "finite negative (fp16 engines turn -inf masks into NaNs)"))
        elif values.size <= 4096 and values.size and np.abs(values).max() > FP16_MAX:
            add(Finding("inf", "warning", f"constant {name} exceeds the fp16 range "
                        f"(|x| = {np.abs(values).max():.3g}); it becomes inf in an fp16 engine"))


def _values(t: onnx.TensorProto, base: Path) -> np.ndarray:
    if t.data_location != onnx.TensorProto.EXTERNAL:
        return onnx.numpy_helper.to_array(t).astype(np.float32, copy=False).ravel()
    info = {e.key: e.value for e in t.external_data}
    dtype = onnx.helper.tensor_dtype_to_np_dtype(t.data_type)
    count = int(info["length"]) // np.dtype(dtype).itemsize
    return np.memmap(base / info["location"], dtype=dtype, mode="r",
                     offset=int(info.get("offset", 0)), shape=(count,))
