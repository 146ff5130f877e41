"""Manifests: a multimodal one round-trips; a text one written before the multimodal fields
existed still loads, as a text bundle."""

import json

from edgekv.export.manifest import Manifest, load_manifest


def test_multimodal_manifest_round_trips(vlm_bundle):
    manifest = load_manifest(vlm_bundle("qwen2_vl"))
    assert manifest.position_scheme == "mrope" and manifest.dims.mrope_section
    assert manifest.vision.layout.grid == [4, 6]
    assert Manifest.from_json(manifest.to_json()) == manifest


def test_text_manifest_without_multimodal_fields_loads(tiny_bundle):
    raw = json.loads((tiny_bundle() / "manifest.json").read_text())
    for key in ("vision", "position_scheme"):
        raw.pop(key)
    raw["dims"].pop("mrope_section")
    manifest = Manifest.from_json(json.dumps(raw))
    assert manifest.vision is None and manifest.position_scheme == "rope"
    assert manifest.dims.mrope_section == []
