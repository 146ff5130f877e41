"""The device install: the runtime runs a bundle with transformers and torch unavailable."""

import subprocess
import sys

SCRIPT = """
import sys
for name in ("transformers", "torch"):
    sys.modules[name] = None  # any import of these now raises ImportError
from edgekv.runtime.bundle import Bundle
from edgekv.runtime.session import Session
session = Session.open(Bundle.open(sys.argv[1]), policy="streaming")
answer = "".join(session.ask("Hello there", max_new_tokens=4))
print(session.stats.tokens_out, sorted(m for m in sys.modules if m.startswith("edgekv.export")))
"""


def test_runtime_needs_neither_transformers_nor_torch(tiny_bundle):
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(tiny_bundle())],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    tokens, modules = proc.stdout.split(" ", 1)
    assert int(tokens) >= 1
    assert "decoder_step" not in modules and "exporter" not in modules
