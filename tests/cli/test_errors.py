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
], ids=["temperature", "nan", "top-p", "tokens", "window", "hf", "hf-tokens", "budgets",
        "memory-log", "synthetic-seed", "image-with-source"])
def test_settings_out_of_range_are_one_line(capsys, tiny_bundle, tmp_path, extra, pattern):
    from helpers import TEXT_FILE

    argv = [a.format(text=TEXT_FILE, tmp=tmp_path) for a in extra]
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
