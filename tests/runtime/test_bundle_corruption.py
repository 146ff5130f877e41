"""A broken or hand-edited bundle is refused when it opens, with one BundleError naming what is
wrong: never a TypeError, KeyError or ONNX Runtime error from deep inside the runtime."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from edgekv.cli import main
from edgekv.export.manifest import load_manifest, sha256_file
from edgekv.runtime.bundle import Bundle
from edgekv.runtime.errors import BundleError


@pytest.fixture
def bundle(tiny_bundle, tmp_path) -> Path:
    """A copy of the tiny llama bundle to break."""
    dst = tmp_path / "b"
    shutil.copytree(tiny_bundle(), dst)
    return dst


def _edit(bundle: Path, **fields: object) -> None:
    """Set manifest fields; "a.b" sets a nested one."""
    path = bundle / "manifest.json"
    raw = json.loads(path.read_text())
    for key, value in fields.items():
        *parents, name = key.split(".")
        target = raw
        for parent in parents:
            target = target[parent]
        target[name] = value
    path.write_text(json.dumps(raw))


def _rehash(bundle: Path) -> None:
    """Record the files' current sha256s, as if the manifest had been made for them."""
    raw = json.loads((bundle / "manifest.json").read_text())
    raw["files"] = {rel: sha256_file(bundle / rel) for rel in raw["files"]}
    (bundle / "manifest.json").write_text(json.dumps(raw))


@pytest.mark.parametrize("fields, message", [
    ({"budget": "96"}, "budget is a string ('96'), not an integer"),
    ({"budget": None}, "budget is null"),
    ({"budget": -5}, "budget must be at least 1, not -5"),
    ({"chunk": 0}, "chunk must be at least 1, not 0"),
    ({"chunk": 200}, "chunk 200 is larger than budget 96"),
    ({"dims.num_layers": "2"}, "dims.num_layers is a string"),
    ({"dims.vocab_size": -1}, "dims.vocab_size must be at least 1"),
    ({"attn_mass": 1}, "attn_mass is a number (1), not a boolean"),
    ({"dtype": "bf16"}, "dtype 'bf16' is not one of 'fp32', 'fp16', 'int4'"),
    ({"position_mode": "weird"}, "position_mode 'weird' is not one of"),
    ({"files": ["decoder.onnx"]}, "files is a list"),
    ({"inputs": {"inputs_embeds": "inputs_embeds"}}, "inputs has no 'chunk_pos'"),
    ({"graphs": {}}, "graphs has no 'decoder'"),
    ({"embedding.shape": [512]}, "embedding.shape [512] is not [rows, hidden]"),
    ({"embedding.dtype": "floaty"}, "embedding.dtype 'floaty' is not one of 'float16', "
                                    "'float32'"),
    ({"embedding.file": "../other/embed.bin"}, "'../other/embed.bin' is not a file name inside"),
    ({"dims": [1, 2]}, "dims is a list, not an object"),
], ids=["budget-str", "budget-null", "budget-negative", "chunk-zero", "chunk-over-budget",
        "layers-str", "vocab-negative", "bool-int", "dtype", "position-mode", "files-list",
        "inputs", "graphs", "embedding-shape", "embedding-dtype", "embedding-outside",
        "dims-list"])
def test_a_manifest_value_no_export_writes_is_refused_by_name(bundle, fields, message):
    _edit(bundle, **fields)
    with pytest.raises(BundleError, match="^manifest.json: ") as exc:
        Bundle.open(bundle)
    assert message in str(exc.value)


@pytest.mark.parametrize("content, message", [
    (b"[1, 2]", "holds a list, not the object edgekv export writes"),
    (b'"hello"', "holds a string"),
    (b"\xff\xfe\x00garbage", "is not valid JSON"),
], ids=["list", "string", "not-utf8"])
def test_a_manifest_that_is_not_a_json_object_is_refused(bundle, content, message):
    (bundle / "manifest.json").write_bytes(content)
    with pytest.raises(BundleError, match=message):
        Bundle.open(bundle)


def test_unknown_fields_from_a_newer_edgekv_say_to_upgrade(bundle):
    _edit(bundle, future_field=1, edgekv_version="9.9.9")
    with pytest.raises(BundleError, match="does not know: future_field \\(written by edgekv "
                                          "9.9.9\\); upgrade edgekv"):
        Bundle.open(bundle)


def test_a_file_left_out_of_the_recorded_sha256s_is_refused(bundle):
    raw = json.loads((bundle / "manifest.json").read_text())
    del raw["files"]  # nothing would be verified
    (bundle / "manifest.json").write_text(json.dumps(raw))
    with pytest.raises(BundleError, match="records no sha256 for decoder.onnx, embed.bin, "
                                          "tokenizer.json"):
        Bundle.open(bundle)


def test_a_missing_graph_is_named_without_verify(bundle):
    (bundle / "decoder.onnx").unlink()
    with pytest.raises(BundleError, match="bundle file decoder.onnx is missing"):
        Bundle.open(bundle, verify=False)  # ONNX Runtime's NO_SUCHFILE at Session.open before


def test_an_embedding_shape_that_is_not_embed_bins_is_refused(bundle):
    _edit(bundle, **{"embedding.shape": [256, 64]})  # IndexError at the first token before
    with pytest.raises(BundleError, match="embed.bin is 131072 bytes; the manifest's float32 "
                                          "\\[256, 64\\] table is 65536"):
        Bundle.open(bundle)


def test_an_embedding_table_of_another_size_is_refused(bundle):
    with open(bundle / "embed.bin", "ab") as fh:
        fh.write(bytes(4 * 64))  # one row more than the manifest's [512, 64]
    _rehash(bundle)
    with pytest.raises(BundleError, match="embed.bin is 131328 bytes; the manifest's float32 "
                                          "\\[512, 64\\] table is 131072"):
        Bundle.open(bundle)


def test_a_tokenizer_larger_than_the_embedding_table_is_refused(bundle):
    from tokenizers import Tokenizer, models

    vocab = {f"t{i}": i for i in range(600)} | {"[UNK]": 600}
    Tokenizer(models.WordLevel(vocab, unk_token="[UNK]")).save(str(bundle / "tokenizer.json"))
    _rehash(bundle)
    with pytest.raises(BundleError, match="tokenizer.json has 601 tokens, more than the 512 "
                                          "rows of embed.bin"):
        Bundle.open(bundle)


def test_valid_json_that_is_not_a_tokenizer_says_so(bundle):
    (bundle / "tokenizer.json").write_text('{"hello": "world"}')
    _rehash(bundle)
    with pytest.raises(BundleError, match="not a tokenizer file of Hugging Face tokenizers"):
        Bundle.open(bundle)


@pytest.mark.parametrize("command", [["info"], ["info", "--no-verify"], ["check"],
                                     ["run", "--prompt", "hi"]], ids=lambda c: "-".join(c))
@pytest.mark.parametrize("fields", [{"chunk": 0}, {"budget": "96"}, {"dtype": "bf16"}],
                         ids=["chunk-zero", "budget-str", "dtype"])
def test_the_cli_says_one_line(bundle, capsys, command, fields):
    _edit(bundle, **fields)
    capsys.readouterr()
    argv = [command[0], str(bundle), *command[1:]]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("edgekv: error: manifest.json: "), err


def test_a_valid_manifest_loads_as_before(tiny_bundle):
    manifest = load_manifest(tiny_bundle())
    assert manifest.budget == 96 and isinstance(manifest.dims.rms_norm_eps, float)


def test_a_budget_beyond_the_graphs_rope_table_is_refused_before_allocating(bundle):
    _edit(bundle, budget=10**12)  # the cache for it was allocated (MemoryError) before
    with pytest.raises(BundleError, match="does not describe its decoder graph: budget "
                                          "1000000000000 \\+ chunk 16 is more than the 112"):
        Bundle.open(bundle)


def test_check_refuses_a_truncated_table_whose_sha256_was_recorded(bundle, capsys):
    data = (bundle / "embed.bin").read_bytes()
    (bundle / "embed.bin").write_bytes(data[: len(data) // 2])
    _rehash(bundle)  # `check` mapped the table's bytes and died in numpy before
    capsys.readouterr()
    assert main(["check", str(bundle)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("edgekv: error: embed.bin is 65536 bytes; the manifest's float32 [512, 64] "
                   "table is 131072: the file is truncated or belongs to another bundle; "
                   "re-export the bundle")


@pytest.mark.parametrize("graph", ["decoder.onnx", "decoder.onnx.data"])
def test_a_truncated_graph_whose_sha256_was_recorded_is_named(bundle, capsys, graph):
    from edgekv.runtime.session import Session

    data = (bundle / graph).read_bytes()
    (bundle / graph).write_bytes(data[: len(data) // 3])
    _rehash(bundle)  # ONNX Runtime's own error came out of the first step before
    with pytest.raises(BundleError, match="ONNX Runtime cannot load decoder.onnx: .*re-export"):
        Session.open(Bundle.open(bundle), backend="ort")
    capsys.readouterr()
    assert main(["run", str(bundle), "--prompt", "hi", "--backend", "ort"]) == 2
    assert capsys.readouterr().err.startswith("edgekv: error: ONNX Runtime cannot load")


@pytest.mark.parametrize("graph", ["decoder.onnx", "decoder.onnx.data"])
def test_check_names_a_truncated_graph_whose_sha256_was_recorded(bundle, capsys, graph):
    data = (bundle / graph).read_bytes()
    (bundle / graph).write_bytes(data[: len(data) // 3])
    _rehash(bundle)
    capsys.readouterr()
    assert main(["check", str(bundle)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("edgekv: error: ") and "re-export the bundle" in err, err
