"""The device install runs `edgekv run --source` on a multimodal bundle with transformers and
torch unavailable (OpenCV and Pillow are the only image libraries it needs)."""

import subprocess
import sys

SCRIPT = """
import sys
for name in ("transformers", "torch"):
    sys.modules[name] = None  # any import of these now raises ImportError
from edgekv.cli import main
code = main(["run", sys.argv[1], "--source", "synthetic:size=32x32", "--max-frames", "6",
             "--ask", "What is there?", "--max-new-tokens", "2", "--no-status"])
print(code)
"""


def test_streaming_needs_neither_transformers_nor_torch(vlm_bundle):
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(vlm_bundle("llava-clip"))],
                          capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("0"), proc.stderr
    assert "frames 6 in" in proc.stderr and "1 answers" in proc.stderr
