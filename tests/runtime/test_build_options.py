"""`edgekv build` options: flags win, a device profile fills the rest, a missing one is ignored;
and manifests written before `engines` existed still load."""

import json

from edgekv.export.manifest import Manifest
from edgekv.runtime.build_options import DEFAULT_WORKSPACE_MB, resolve_options


def test_profile_file_fills_unset_flags(tmp_path):
    profile = tmp_path / "orin.toml"
    profile.write_text('name = "orin"\n[build]\nprecision = "fp16"\nworkspace_mb = 512\n')
    opts = resolve_options(False, None, str(profile))
    assert (opts.fp16, opts.workspace_mb, opts.profile) == (True, 512, str(profile))
    assert resolve_options(False, 2048, str(profile)).workspace_mb == 2048


def test_unknown_profile_is_reported_and_ignored():
    said = []
    opts = resolve_options(False, None, "no-such-device", log=said.append)
    assert (opts.fp16, opts.workspace_mb, opts.profile) == (False, DEFAULT_WORKSPACE_MB, None)
    assert said and "not found" in said[0]


def test_manifest_without_engines_still_loads(tiny_bundle):
    text = (tiny_bundle("llama", budget=320, chunk=32) / "manifest.json").read_text()
    raw = json.loads(text)
    raw.pop("engines", None)
    manifest = Manifest.from_json(json.dumps(raw))
    assert manifest.engines == {}
