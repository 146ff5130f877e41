"""ONNX Runtime's session over a bundle graph, where a file it cannot load is one clear error.

The sha256 check at open catches a file changed after export; this catches what it cannot: a
graph whose recorded sha256 was rewritten, a bundle opened with `verify=False`, or a graph
this ONNX Runtime cannot run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgekv.runtime.errors import BundleError


def load_graph(path: Path, **session_args: Any) -> Any:
    """`onnxruntime.InferenceSession(path, **session_args)`, or a BundleError naming the file."""
    import onnxruntime as ort

    try:
        return ort.InferenceSession(str(path), **session_args)
    except Exception as exc:  # ONNX Runtime's errors derive from Exception alone
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise BundleError(f"ONNX Runtime cannot load {path.name}: {reason} (a corrupt or "
                          "truncated file, or a graph this ONNX Runtime cannot run); re-export "
                          "the bundle") from exc
