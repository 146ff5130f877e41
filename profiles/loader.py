"""Device profiles: TOML files (built-in ones beside this module, or a user's own file) read
into a plain dataclass, with every field checked so a typo is an error, not a silent default.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import psutil

from edgekv.runtime.errors import ProfileError

if sys.version_info >= (3, 11):
    import tomllib
else:  # JetPack 6 ships Python 3.10
    import tomli as tomllib

PROFILE_DIR = Path(__file__).parent
KINDS = ("jetson", "gpu", "cpu")
PRECISIONS = ("fp32", "fp16")
MiB = 2**20


@dataclass(frozen=True)
class DeviceProfile:
    name: str
    description: str
    kind: str  # jetson | gpu | cpu
    memory_mb: int  # physical memory of the module / card ("host" in a file: this machine's RAM)
    reserve_mb: int  # left to the OS, the camera stack, the display, other processes
    shared_memory: bool  # CPU and GPU use the same RAM (Jetson): host-side memory counts too
    precision: str  # the dtype a bundle for this device is exported in
    int8: bool  # the GPU has int8 tensor cores (informational; edgekv exports fp32/fp16)
    default_chunk: int
    trt_workspace_mb: int  # TensorRT builder workspace limit; its tactics' scratch at run time
    overhead_mb: int  # runtime's fixed memory: interpreter, libraries, CUDA context
    visible_mb: int | None = None  # RAM the kernel sees after carve-outs (tegrastats' total)
    jetpack: str | None = None
    l4t: str | None = None
    tensorrt: str | None = None
    source: str = ""  # the file it was read from

    @property
    def usable_bytes(self) -> int:
        """Memory a bundle may plan for: what the kernel sees, minus the reserve."""
        seen = self.visible_mb if self.visible_mb is not None else self.memory_mb
        return (seen - self.reserve_mb) * MiB

    @property
    def overhead_bytes(self) -> int:
        return self.overhead_mb * MiB

    @property
    def workspace_bytes(self) -> int:
        return self.trt_workspace_mb * MiB


_REQUIRED: dict[str, type | tuple[type, ...]] = {
    "name": str, "description": str, "kind": str, "memory_mb": (int, str), "reserve_mb": int,
    "shared_memory": bool, "precision": str, "int8": bool, "default_chunk": int,
    "trt_workspace_mb": int, "overhead_mb": int,
}
_OPTIONAL: dict[str, type] = {"visible_mb": int, "jetpack": str, "l4t": str, "tensorrt": str}


def list_profiles() -> list[str]:
    """Names of the built-in profiles."""
    return sorted(p.stem for p in PROFILE_DIR.glob("*.toml"))


def load_profile(name_or_path: str | Path) -> DeviceProfile:
    """A built-in profile by name (`orin-nano-8gb`) or a profile file (`my-board.toml`)."""
    text = str(name_or_path)
    path = Path(text)
    if not (text.endswith(".toml") or path.is_file()):
        path = PROFILE_DIR / f"{text}.toml"
        if not path.is_file():
            raise ProfileError(f"no device profile {text!r}; built-in profiles: "
                               f"{', '.join(list_profiles())} (or pass a path to a .toml file)")
    if not path.is_file():
        raise ProfileError(f"profile file not found: {path}")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ProfileError(f"{path} is not valid TOML: {exc}") from exc
    return parse_profile(raw, str(path))


def parse_profile(raw: dict[str, Any], source: str = "<profile>") -> DeviceProfile:
    """Check a profile's fields (names, types, ranges) and build the dataclass."""
    where = f"profile {source}"
    unknown = sorted(set(raw) - set(_REQUIRED) - set(_OPTIONAL))
    if unknown:
        known = ", ".join(f.name for f in fields(DeviceProfile) if f.name != "source")
        raise ProfileError(f"{where}: unknown field(s) {', '.join(unknown)}; known: {known}")
    missing = [k for k in _REQUIRED if k not in raw]
    if missing:
        raise ProfileError(f"{where}: missing field(s) {', '.join(missing)}")
    for key, expected in {**_REQUIRED, **_OPTIONAL}.items():
        if key in raw and not _is(raw[key], expected):
            raise ProfileError(f"{where}: {key} = {raw[key]!r} should be "
                               f"{_type_name(expected)}")
    values = dict(raw)
    if values["memory_mb"] == "host":
        values["memory_mb"] = psutil.virtual_memory().total // MiB
    elif isinstance(values["memory_mb"], str):
        raise ProfileError(f"{where}: memory_mb must be a number of MiB or \"host\"")
    profile = DeviceProfile(**values, source=source)
    _check_ranges(profile, where)
    return profile


def _check_ranges(p: DeviceProfile, where: str) -> None:
    if p.kind not in KINDS:
        raise ProfileError(f"{where}: kind {p.kind!r} is not one of {', '.join(KINDS)}")
    if p.precision not in PRECISIONS:
        raise ProfileError(f"{where}: precision {p.precision!r} is not one of "
                           f"{', '.join(PRECISIONS)}")
    for key in ("memory_mb", "default_chunk"):
        if getattr(p, key) <= 0:
            raise ProfileError(f"{where}: {key} must be positive")
    for key in ("reserve_mb", "trt_workspace_mb", "overhead_mb"):
        if getattr(p, key) < 0:
            raise ProfileError(f"{where}: {key} must not be negative")
    if p.visible_mb is not None and not 0 < p.visible_mb <= p.memory_mb:
        raise ProfileError(f"{where}: visible_mb {p.visible_mb} must be between 1 and "
                           f"memory_mb {p.memory_mb}")
    if p.usable_bytes <= 0:
        raise ProfileError(f"{where}: reserve_mb {p.reserve_mb} leaves no memory to plan for")


def _is(value: Any, expected: type | tuple[type, ...]) -> bool:
    # TOML booleans are not numbers here: `memory_mb = true` is a mistake, not 1 MiB.
    if isinstance(value, bool):
        return expected is bool
    return isinstance(value, expected)


def _type_name(expected: type | tuple[type, ...]) -> str:
    names = {int: "an integer", str: "a string", bool: "true or false"}
    if isinstance(expected, tuple):
        return " or ".join(names[t] for t in expected)
    return names[expected]
