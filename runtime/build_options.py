"""Options of `edgekv build`: precision and workspace, from flags or a device profile (TOML).

A profile may be a path to a TOML file or the name of one under `profiles/`. Only the keys this
command needs are read (`precision`, `workspace_mb`, at the top level or under [build]); a
profile that cannot be found is reported and ignored, so the flags alone always work.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # JetPack 6 is Python 3.10
    import tomli as tomllib

DEFAULT_WORKSPACE_MB = 1024


@dataclass(frozen=True)
class BuildOptions:
    fp16: bool = False
    workspace_mb: int = DEFAULT_WORKSPACE_MB
    profile: str | None = None  # where precision/workspace came from, if a profile was read


def resolve_options(
    fp16: bool, workspace_mb: int | None, profile: str | None, log=print  # noqa: ANN001
) -> BuildOptions:
    """Flags win; a profile fills what the flags leave unset."""
    table = _profile_table(profile, log) if profile else None
    fp16_from_profile = bool(table) and str(table.get("precision", "")).lower() == "fp16"
    workspace = workspace_mb or (int(table["workspace_mb"]) if table and "workspace_mb" in table
                                 else DEFAULT_WORKSPACE_MB)
    return BuildOptions(fp16 or fp16_from_profile, workspace, profile if table else None)


def _profile_table(profile: str, log) -> dict[str, Any] | None:  # noqa: ANN001
    path = Path(profile)
    if not path.is_file():
        packaged = resources.files("edgekv.profiles").joinpath(f"{profile}.toml")
        if not packaged.is_file():
            log(f"profile {profile!r} not found; building with the flags' values")
            return None
        text = packaged.read_text()
    else:
        text = path.read_text()
    data = tomllib.loads(text)
    return {**data, **data.get("build", {})}
