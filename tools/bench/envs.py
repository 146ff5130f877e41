"""The peers' virtual environments: created once by the benchmark itself, then reused.

A peer whose pins conflict with edgekv's (optimum-onnx wants transformers < 4.58) or whose
install is slow (llama-cpp-python compiles llama.cpp) gets its own venv under the cache dir.
A venv counts as ready only when its marker file records the same requirements, so a change of
pins re-runs pip on it; a failed install leaves no marker and raises `EnvError` with the log's tail.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import venv
from dataclasses import dataclass, field
from pathlib import Path

# This machine's CPU wheel; anything newer pulls CUDA wheels (see tools/constraints-cpu.txt).
TORCH_PIN = "torch==2.13.0"
READY_MARKER = ".edgekv-ready.json"


class EnvError(RuntimeError):
    """A peer's environment could not be made; the message says why (one line)."""


@dataclass(frozen=True)
class EnvSpec:
    name: str
    requirements: tuple[str, ...]
    constraints: tuple[str, ...] = (TORCH_PIN,)
    environ: dict[str, str] = field(default_factory=dict)  # e.g. CMAKE_ARGS for a compile
    pip_args: tuple[str, ...] = ()

    def key(self) -> dict[str, object]:
        return {"requirements": list(self.requirements), "constraints": list(self.constraints),
                "environ": self.environ, "pip_args": list(self.pip_args)}


# llama.cpp's optional parts are switched off: they are not measured and slow the compile.
LLAMA_OPTIONAL_OFF = ("-DLLAVA_BUILD=OFF -DMTMD_BUILD=OFF -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF "
                      "-DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_TOOLS=OFF")
# ggml's instruction sets, named after the /proc/cpuinfo flag that allows each. AMX is left out
# on purpose: -march=native turns ggml's AMX kernels on wherever the CPU has AMX, and where the
# kernel or hypervisor does not grant the tile state (this machine), `ldtilecfg` faults and
# every prefill segfaults. So the build is not native: it names what this CPU has, minus AMX.
GGML_ISA = {"avx": "AVX", "avx2": "AVX2", "fma": "FMA", "f16c": "F16C", "bmi2": "BMI2",
            "avx_vnni": "AVX_VNNI", "avx512f": "AVX512", "avx512vbmi": "AVX512_VBMI",
            "avx512_vnni": "AVX512_VNNI", "avx512_bf16": "AVX512_BF16"}


def cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> set[str]:
    try:
        with open(cpuinfo) as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def llama_cmake_args(flags: set[str]) -> str:
    isa = " ".join(f"-DGGML_{name}={'ON' if flag in flags else 'OFF'}"
                   for flag, name in GGML_ISA.items())
    return f"{LLAMA_OPTIONAL_OFF} -DGGML_NATIVE=OFF {isa}"


# Only what each peer's script needs (optimum's exporter needs accelerate to keep tied
# embeddings once).
ENV_SPECS: dict[str, EnvSpec] = {
    "ort_genai": EnvSpec("ort_genai", ("onnxruntime-genai", "onnxruntime", "onnx", "onnx-ir",
                                       TORCH_PIN,
                                       "transformers", "safetensors", "numpy", "psutil")),
    "llama_cpp": EnvSpec("llama_cpp", ("llama-cpp-python", "numpy", "psutil"),
                         environ={"CMAKE_ARGS": llama_cmake_args(cpu_flags()),
                                  "CMAKE_BUILD_PARALLEL_LEVEL": "2"},
                         # pip's wheel cache ignores CMAKE_ARGS: a new build must not reuse it
                         pip_args=("--no-cache-dir", "--force-reinstall")),
    "optimum": EnvSpec("optimum", ("optimum-onnx[onnxruntime]", TORCH_PIN, "accelerate",
                                   "psutil")),
}


def venv_python(cache_dir: Path, name: str) -> Path:
    return cache_dir / "venvs" / name / "bin" / "python"


def ready_info(cache_dir: Path, spec: EnvSpec) -> dict | None:
    """The marker of a venv made from exactly this spec, or None."""
    marker = cache_dir / "venvs" / spec.name / READY_MARKER
    try:
        info = json.loads(marker.read_text())
    except (OSError, ValueError):
        return None
    return info if info.get("spec") == spec.key() else None


def ensure_env(cache_dir: Path, spec: EnvSpec, log=print) -> Path:  # noqa: ANN001 - a callable
    """The python of the spec's venv, creating and installing it first if needed."""
    python = venv_python(cache_dir, spec.name)
    if ready_info(cache_dir, spec) is not None and python.exists():
        return python
    root = python.parent.parent
    logs = cache_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log_file = logs / f"install-{spec.name}.log"
    log(f"bench: setting up venv {spec.name} (log: {log_file}); this happens once")
    start = time.perf_counter()
    if not python.exists():
        venv.EnvBuilder(with_pip=True).create(root)
    # pip on an existing venv adds or changes only what the new spec needs.
    constraints = cache_dir / f"constraints-{spec.name}.txt"
    constraints.write_text("".join(f"{c}\n" for c in spec.constraints))
    cmd = [str(python), "-m", "pip", "install", "--disable-pip-version-check", "--progress-bar",
           "off", *spec.pip_args, "-c", str(constraints), *spec.requirements]
    env = {**os.environ, **spec.environ}
    with log_file.open("w") as out:
        out.write(" ".join(cmd) + "\n")
        out.flush()
        code = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, env=env).returncode
    seconds = time.perf_counter() - start
    if code != 0:
        raise EnvError(f"pip install for {spec.name} failed (exit {code}) after {seconds:.0f} s: "
                       f"{_last_error(log_file)} (log: {log_file})")
    info = {"spec": spec.key(), "install_s": round(seconds, 1), "made": time.time()}
    (root / READY_MARKER).write_text(json.dumps(info))
    log(f"bench: venv {spec.name} ready in {seconds:.0f} s")
    return python


def _last_error(log_file: Path) -> str:
    lines = [ln.strip() for ln in log_file.read_text(errors="replace").splitlines() if ln.strip()]
    errors = [ln for ln in lines if "error" in ln.lower()]
    return (errors or lines or ["no output"])[-1][:300]


def main() -> None:
    """`python -m edgekv.tools.bench.envs CACHE_DIR NAME...`: make venvs ahead of a run."""
    cache_dir = Path(sys.argv[1]).expanduser()
    for name in sys.argv[2:]:
        print(ensure_env(cache_dir, ENV_SPECS[name]))


if __name__ == "__main__":
    main()
