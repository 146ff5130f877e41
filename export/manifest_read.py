"""Reading a manifest someone may have edited: every field checked against its declared type,
and the values the runtime branches on against what an export writes, so a hand edit fails at
open with its name, not deep in the runtime (`Manifest.from_json`)."""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from pathlib import PurePosixPath
from typing import Any

from edgekv.export.manifest import (
    MANIFEST_NAME,
    POS_SHIFT,
    SCHEMA_VERSION,
    TABLE_ITEMSIZE,
    Manifest,
    named_files,
)
from edgekv.runtime.errors import BundleError


def parse_manifest(raw: object) -> Manifest:
    """The manifest in the JSON value `raw`, or a one-line BundleError naming what is wrong."""
    if not isinstance(raw, dict):
        raise BundleError(f"{MANIFEST_NAME} holds {_json_kind(raw)}, not the object edgekv "
                          "export writes; re-export the bundle")
    _check_version(raw)
    unknown = sorted(set(raw) - {f.name for f in dataclasses.fields(Manifest)})
    if unknown:
        raise BundleError(_unknown_fields(unknown, raw.get("edgekv_version")))
    manifest = _typed(Manifest, raw, MANIFEST_NAME)
    _check_values(manifest)
    return manifest


# Values the runtime branches on: anything else is a hand edit (it would fail deep inside).
_CHOICES = {
    "dtype": ("fp32", "fp16", "int4"),
    "position_mode": ("cache", "absolute"),
    "kv_layout": ("stacked", "per_layer"),
    "target": ("ort", "tensorrt"),
    "key_rope": ("graph", "cached"),
    "attention": ("graph", "gqa"),
    "kv_quant": ("", "int8"),
    "position_scheme": ("rope", "mrope"),
}
_POSITIVE_DIMS = ("num_layers", "hidden_size", "num_heads", "num_kv_heads", "head_dim",
                  "intermediate_size", "vocab_size")
_REQUIRED_IO = {"inputs": ("inputs_embeds", "chunk_pos", "past_keys", "past_values",
                           "slot_bias", "mass_weight"),
                "outputs": ("logits", "new_keys", "new_values", "attn_mass"),
                "graphs": ("decoder",)}
_SHA256 = re.compile("[0-9a-f]{64}")


def _json_kind(value: object) -> str:
    """What a JSON value is, in words ("a list", "null")."""
    if value is None:
        return "null"
    kinds = {bool: "a boolean", int: "a number", float: "a number", str: "a string",
             list: "a list", dict: "an object"}
    return kinds.get(type(value), type(value).__name__)


def _check_version(raw: dict[str, Any]) -> None:
    """Refuse another schema version first: its fields may mean something else."""
    version = raw.get("schema_version")
    if version == SCHEMA_VERSION and type(version) is int:
        return
    written = f" (written by edgekv {raw['edgekv_version']})" if raw.get("edgekv_version") else ""
    if type(version) is int and version > SCHEMA_VERSION:
        advice = "upgrade edgekv to open it, or re-export the bundle with this edgekv"
    else:
        advice = "re-export the bundle with this edgekv"
    raise BundleError(f"manifest schema version {version!r}{written} is not the version this "
                      f"edgekv reads ({SCHEMA_VERSION}); {advice}")


def _unknown_fields(names: list[str], written_by: object) -> str:
    from edgekv import __version__

    fields = ", ".join(names)
    if written_by and written_by != __version__:  # a newer edgekv's field, most likely
        return (f"{MANIFEST_NAME} has fields this edgekv ({__version__}) does not know: {fields} "
                f"(written by edgekv {written_by}); upgrade edgekv, or re-export the bundle "
                "with this one")
    return (f"{MANIFEST_NAME} has fields edgekv does not know: {fields}; it was edited: "
            "re-export the bundle")


def _typed(cls: type, raw: object, where: str = "") -> Any:
    """`cls` (a dataclass) built from the JSON object `raw` found at `where` ("" for the
    manifest itself), every field checked against its annotation: a wrong type fails here, not
    as a TypeError deep in the runtime."""
    if not isinstance(raw, dict):
        raise BundleError(f"{MANIFEST_NAME}: {where} is {_json_kind(raw)}, not an object; "
                          "re-export the bundle")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise BundleError(_unknown_fields([_key(where, n) for n in unknown], None))
    for name, f in fields.items():
        if name not in raw and f.default is f.default_factory is dataclasses.MISSING:
            raise BundleError(f"{MANIFEST_NAME} has no {_key(where, name)!r}; re-export the "
                              "bundle")
    hints = typing.get_type_hints(cls)
    return cls(**{k: _value(hints[k], v, _key(where, k)) for k, v in raw.items()})


def _key(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def _value(hint: Any, value: object, where: str) -> Any:
    """`value` checked against the annotation `hint` (the JSON shapes a manifest uses)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return value
    if dataclasses.is_dataclass(hint):
        return _typed(hint, value, where)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        return _value(next(a for a in args if a is not type(None)), value, where)
    if origin is list and isinstance(value, list):
        return [_value(args[0], v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict and isinstance(value, dict):
        return {k: _value(args[1], v, f"{where}.{k}") for k, v in value.items()}
    if hint is float and type(value) in (int, float):
        return float(value)
    if hint in (int, str, bool) and type(value) is hint:  # True is not an int here
        return value
    expected = getattr(origin or hint, "__name__", str(hint))
    names = {"int": "an integer", "float": "a number", "str": "a string", "bool": "a boolean",
             "list": "a list", "dict": "an object"}
    raise BundleError(f"{MANIFEST_NAME}: {where} is {_json_kind(value)} ({value!r:.40}), not "
                      f"{names.get(expected, expected)}; re-export the bundle")


def _check_values(m: Manifest) -> None:
    """Values of the right type that no export writes (a hand edit): refused by name."""
    problems = [f"{name} {getattr(m, name)!r} is not one of {', '.join(map(repr, allowed))}"
                for name, allowed in _CHOICES.items() if getattr(m, name) not in allowed]
    problems += [f"{name} must be at least 1, not {getattr(m, name)}"
                 for name in ("budget", "chunk") if getattr(m, name) < 1]
    if not problems and m.chunk > m.budget:
        problems.append(f"chunk {m.chunk} is larger than budget {m.budget}")
    d = m.dims
    problems += [f"dims.{name} must be at least 1, not {getattr(d, name)}"
                 for name in _POSITIVE_DIMS if getattr(d, name) < 1]
    if d.num_kv_heads >= 1 and d.num_heads % d.num_kv_heads:
        problems.append(f"dims.num_heads {d.num_heads} is not a multiple of num_kv_heads "
                        f"{d.num_kv_heads}")
    for table, keys in _REQUIRED_IO.items():
        problems += [f"{table} has no {key!r}" for key in keys if key not in getattr(m, table)]
    if not any(k in m.inputs for k in ("slot_pos", POS_SHIFT)):
        problems.append(f"inputs has neither 'slot_pos' nor {POS_SHIFT!r}")
    table = m.embedding
    if table.dtype not in TABLE_ITEMSIZE:
        problems.append(f"embedding.dtype {table.dtype!r} is not one of "
                        f"{', '.join(map(repr, sorted(TABLE_ITEMSIZE)))}")
    if len(table.shape) != 2 or min(table.shape) < 1:
        problems.append(f"embedding.shape {table.shape} is not [rows, hidden]")
    problems += [f"{rel!r} is not a file name inside the bundle"
                 for rel in [*m.files, *named_files(m)] if not _inside(rel)]
    problems += [f"files[{rel!r}] is not a sha256" for rel, digest in m.files.items()
                 if not _SHA256.fullmatch(digest)]
    if problems:
        raise BundleError(f"{MANIFEST_NAME}: {problems[0]}; the manifest was edited: re-export "
                          "the bundle")
    # The graph's RoPE table has a row per position the cache can hold: a larger budget is
    # another graph's (and would allocate its cache before the graph is compared).
    if m.rope_table and m.budget + m.chunk > m.rope_table:
        raise BundleError(f"{MANIFEST_NAME} does not describe its decoder graph: budget "
                          f"{m.budget} + chunk {m.chunk} is more than the {m.rope_table} "
                          "positions of its RoPE table. The manifest was edited or belongs to "
                          "another bundle; re-export the bundle")


def _inside(rel: str) -> bool:
    """`rel` names a file inside the bundle directory (no absolute path, no "..")."""
    path = PurePosixPath(rel)
    return bool(rel) and not path.is_absolute() and ".." not in path.parts and "\\" not in rel
