"""`edgekv eval scenes` and `edgekv bench-needle` from the command line, on a tiny random
Idefics3 bundle (global view, 16 tokens a frame): they run, print their tables, and refuse a
text-only bundle or bad options with one line and exit code 2."""

from __future__ import annotations

import json

import pytest

from edgekv.cli import main


@pytest.fixture(scope="module")
def idefics3_bundle(vlm_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("scene-cli") / "idefics3"
    assert main(["export", str(vlm_dir("idefics3")), "--out", str(out), "--budget", "160",
                 "--chunk", "32", "--no-validate"]) == 0
    return out


def test_eval_scenes_prints_accuracy_by_category(idefics3_bundle, capsys):
    capsys.readouterr()
    assert main(["eval", "scenes", str(idefics3_bundle), "--examples", "6", "--mistakes"]) == 0
    out = capsys.readouterr().out
    assert "colour+shape" in out and "all" in out.splitlines()[-1]


def test_bench_needle_prints_a_row_per_policy(idefics3_bundle, capsys):
    capsys.readouterr()
    assert main(["bench-needle", str(idefics3_bundle), "--policies", "window,streaming",
                 "--budgets", "96", "--gaps", "1,2", "--lead", "1", "--trials", "1",
                 "--size", "48x36", "--json", "--quiet"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert {c["policy"] for c in report["cells"]} == {"window", "streaming"}
    assert all(len(c["answers"]) == 1 for c in report["cells"])


@pytest.mark.parametrize("argv, message", [
    (["bench-needle", "BUNDLE", "--gaps", "1,x"], "comma-separated integers"),
    (["bench-needle", "BUNDLE", "--gaps", "2500"], "at most 2000"),
    (["eval", "scenes", "TEXT_BUNDLE"], "no vision graph"),
])
def test_bad_input_is_one_line(argv, message, idefics3_bundle, tiny_bundle, capsys):
    argv = [str(idefics3_bundle) if a == "BUNDLE" else str(tiny_bundle()) if a == "TEXT_BUNDLE"
            else a for a in argv]
    capsys.readouterr()  # fixture builds print progress bars
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
