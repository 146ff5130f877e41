"""Import TensorRT, or fail with the one line that says what to install.

TensorRT's pip wheel comes from NVIDIA's own index; on a Jetson it comes with JetPack as the
Debian package `python3-libnvinfer`. This project's CI has neither, so this path is never
executed there beyond the error below.
"""

from __future__ import annotations

from types import ModuleType

from edgekv.runtime.errors import EdgeKVError

MIN_MAJOR = 10  # execute_async_v3 + INT64 I/O as written here (TensorRT 10.3 = JetPack 6.2)


class TensorRTMissing(EdgeKVError):
    """TensorRT (or a usable version of it) is not importable."""


MISSING = ("TensorRT is not installed: on a Jetson install JetPack's python3-libnvinfer "
           "(sudo apt install python3-libnvinfer), elsewhere the tensorrt wheel from "
           "NVIDIA's index")


def import_tensorrt() -> ModuleType:
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise TensorRTMissing(MISSING) from exc
    major = int(str(getattr(trt, "__version__", "0")).split(".")[0])
    if major < MIN_MAJOR:
        raise TensorRTMissing(
            f"TensorRT {trt.__version__} is too old: edgekv needs {MIN_MAJOR}.x or newer "
            "(JetPack 6.2 ships 10.3)"
        )
    return trt


def tensorrt_available() -> bool:
    try:
        import_tensorrt()
    except TensorRTMissing:
        return False
    return True
