"""The device install runs a multimodal bundle: pictures in, answer out, without transformers or
torch (preprocessing is Pillow + numpy, both graphs run in ONNX Runtime)."""

import subprocess
import sys

SCRIPT = """
import sys
for name in ("transformers", "torch"):
    sys.modules[name] = None  # any import of these now raises ImportError
import numpy as np
from edgekv.runtime.bundle import Bundle
from edgekv.runtime.session import Session
session = Session.open(Bundle.open(sys.argv[1]), policy="streaming")
rng = np.random.default_rng(0)
for _ in range(2):
    session.append_image(rng.integers(0, 255, (30, 45, 3), dtype=np.uint8))
answer = "".join(session.ask("What changed?", max_new_tokens=4))
images = int((session.cache.modality[0, 0] == 1).sum())
loaded = sorted(m for m in sys.modules if m.startswith("edgekv.export"))
print(session.stats.tokens_out, images, loaded)
"""


def test_multimodal_runtime_needs_neither_transformers_nor_torch(vlm_bundle):
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(vlm_bundle("qwen2_vl"))],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    tokens, images, modules = proc.stdout.split(" ", 2)
    assert int(tokens) >= 1
    assert int(images) == 2 * 24  # two pictures of a 4 x 6 merged grid
    assert "decoder_step" not in modules and "exporter" not in modules
