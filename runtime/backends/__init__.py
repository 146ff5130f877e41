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


BACKENDS: dict[str, Callable[[Bundle, KVCache, int], Backend]] = {"ort": _ort, "torch": _torch}


def make_backend(name: str, bundle: Bundle, cache: KVCache, threads: int = 0) -> Backend:
    if name == "auto":
        name = "ort"
    if name not in BACKENDS:
        raise EdgeKVError(f"unknown backend {name!r}; known: auto, {', '.join(BACKENDS)}")
    return BACKENDS[name](bundle, cache, threads)


__all__ = ["Backend", "StepOutput", "BACKENDS", "make_backend"]
