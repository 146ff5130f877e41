"""The CLI's commands on a tiny bundle: each prints what it promises."""

import json

from edgekv.cli import main
from helpers import TEXT_FILE


def test_info_says_how_a_bundle_was_exported_and_how_far_it_is_from_hf(capsys, tiny_bundle):
    bundle = tiny_bundle(key_rope="cached", attention="gqa", attn_mass=False, kv_cache="int8")
    assert main(["info", str(bundle)]) == 0
    out = capsys.readouterr().out
    assert ("exported    --attention gqa --key-rope cached --kv-cache int8 --no-attn-mass"
            in out)
    from edgekv.export.manifest import load_manifest

    drift = load_manifest(bundle).validation["kv_int8_vs_hf"]
    assert f"vs the exact reference, {drift:.2e} vs HF (quantization)" in out


def test_info_prints_contract_and_plan(capsys, tiny_bundle):
    assert main(["info", str(tiny_bundle())]) == 0
    out = capsys.readouterr().out
    assert "budget 96 slots, chunk 1..16" in out
    for row in ("weights", "kv_cache", "activations", "total"):
        assert row in out


def test_eval_ppl_json(capsys, tiny_bundle):
    argv = ["eval", "ppl", str(tiny_bundle()), "--text", str(TEXT_FILE), "--tokens", "400",
            "--policy", "streaming", "--budget", "64", "--window", "100", "--json"]
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    for key in ("policy", "budget", "tokens", "ppl", "tokens_per_s", "peak_rss_mb"):
        assert key in result
    assert result["policy"] == "streaming" and result["budget"] == 64
    assert result["tokens"] == 400 and result["ppl"] > 1
    assert len(result["window_ppl"]) == 4


def test_run_answers_a_prompt(capsys, tiny_bundle):
    assert main(["run", str(tiny_bundle()), "--prompt", "Hello", "--max-new-tokens", "5"]) == 0
    err = capsys.readouterr().err
    assert ", 5 out," in err  # a random tiny model may say nothing printable; it said 5 tokens


def test_run_stops_an_answer_at_a_stop_string(capsys, tiny_bundle):
    argv = ["run", str(tiny_bundle()), "--prompt", "hello there", "--max-new-tokens", "24",
            "--temperature", "1", "--seed", "0"]
    assert main(argv) == 0
    free = capsys.readouterr().out.rstrip("\n")
    assert len(free) > 20, free
    assert main([*argv, "--stop", free[10:14]]) == 0
    assert capsys.readouterr().out.rstrip("\n") == free[: free.find(free[10:14])]


def test_chat_on_stdin_runs_many_turns_in_fixed_memory(capsys, tiny_bundle, monkeypatch):
    import io

    turns = "".join(f"Tell me about the letter number {i}.\n" for i in range(40))
    monkeypatch.setattr("sys.stdin", io.StringIO(turns))
    argv = ["run", str(tiny_bundle(budget=64, chunk=16)), "--max-new-tokens", "8",
            "--policy", "streaming"]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "evicted" in err
    slots = err.split("slots ")[1].split(",")[0]
    used, budget = map(int, slots.split("/"))
    assert used <= budget == 64


def test_a_chat_turn_longer_than_the_budget_is_refused_and_the_chat_goes_on(
        capsys, tiny_bundle, monkeypatch):
    import io

    long_line = "Tell me about the ball at Netherfield and who danced with whom. " * 20
    monkeypatch.setattr("sys.stdin", io.StringIO(f"Hello?\n{long_line}\nAnd now?\n"))
    assert main(["run", str(tiny_bundle()), "--max-new-tokens", "3"]) == 0
    out, err = capsys.readouterr()
    assert err.count("edgekv: error: this turn is") == 1
    assert ", 6 out," in err  # both other turns answered, 3 tokens each
    # as a one-shot --prompt it is an error: exit status 2
    assert main(["run", str(tiny_bundle()), "--prompt", long_line]) == 2
    assert "edgekv: error: this turn is" in capsys.readouterr().err


def test_verify_reports_the_difference(capsys, tiny_bundle, tiny_model_dir):
    argv = ["verify", str(tiny_bundle()), "--against", str(tiny_model_dir("llama")), "--json"]
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["max_abs_logit_diff"] <= 1e-3 and result["tokens"] > 5
    assert result["passed"] and result["limit"] == 1e-3


def test_verify_fails_against_another_model(capsys, tiny_bundle, tiny_model_dir):
    # same vocabulary and sizes, other weights: a difference, and exit status 1
    other = tiny_model_dir("llama", initializer_range=0.05)
    assert main(["verify", str(tiny_bundle()), "--against", str(other), "--json"]) == 1
    result = json.loads(capsys.readouterr().out)
    assert not result["passed"] and result["max_abs_logit_diff"] > result["limit"]


def test_verify_refuses_a_model_with_another_vocabulary(capsys, tiny_bundle, tiny_model_dir):
    other = tiny_model_dir("llama", vocab_size=600)
    assert main(["verify", str(tiny_bundle()), "--against", str(other)]) == 2
    assert "its vocabulary has 512 tokens, the model's 600" in capsys.readouterr().err


def test_policies_lists_parameters(capsys):
    assert main(["policies"]) == 0
    out = capsys.readouterr().out
    assert "streaming" in out and "sinks=4" in out
    assert "PREFILL+DECODE" in out


def test_eval_quality_labels_a_short_reference_span_by_its_tokens(capsys, tiny_bundle):
    argv = ["eval", "quality", str(tiny_bundle()), "--text", str(TEXT_FILE), "--tokens", "40",
            "--budgets", "32", "--policies", "window"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "first 40" in out and "first 0k" not in out


def test_verify_takes_a_prompt_with_bytes_argv_could_not_decode(capsys, tiny_bundle,
                                                                tiny_model_dir):
    # Python hands undecodable argv bytes over as lone surrogates ("caf\udce9" for Latin-1)
    argv = ["verify", str(tiny_bundle()), "--against", str(tiny_model_dir("llama")),
            "--prompt", "caf\udce9 au lait"]
    assert main(argv) == 0
    assert "PASS" in capsys.readouterr().out


def test_every_command_renders_its_help():
    # argparse formats help text (its %-escapes too) only when --help asks for it: a stray
    # "%" in one flag's help would otherwise surface as a traceback for the first user
    import argparse

    from edgekv.cli import build_parser

    def commands(parser: argparse.ArgumentParser):
        yield parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    yield from commands(sub)

    rendered = {p.prog: p.format_help() for p in commands(build_parser())}
    assert {"edgekv export", "edgekv run", "edgekv eval ppl", "edgekv bench"} <= set(rendered)
    assert len(rendered) == 17  # edgekv, 13 commands, eval's 3 evaluations
    assert all("usage:" in text for text in rendered.values())
