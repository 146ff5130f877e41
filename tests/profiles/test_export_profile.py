"""`edgekv export --profile`: the budget is chosen to fit, or a given one warns when it does not."""

from edgekv.cli import main
from edgekv.export.manifest import load_manifest
from edgekv.profiles.fit import choose_budget
from edgekv.profiles.loader import load_profile

SMALL_DEVICE = """
name = "small-device"
description = "a device with room for a tiny model and a small cache"
kind = "jetson"
memory_mb = 1024
reserve_mb = 1023
shared_memory = true
precision = "fp16"
int8 = false
default_chunk = 16
trt_workspace_mb = 0
overhead_mb = 0
"""


def test_export_without_budget_chooses_the_largest_that_fits(tmp_path, tiny_model_dir, capsys):
    profile_file = tmp_path / "small.toml"
    profile_file.write_text(SMALL_DEVICE)
    out = tmp_path / "bundle"
    assert main(["export", str(tiny_model_dir("llama")), "--out", str(out), "--profile",
                 str(profile_file), "--no-validate"]) == 0
    m = load_manifest(out)
    expected = choose_budget(m.dims, 16, "fp16", load_profile(profile_file))
    assert expected.limited_by == "memory"  # 1 MiB usable: memory binds before context
    assert (m.budget, m.chunk, m.dtype) == (expected.budget, 16, "fp16")
    assert f"budget {m.budget}" in capsys.readouterr().err


def test_export_with_a_budget_that_does_not_fit_warns(tmp_path, tiny_model_dir, capsys):
    profile_file = tmp_path / "small.toml"
    profile_file.write_text(SMALL_DEVICE)
    out = tmp_path / "bundle"
    assert main(["export", str(tiny_model_dir("llama")), "--out", str(out), "--profile",
                 str(profile_file), "--budget", "4000", "--no-validate"]) == 0
    assert load_manifest(out).budget == 4000
    assert "warning: the planned peak" in capsys.readouterr().err


def test_info_with_a_profile_says_whether_it_fits(tiny_bundle, capsys):
    assert main(["info", str(tiny_bundle("llama")), "--profile", "orin-nano-8gb"]) == 0
    out = capsys.readouterr().out
    assert "memory plan on orin-nano-8gb" in out and "fits        yes" in out
    assert "largest fit budget" in out


def test_info_without_a_profile_lists_budgets_by_device(tiny_bundle, capsys):
    assert main(["info", str(tiny_bundle("llama"))]) == 0
    out = capsys.readouterr().out
    assert "largest budget by device" in out and "thor" in out
