"""A manifest that does not describe its decoder graph is refused when the bundle opens, with a
message naming what differs, not at the first step inside ONNX Runtime."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

import numpy as np
import pytest

from edgekv.runtime.backends.graph_io import Port, check_graph_io
from edgekv.runtime.bundle import Bundle
from edgekv.runtime.errors import BundleError
from edgekv.runtime.session import Session


def _ports(manifest, rows: int, kv_type: str = "tensor(float)"):
    d = manifest.dims
    inputs = [Port("inputs_embeds", [1, "c", d.hidden_size], "tensor(float)")]
    inputs += [Port(n, [d.num_kv_heads, rows, d.head_dim], kv_type)
               for w in ("past_keys", "past_values") for n in manifest.kv_input_names(w)]
    outputs = [Port("logits", [1, "n", d.vocab_size], "tensor(float)")]
    return inputs, outputs


def test_ports_that_match_pass_and_each_mismatch_is_named(tiny_bundle):
    manifest = Bundle.open(tiny_bundle()).manifest
    rows = manifest.budget + manifest.scratch_rows
    inputs, outputs = _ports(manifest, rows)
    check_graph_io(manifest, inputs, outputs, np.float32, np.float32)
    with pytest.raises(BundleError, match="'past_keys.0' has 96 at axis -2 .* implies 192"):
        check_graph_io(replace(manifest, budget=192), inputs, outputs, np.float32, np.float32)
    with pytest.raises(BundleError, match="'logits' has 512 at axis -1 .* implies 400"):
        check_graph_io(replace(manifest, dims=replace(manifest.dims, vocab_size=400)), inputs,
                       outputs, np.float32, np.float32)
    with pytest.raises(BundleError, match="'past_keys.0' is tensor\\(float\\) .* tensor\\(int8"):
        check_graph_io(manifest, inputs, outputs, np.int8, np.float32)
    with pytest.raises(BundleError, match="no 'past_keys'"):
        check_graph_io(replace(manifest, kv_layout="stacked"), inputs, outputs, np.float32,
                       np.float32)


@pytest.mark.parametrize("edit", [
    {"budget": 192},
    {"dtype": "fp16"},
    {"kv_layout": "stacked"},
    {"dims": {"num_kv_heads": 4}},
    {"dims": {"vocab_size": 400}},
], ids=["budget", "dtype", "layout", "kv_heads", "vocab"])
def test_an_edited_manifest_is_refused_when_the_session_opens(tiny_bundle, tmp_path, edit):
    bundle_dir = tmp_path / "b"
    shutil.copytree(tiny_bundle(), bundle_dir)
    path = bundle_dir / "manifest.json"
    raw = json.loads(path.read_text())
    for key, value in edit.items():
        if isinstance(value, dict):
            raw[key].update(value)
        else:
            raw[key] = value
    path.write_text(json.dumps(raw))
    with pytest.raises(BundleError, match="manifest.json does not describe its decoder graph"):
        Session.open(Bundle.open(bundle_dir), policy="streaming")


def _rehash(bundle_dir) -> None:
    from edgekv.export.manifest import sha256_file

    path = bundle_dir / "manifest.json"
    raw = json.loads(path.read_text())
    raw["files"] = {rel: sha256_file(bundle_dir / rel) for rel in raw["files"]}
    path.write_text(json.dumps(raw))


@pytest.mark.parametrize("dtype, message", [
    (np.float32, "its tied embedding table is \\[1024, 64\\], not \\[vocab 512, hidden 64\\]"),
    (np.float16, "its embedding table is float16 and the graph computes in float32"),
], ids=["rows", "dtype"])
def test_an_embedding_table_the_graph_cannot_bind_is_refused(tiny_bundle, tmp_path, dtype,
                                                              message):
    # manifest, embed.bin and sha256s agree with each other, not with the graph (a table of
    # 1024 rows, whose first 512 fp32 rows' bytes the graph still loads): ONNX Runtime refused
    # the table only at the first step
    bundle_dir = tmp_path / "b"
    shutil.copytree(tiny_bundle(), bundle_dir)
    table = np.fromfile(bundle_dir / "embed.bin", dtype=np.float32).reshape(512, 64)
    np.concatenate([table, table]).astype(dtype).tofile(bundle_dir / "embed.bin")
    raw = json.loads((bundle_dir / "manifest.json").read_text())
    raw["embedding"].update(shape=[1024, 64], dtype=np.dtype(dtype).name)
    (bundle_dir / "manifest.json").write_text(json.dumps(raw))
    _rehash(bundle_dir)
    with pytest.raises(BundleError, match=message):
        Session.open(Bundle.open(bundle_dir), policy="streaming", threads=1)
