"""tools/device_check stops at once, in one line, where TensorRT is missing (as here)."""

import sys

from edgekv.tools.device_check import main


def test_device_check_without_tensorrt(monkeypatch, tmp_path, tiny_bundle, capsys):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    report = tmp_path / "report.json"
    bundle = tiny_bundle("llama", budget=320, chunk=32)
    capsys.readouterr()  # drop what building the fixture bundle printed (progress bars)
    rc = main([str(bundle), "--report", str(report)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "python3-libnvinfer" in err[0]
    assert not report.exists()
