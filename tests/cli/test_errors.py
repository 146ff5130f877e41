"""Bad input: one clear line on stderr, exit code 2, never a traceback."""

import json
import shutil
import subprocess
import sys

import pytest

from edgekv.cli import main


def _fails(capsys, argv, pattern):
    capsys.readouterr()  # drop what building a fixture bundle printed (progress bars)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("edgekv: error: ")
    assert pattern in err, err


def test_unknown_model(capsys, tmp_path):
    _fails(capsys, ["export", "no-such-model", "--out", str(tmp_path / "b")], "unknown model")


def test_missing_bundle(capsys, tmp_path):
    _fails(capsys, ["run", str(tmp_path / "missing"), "--prompt", "hi"], "no bundle at")


def test_corrupt_bundle(capsys, tiny_bundle, tmp_path):
    bundle = tmp_path / "b"
    shutil.copytree(tiny_bundle(), bundle)
    (bundle / "tokenizer.json").write_text("{}")
    _fails(capsys, ["info", str(bundle)], "tokenizer.json does not match the sha256")


def test_manifest_of_another_version(capsys, tiny_bundle, tmp_path):
    bundle = tmp_path / "b"
    shutil.copytree(tiny_bundle(), bundle)
    raw = json.loads((bundle / "manifest.json").read_text())
    raw["schema_version"] = 0
    (bundle / "manifest.json").write_text(json.dumps(raw))
    _fails(capsys, ["run", str(bundle), "--prompt", "hi"], "schema version 0")


def test_budget_smaller_than_sinks_plus_chunk(capsys, tiny_bundle):
    # bundle budget 96, chunk 16: streaming needs 4 + 16 = 20 slots
    _fails(capsys, ["eval", "ppl", str(tiny_bundle()), "--text", "x", "--budget", "19"],
           "needs at least 20 slots")


def test_budget_above_the_bundle(capsys, tiny_bundle):
    _fails(capsys, ["eval", "ppl", str(tiny_bundle()), "--text", "x", "--budget", "97"],
           "can be lowered at run time, not raised")


def test_unknown_policy(capsys, tiny_bundle):
    _fails(capsys, ["run", str(tiny_bundle()), "--policy", "lru", "--prompt", "hi"],
           "unknown policy 'lru'")


def test_full_policy_overflow_explains_the_fix(capsys, tiny_bundle):
    from helpers import TEXT_FILE

    _fails(capsys, ["eval", "ppl", str(tiny_bundle()), "--policy", "full", "--text",
                    str(TEXT_FILE), "--tokens", "200", "--quiet"],
           "use an evicting policy (--policy streaming) or export with a larger --budget")


def test_export_budget_smaller_than_chunk(capsys, tmp_path):
    _fails(capsys, ["export", "smollm2-135m", "--out", str(tmp_path / "b"), "--budget", "8",
                    "--chunk", "16"], "smaller than --chunk")


def test_real_process_prints_no_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "edgekv.cli", "info", str(tmp_path / "nope")],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().startswith("edgekv: error: no bundle at")


def test_a_reader_that_leaves_early_is_no_error():
    # `edgekv policies | head -1`: the pipe closes before the output is written
    proc = subprocess.Popen([sys.executable, "-m", "edgekv.cli", "policies"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()
    stderr = proc.stderr.read().decode()
    assert proc.wait() == 141
    assert "Traceback" not in stderr and "BrokenPipeError" not in stderr


def test_a_library_warning_is_one_line_without_a_source_location(tiny_bundle):
    bundle = tiny_bundle(key_rope="cached")  # h2o then turns keys every step: a warning
    proc = subprocess.run([sys.executable, "-m", "edgekv.cli", "run", str(bundle), "--policy",
                           "h2o", "--prompt", "hi", "--max-new-tokens", "1"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    warned = [line for line in proc.stderr.splitlines() if "policy 'h2o' evicts" in line]
    assert len(warned) == 1 and warned[0].startswith("edgekv: warning: policy 'h2o'")
    assert "UserWarning" not in proc.stderr and "warnings.warn" not in proc.stderr


@pytest.mark.parametrize("argv", [["eval", "ppl"], ["run"]])
def test_usage_errors_come_from_argparse(argv):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2


@pytest.mark.parametrize("extra, pattern", [
    (["run", "--prompt", "hi", "--temperature", "-1"], "--temperature must be a finite number"),
    (["run", "--prompt", "hi", "--temperature", "nan"], "not nan and 1.0"),
    (["run", "--prompt", "hi", "--temperature", "1", "--top-p", "0"], "--top-p in (0, 1]"),
    (["eval", "ppl", "--text", "{text}", "--tokens", "0"], "--tokens must be at least 2"),
    (["eval", "ppl", "--text", "{text}", "--tokens", "200", "--window", "0"],
     "--window at least 1, not 200 and 0"),
    (["eval", "ppl", "--text", "{text}", "--tokens", "200", "--hf", "{tmp}/nothing"],
     "unknown model"),
    (["eval", "ppl", "--text", "{text}", "--tokens", "200", "--hf-tokens", "0"],
     "--hf-tokens must be at least 2, not 0"),
    (["eval", "quality", "--text", "{text}", "--budgets", "abc"],
     "--budgets: expected comma-separated integers"),
    (["run", "--prompt", "hi", "--memory-log", "{tmp}/no/m.json"], "/no does not exist"),
    (["run", "--source", "synthetic:seed=-1"], "seed, shapes and frames must be >= 0"),
    (["run", "--source", "synthetic", "--image", "{tmp}/a.png"], "--image is for one question"),
    (["run", "--prompt", ""], "--prompt is empty: give a question, or leave --prompt out"),
    (["run", "--prompt", "  \n "], "--prompt is empty"),
    (["run", "--prompt", "hi", "--max-new-tokens", "-1"],
     "--max-new-tokens must be at least 0, not -1"),
    (["eval", "ppl", "--text", "{tmp}", "--tokens", "200"], "is a directory; --text takes"),
    (["eval", "quality", "--text", "{text}", "--tokens", "1"],
     "--tokens and --full-tokens must be at least 2, not 1 and 8192"),
    (["eval", "quality", "--text", "{text}", "--full-tokens", "0"], "not 16384 and 0"),
    (["eval", "quality", "--text", "{text}", "--budgets", ""], "each need at least one value"),
    (["eval", "quality", "--text", "{text}", "--policies", ","], "each need at least one value"),
    # refused before the budget-32 cell runs (it would print a line of its own)
    (["eval", "quality", "--text", "{text}", "--tokens", "40", "--budgets", "32,200",
      "--policies", "window"], "--budgets 200 exceeds the bundle's budget 96"),
    (["eval", "quality", "--text", "{text}", "--tokens", "40", "--budgets", "32,64",
      "--policies", "window,streaming:sinks=20"], "budget 32 is too small for policy"),
    (["eval", "quality", "--text", "{text}", "--tokens", "200", "--budgets", "32",
      "--policies", "window", "--full-bundle", "{bundle}"],
     "--full-bundle has a budget of 96, too small to keep every one of the first 200 tokens"),
    (["run", "--prompt", "hi", "--threads", "-1"], "--threads must be 0 (all cores) or more"),
], ids=["temperature", "nan", "top-p", "tokens", "window", "hf", "hf-tokens", "budgets",
        "memory-log", "synthetic-seed", "image-with-source", "empty-prompt", "blank-prompt",
        "max-new-tokens", "text-directory", "quality-tokens", "quality-full-tokens",
        "quality-no-budgets", "quality-no-policies", "quality-budget-above",
        "quality-budget-too-small", "quality-full-bundle-too-small", "threads"])
def test_settings_out_of_range_are_one_line(capsys, tiny_bundle, tmp_path, extra, pattern):
    from helpers import TEXT_FILE

    argv = [a.format(text=TEXT_FILE, tmp=tmp_path, bundle=tiny_bundle()) for a in extra]
    argv.insert(2 if argv[0] == "eval" else 1, str(tiny_bundle()))
    _fails(capsys, argv, pattern)


@pytest.mark.parametrize("argv, pattern", [
    (["profile", "--", "no_such_command_xyz"], "no command 'no_such_command_xyz'"),
    (["profile", "--out", "{tmp}/no/x.json", "--", "true"], "/no does not exist"),
    (["bench", "--bundle", "{tmp}", "--peers", "bogus"], "--peers: unknown bogus"),
    (["bench", "--bundle", "{tmp}", "--peers", "none", "--long-budgets", "abc"],
     "--long-budgets: expected"),
    (["bench", "--bundle", "{tmp}", "--peers", "none", "--text", "{tmp}/none.txt"],
     "none.txt: no such file"),
    (["bench", "--bundle", "{tmp}", "--peers", "none", "--threads", "0"],
     "--threads must be at least 1"),
], ids=["command", "out", "peers", "long-budgets", "text", "threads"])
def test_tool_arguments_are_checked_before_any_work(capsys, tmp_path, argv, pattern):
    _fails(capsys, [a.format(tmp=tmp_path) for a in argv], pattern)


def test_a_negative_seed_is_an_argument_error(capsys, tiny_bundle):
    with pytest.raises(SystemExit) as exc:
        main(["run", str(tiny_bundle()), "--prompt", "hi", "--seed", "-1"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.strip() == ("edgekv run: error: argument --seed: expected an integer >= 0, not "
                           "'-1' (see edgekv run --help)")  # one line, no usage block


def test_verify_refuses_an_empty_prompt(capsys, tiny_bundle, tiny_model_dir):
    _fails(capsys, ["verify", str(tiny_bundle()), "--against", str(tiny_model_dir("llama")),
                    "--prompt", ""], "--prompt is empty")


@pytest.mark.parametrize("content", [
    "Café crème, naïve façade. ".encode("latin-1") * 40, b"\x89PNG\r\n\x1a\n" + bytes(256),
], ids=["latin-1", "png"])
def test_eval_ppl_refuses_a_file_that_is_not_utf8_text(capsys, tiny_bundle, tmp_path, content):
    path = tmp_path / "input"
    path.write_bytes(content)
    _fails(capsys, ["eval", "ppl", str(tiny_bundle()), "--text", str(path), "--tokens", "20"],
           f"{path} is not UTF-8 text (byte 0x")


def test_verify_refuses_a_prompt_the_tokenizer_drops(capsys, tiny_bundle, tiny_model_dir,
                                                     tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    # the tiny model with a tokenizer lacking byte fallback: characters outside its
    # vocabulary vanish, so a CJK prompt is no tokens at all
    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir("llama"), model)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (model / name).unlink(missing_ok=True)
    tok = Tokenizer(models.BPE(vocab={"a": 0, "b": 1}, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tok).save_pretrained(model)
    capsys.readouterr()
    assert main(["verify", str(tiny_bundle()), "--against", str(model), "--prompt", "日本語"]) == 2
    err = capsys.readouterr().err  # transformers' own "Loading weights" bar comes first
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == ("edgekv: error: --prompt '日本語' encodes to no "
                                            "tokens with this model's tokenizer: there is "
                                            "nothing to compare")
