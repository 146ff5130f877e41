"""The bundle on disk: manifest round trip, weights stored once, checks, atomic export."""

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest

from edgekv.export import exporter, onnx_graph
from edgekv.export.manifest import Manifest, load_manifest
from edgekv.runtime.bundle import Bundle
from edgekv.runtime.errors import BundleError


def test_manifest_round_trips_through_json(tiny_bundle):
    m = load_manifest(tiny_bundle())
    assert Manifest.from_json(m.to_json()) == m
    assert m.validation["max_abs_logit_diff"] <= m.validation["tolerance"]
    assert set(m.files) == {"decoder.onnx", "decoder.onnx.data", "embed.bin", "tokenizer.json"}


def test_tied_embedding_is_stored_once(tiny_bundle):
    bundle = tiny_bundle("llama")
    model = onnx.load(str(bundle / "decoder.onnx"), load_external_data=False)
    lm_head = next(t for t in model.graph.initializer if t.name == "lm_head.weight")
    location = {e.key: e.value for e in lm_head.external_data}["location"]
    assert location == "embed.bin"
    embed_bytes = (bundle / "embed.bin").stat().st_size
    m = load_manifest(bundle)
    assert embed_bytes == m.dims.vocab_size * m.dims.hidden_size * 4
    # Nothing else in the graph holds a [V, H] matrix: the embedding is not written twice.
    shape = [m.dims.vocab_size, m.dims.hidden_size]
    others = [t for t in model.graph.initializer if t.name != "lm_head.weight"]
    assert all(list(t.dims) != shape for t in others)
    in_data = sum(int({e.key: e.value for e in t.external_data}["length"])
                  for t in others if t.external_data)
    assert in_data <= (bundle / "decoder.onnx.data").stat().st_size < in_data + embed_bytes


def test_tied_lm_head_is_an_input_onnx_runtime_does_not_prepack(tiny_bundle):
    from edgekv.runtime.session import Session

    bundle = tiny_bundle("llama")
    m = load_manifest(bundle)
    assert m.embedding.lm_head_input
    model = onnx.load(str(bundle / "decoder.onnx"), load_external_data=False)
    assert "lm_head.weight" in [i.name for i in model.graph.input]
    backend = Session.open(Bundle.open(bundle), backend="ort").backend
    overridable = [i.name for i in backend.session.get_overridable_initializers()]
    assert overridable == ["lm_head.weight"]  # not a constant: no prepacked copy


@pytest.mark.parametrize("family", ["llama", "qwen3"])  # qwen3: q/k norms too
def test_ort_target_norms_fuse_and_projections_are_stacked(family, tiny_bundle, tmp_path):
    import onnxruntime as ort

    bundle = tiny_bundle(family)
    m = load_manifest(bundle)
    opts = ort.SessionOptions()
    opts.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    opts.log_severity_level = 3
    ort.InferenceSession(str(bundle / "decoder.onnx"), opts, providers=["CPUExecutionProvider"])
    optimized = onnx.load(opts.optimized_model_filepath, load_external_data=False)
    ops = [n.op_type for n in optimized.graph.node]
    norms_per_layer = 4 if m.dims.qk_norm else 2
    assert sum("LayerNormalization" in op for op in ops) == norms_per_layer * m.dims.num_layers + 1
    assert "ReduceMean" not in ops and "Sqrt" not in ops  # no norm left unfused
    plain = onnx.load(str(bundle / "decoder.onnx"), load_external_data=False)
    weights = {t.name for t in plain.graph.initializer}
    assert {"layers.0.qkv_proj.weight", "layers.0.gate_up_proj.weight"} <= weights
    assert not any(".q_proj." in w or ".up_proj." in w for w in weights)


def test_untied_model_keeps_its_own_lm_head(tiny_bundle):
    bundle = tiny_bundle("mistral")  # the tiny Mistral config does not tie
    model = onnx.load(str(bundle / "decoder.onnx"), load_external_data=False)
    lm_head = next(t for t in model.graph.initializer if t.name == "lm_head.weight")
    assert {e.key: e.value for e in lm_head.external_data}["location"] == "decoder.onnx.data"
    assert not load_manifest(bundle).embedding.lm_head_input


def _copy(bundle, tmp_path):
    dst = tmp_path / "bundle"
    shutil.copytree(bundle, dst)
    return dst


def test_corrupt_file_is_refused(tiny_bundle, tmp_path):
    bundle = _copy(tiny_bundle(), tmp_path)
    data = bytearray((bundle / "decoder.onnx.data").read_bytes())
    data[100] ^= 0xFF
    (bundle / "decoder.onnx.data").write_bytes(bytes(data))
    with pytest.raises(BundleError, match="decoder.onnx.data does not match the sha256"):
        Bundle.open(bundle)


def test_missing_file_and_missing_bundle(tiny_bundle, tmp_path):
    bundle = _copy(tiny_bundle(), tmp_path)
    (bundle / "embed.bin").unlink()
    with pytest.raises(BundleError, match="embed.bin is missing"):
        Bundle.open(bundle)
    with pytest.raises(BundleError, match="no bundle at"):
        Bundle.open(tmp_path / "nowhere")


def test_other_schema_version_is_refused(tiny_bundle, tmp_path):
    bundle = _copy(tiny_bundle(), tmp_path)
    raw = json.loads((bundle / "manifest.json").read_text())
    raw["schema_version"] = 99
    (bundle / "manifest.json").write_text(json.dumps(raw))
    with pytest.raises(BundleError, match="schema version 99"):
        Bundle.open(bundle)


def test_a_newer_schema_says_to_upgrade_edgekv(tiny_bundle, tmp_path):
    bundle = _copy(tiny_bundle(), tmp_path)
    raw = json.loads((bundle / "manifest.json").read_text())
    raw.update(schema_version=2, edgekv_version="9.9.9")
    (bundle / "manifest.json").write_text(json.dumps(raw))
    with pytest.raises(BundleError, match="schema version 2 \\(written by edgekv 9.9.9\\) .*; "
                                          "upgrade edgekv to open it"):
        Bundle.open(bundle)


def test_interrupted_export_leaves_no_bundle(tiny_model_dir, tmp_path, monkeypatch):
    def interrupted(*_args, **_kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(onnx_graph, "save_with_shared_embedding", interrupted)
    out = tmp_path / "b"
    with pytest.raises(KeyboardInterrupt):
        exporter.export(str(tiny_model_dir("llama")), out,
                        exporter.ExportOptions(budget=32, chunk=8), log=lambda _m: None)
    assert list(tmp_path.iterdir()) == []


def test_export_refuses_to_overwrite_without_force(tiny_bundle, tiny_model_dir):
    from edgekv.runtime.errors import EdgeKVError

    with pytest.raises(EdgeKVError, match="--force"):
        exporter.export(str(tiny_model_dir("llama")), tiny_bundle(),
                        exporter.ExportOptions(budget=96, chunk=16), log=lambda _m: None)


def test_embedding_lookup_reads_the_shared_table(tiny_bundle, tiny_model_dir):
    from helpers import load_tiny

    bundle = Bundle.open(tiny_bundle())
    model, _ = load_tiny(tiny_model_dir("llama"))
    ids = np.array([3, 17, 200])
    expected = model.get_input_embeddings().weight.detach().numpy()[ids]
    np.testing.assert_array_equal(bundle.embed(ids)[0], expected)


def test_a_packed_lm_head_is_a_constant_onnx_runtime_packs(tiny_bundle):
    from edgekv.runtime.session import Session

    shared, packed = tiny_bundle("llama"), tiny_bundle("llama", packed_lm_head=True)
    m = load_manifest(packed)
    assert m.embedding.shared_with_lm_head and not m.embedding.lm_head_input
    model = onnx.load(str(packed / "decoder.onnx"), load_external_data=False)
    assert "lm_head.weight" not in [i.name for i in model.graph.input]
    lm_head = next(t for t in model.graph.initializer if t.name == "lm_head.weight")
    assert {e.key: e.value for e in lm_head.external_data}["location"] == "embed.bin"
    bundle = Bundle.open(packed)
    session = Session.open(bundle, backend="ort")
    assert session.backend.session.get_overridable_initializers() == []
    ids = np.arange(20) * 3 % 500
    want = Session.open(Bundle.open(shared), backend="ort").feed(ids)
    assert np.abs(session.feed(ids) - want).max() < 1e-4
    assert bundle._table_fd is not None  # token rows read from the file, not the map


def test_a_packed_lm_head_needs_onnx_runtime():
    from edgekv.export.exporter import ExportOptions
    from edgekv.runtime.errors import EdgeKVError

    with pytest.raises(EdgeKVError, match="--packed-lm-head"):
        ExportOptions(target="tensorrt", dtype="fp16", packed_lm_head=True).check()


def test_saving_a_manifest_replaces_it_whole(tiny_bundle, tmp_path, monkeypatch):
    import shutil

    from edgekv.export.manifest import MANIFEST_NAME, load_manifest

    bundle = tmp_path / "b"
    shutil.copytree(tiny_bundle(), bundle)
    before = (bundle / MANIFEST_NAME).read_text()
    manifest = load_manifest(bundle)

    write_text = Path.write_text

    def cut(self, text, *args, **kwargs):  # the disk fills halfway through the write
        write_text(self, text[: len(text) // 2])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_text", cut)
    with pytest.raises(OSError):
        manifest.save(bundle)
    monkeypatch.undo()
    assert (bundle / MANIFEST_NAME).read_text() == before  # the old manifest, whole
    manifest.save(bundle)
    assert load_manifest(bundle) == manifest
    assert sorted(p.name for p in bundle.iterdir() if p.name.startswith(".")) == []
