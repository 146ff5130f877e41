"""Without TensorRT, every TensorRT path stops with one line that says what to install."""

import sys

import pytest

from edgekv.cli import main
from edgekv.runtime.backends import make_backend
from edgekv.runtime.bundle import Bundle
from edgekv.runtime.cache import KVCache
from edgekv.runtime.trt_import import TensorRTMissing, tensorrt_available


@pytest.fixture
def no_tensorrt(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # `import tensorrt` raises ImportError


def test_build_fails_in_one_line(no_tensorrt, tiny_bundle, capsys):
    bundle = tiny_bundle("llama", budget=320, chunk=32)
    assert main(["build", str(bundle), "--fp16"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "python3-libnvinfer" in err[0] and err[0].startswith("edgekv: error")
    assert not (bundle / "engines").exists()


def test_trt_backend_fails_with_the_same_line(no_tensorrt, tiny_bundle):
    bundle = Bundle.open(tiny_bundle("llama", budget=320, chunk=32))
    d = bundle.manifest.dims
    cache = KVCache.allocate(d.num_layers, d.num_kv_heads, bundle.manifest.budget, d.head_dim)
    assert not tensorrt_available()
    with pytest.raises(TensorRTMissing, match="python3-libnvinfer"):
        make_backend("trt", bundle, cache)


def test_too_old_tensorrt_is_refused(monkeypatch):
    fake = type(sys)("tensorrt")
    fake.__version__ = "8.6.1"
    monkeypatch.setitem(sys.modules, "tensorrt", fake)
    with pytest.raises(TensorRTMissing, match="8.6.1 is too old"):
        from edgekv.runtime.trt_import import import_tensorrt

        import_tensorrt()
