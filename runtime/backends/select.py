"""`--backend auto`: the best backend this machine can run for this bundle, and why.

Order: native TensorRT (needs TensorRT, a CUDA GPU and an engine built by `edgekv build`), then
ONNX Runtime on the GPU (needs onnxruntime-gpu's CUDA provider and a CUDA GPU), then ONNX
Runtime on the CPU, which always works.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgekv.export.manifest import Manifest
from edgekv.runtime.trt_import import tensorrt_available


@dataclass(frozen=True)
class Choice:
    name: str
    reason: str  # one line: why this one, and why not the better ones


def cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def ort_cuda_provider() -> bool:
    import onnxruntime as ort

    return "CUDAExecutionProvider" in ort.get_available_providers()


def why_not_trt(manifest: Manifest) -> str | None:
    if not tensorrt_available():
        return "TensorRT not installed"
    if not cuda_available():
        return "no CUDA device"
    if not manifest.engines.get("graphs", {}).get("decoder"):
        return "no engine built (edgekv build)"
    return None


def why_not_ort_gpu() -> str | None:
    if not ort_cuda_provider():
        return "onnxruntime has no CUDA provider"
    if not cuda_available():
        return "no CUDA device"
    return None


def choose_backend(manifest: Manifest) -> Choice:
    skipped = []
    for name, why_not in (("trt", lambda: why_not_trt(manifest)), ("ort-gpu", why_not_ort_gpu)):
        reason = why_not()
        if reason is None:
            return Choice(name, f"auto -> {name}")
        skipped.append(f"{name}: {reason}")
    return Choice("ort", f"auto -> ort on the CPU ({'; '.join(skipped)})")
