import pytest

from edgekv.export.loading import resolve
from edgekv.runtime.errors import ModelError


def test_unknown_model_names_the_builtins():
    with pytest.raises(ModelError, match="not a built-in \\(smollm2-135m, smolvlm-synthetic\\)"):
        resolve("gpt-17")


def test_missing_gguf_and_non_hf_directory(tmp_path):
    with pytest.raises(ModelError, match="GGUF file not found"):
        resolve(str(tmp_path / "x.gguf"))
    with pytest.raises(ModelError, match="no config.json"):
        resolve(str(tmp_path))


def test_builtin_smollm2_resolves_to_the_packaged_gguf():
    source = resolve("smollm2-135m")
    assert source.gguf_file == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert (source.directory / source.gguf_file).stat().st_size > 50_000_000


def test_unsupported_architecture_lists_the_families(tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    from edgekv.export.families import adapter_for

    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=64))
    with pytest.raises(ModelError, match="'gpt2' is not supported; supported families: llama"):
        adapter_for(model)


def test_export_refuses_an_unsupported_family_before_loading_anything(tmp_path, monkeypatch):
    import json

    from edgekv.export import exporter

    (tmp_path / "config.json").write_text(json.dumps({"model_type": "phi3"}))
    monkeypatch.setattr(exporter, "load", lambda _s: pytest.fail("the model was loaded"))
    with pytest.raises(ModelError, match="'phi3' is not supported; supported families: llama"):
        exporter.export(str(tmp_path), tmp_path / "out", exporter.ExportOptions(budget=64))


def test_a_model_without_its_tokenizer_is_named_as_such(tmp_path, tiny_model_dir):
    import shutil

    from edgekv.export.loading import load

    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir("llama"), model)
    for name in model.iterdir():
        if name.name.startswith(("tokenizer", "special_tokens")):
            name.unlink()
    with pytest.raises(ModelError, match="cannot load the tokenizer of .*tokenizer.json"):
        load(resolve(str(model)))
