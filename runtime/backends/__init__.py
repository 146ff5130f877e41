"""Backend registry. `auto` picks the best one installed and says which."""

from __future__ import annotations

from collections.abc import Callable

from edgekv.runtime.backends.base import Backend, StepOutput
from edgekv.runtime.bundle import Bundle
from edgekv.runtime.cache import KVCache
from edgekv.runtime.errors import EdgeKVError


def _ort(bundle: Bundle, cache: KVCache, threads: int) -> Backend:
    from edgekv.runtime.backends.ort import OrtBackend

    return OrtBackend(bundle.path, bundle.manifest, cache, bundle.embedding, threads=threads)


def _torch(bundle: Bundle, cache: KVCache, threads: int) -> Backend:
    try:
        import torch
    except ImportError as exc:
        raise EdgeKVError("the torch backend needs torch: pip install torch") from exc
    from edgekv.runtime.backends.torch_ref import TorchBackend

    if threads:
        torch.set_num_threads(threads)
    return TorchBackend.from_bundle(bundle.path, bundle.manifest, cache, bundle.embedding)


def _trt(bundle: Bundle, cache: KVCache, threads: int) -> Backend:
    from edgekv.runtime.trt_import import import_tensorrt

    import_tensorrt()  # the one-line "what to install" error before torch/CUDA are touched
    from edgekv.runtime.backends.trt import TrtBackend

    return TrtBackend(bundle.path, bundle.manifest, cache)


def _ort_gpu(bundle: Bundle, cache: KVCache, threads: int) -> Backend:
    from edgekv.runtime.backends.ort_gpu import OrtGpuBackend

    return OrtGpuBackend(bundle.path, bundle.manifest, cache)


def _torch_device(bundle: Bundle, cache: KVCache, threads: int) -> Backend:
    import torch

    from edgekv.runtime.backends.torch_device import TorchDeviceBackend

    device = "cuda" if torch.cuda.is_available() else "cpu"
    return TorchDeviceBackend(bundle.path, bundle.manifest, cache, bundle.embedding, device)


BACKENDS: dict[str, Callable[[Bundle, KVCache, int], Backend]] = {
    "ort": _ort,
    "torch": _torch,
    "trt": _trt,
    "ort-gpu": _ort_gpu,
    "torch-device": _torch_device,
}


def make_backend(
    name: str, bundle: Bundle, cache: KVCache, threads: int = 0,
    say: Callable[[str], None] | None = None,
) -> Backend:
    """Build backend `name` over `cache`; `say` hears which one `auto` chose, and why."""
    if name == "auto":
        from edgekv.runtime.backends.select import choose_backend

        choice = choose_backend(bundle.manifest)
        if say is not None:
            say(f"backend {choice.reason}")
        name = choice.name
    if name not in BACKENDS:
        raise EdgeKVError(f"unknown backend {name!r}; known: auto, {', '.join(BACKENDS)}")
    return BACKENDS[name](bundle, cache, threads)


__all__ = ["Backend", "StepOutput", "BACKENDS", "make_backend"]
