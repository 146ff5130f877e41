"""Device profiles: every built-in file loads; a bad file or name is one clear ProfileError."""

import re

import psutil
import pytest

from edgekv.cli import main
from edgekv.profiles.loader import MiB, list_profiles, load_profile, parse_profile, tomllib
from edgekv.runtime.errors import EdgeKVError, ProfileError

EXPECTED = {"orin-nano-8gb", "orin-nx-8gb", "orin-nx-16gb", "agx-orin-32gb", "agx-orin-64gb",
            "thor", "rtx-4090-24gb", "cpu"}

GOOD = """
name = "my-board"
description = "a custom carrier board"
kind = "jetson"
memory_mb = 8192
visible_mb = 7620
reserve_mb = 1500
shared_memory = true
precision = "fp16"
int8 = true
default_chunk = 32
trt_workspace_mb = 512
overhead_mb = 600
jetpack = "6.2"
"""


def test_every_device_of_the_issue_has_a_profile_that_loads():
    assert EXPECTED <= set(list_profiles())
    for name in list_profiles():
        p = load_profile(name)
        assert p.name == name
        assert 0 < p.usable_bytes < p.memory_mb * MiB


def test_jetsons_share_memory_and_name_their_jetpack():
    for name in EXPECTED - {"cpu", "rtx-4090-24gb"}:
        p = load_profile(name)
        assert p.kind == "jetson" and p.shared_memory and p.jetpack and p.tensorrt
    assert not load_profile("rtx-4090-24gb").shared_memory


def test_cpu_profile_reads_this_machines_memory():
    assert load_profile("cpu").memory_mb == psutil.virtual_memory().total // MiB


def test_a_users_own_file_loads_by_path(tmp_path):
    path = tmp_path / "my-board.toml"
    path.write_text(GOOD)
    p = load_profile(str(path))
    assert (p.name, p.visible_mb, p.l4t) == ("my-board", 7620, None)
    assert p.usable_bytes == (7620 - 1500) * MiB
    assert p.source == str(path)


def _raw(**changes):
    raw = tomllib.loads(GOOD)
    raw.update(changes)
    return {k: v for k, v in raw.items() if v is not None}


@pytest.mark.parametrize(("changes", "message"), [
    ({"memory_gb": 8}, "unknown field(s) memory_gb"),
    ({"reserve_mb": None}, "missing field(s) reserve_mb"),
    ({"memory_mb": "8GB"}, 'memory_mb must be a number of MiB or "host"'),
    ({"shared_memory": "yes"}, "shared_memory = 'yes' should be true or false"),
    ({"default_chunk": True}, "default_chunk = True should be an integer"),
    ({"precision": "int4"}, "precision 'int4' is not one of fp32, fp16"),
    ({"kind": "phone"}, "kind 'phone' is not one of jetson, gpu, cpu"),
    ({"default_chunk": 0}, "default_chunk must be positive"),
    ({"visible_mb": 9000}, "visible_mb 9000 must be between 1 and memory_mb 8192"),
    ({"reserve_mb": 8000}, "leaves no memory to plan for"),
])
def test_bad_fields_are_named_in_the_error(changes, message):
    with pytest.raises(ProfileError, match=re.escape(message)):
        parse_profile(_raw(**changes), "test.toml")


def test_unknown_name_lists_the_built_in_profiles():
    with pytest.raises(ProfileError, match="no device profile 'orin-nano-4gb'.*orin-nano-8gb"):
        load_profile("orin-nano-4gb")


def test_missing_file_and_bad_toml(tmp_path):
    with pytest.raises(ProfileError, match="not found"):
        load_profile(str(tmp_path / "absent.toml"))
    bad = tmp_path / "bad.toml"
    bad.write_text("name = \n")
    with pytest.raises(ProfileError, match="not valid TOML"):
        load_profile(str(bad))


def test_profile_errors_are_edgekv_errors_and_the_cli_prints_one_line(capsys):
    assert issubclass(ProfileError, EdgeKVError)
    assert main(["info", "/nonexistent-bundle", "--profile", "no-such-device"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("edgekv: error: no device profile 'no-such-device'")
    assert "\n" not in err


def test_edgekv_profiles_lists_every_profile(capsys):
    assert main(["profiles"]) == 0
    out = capsys.readouterr().out
    for name in EXPECTED:
        assert name in out
