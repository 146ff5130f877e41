"""The CLI with a vision-language model: export prints graph sizes and the plan, verify compares
an image prompt with HF, and bad pictures are one clear line with exit code 2."""

import json

import numpy as np
import pytest
import vlm_fixtures

from edgekv.cli import main


@pytest.fixture(scope="module")
def picture_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("pictures") / "frame.png"
    vlm_fixtures.image(40, 56, seed=5).save(path)
    return path


def test_export_info_verify_with_an_image(capsys, vlm_dir, tmp_path, picture_file):
    out = tmp_path / "bundle"
    assert main(["export", str(vlm_dir("llava-siglip")), "--out", str(out), "--budget", "128",
                 "--chunk", "32"]) == 0
    captured = capsys.readouterr()
    assert "vision" in captured.out  # the plan has a row for the vision weights
    graphs = next(line for line in captured.err.splitlines() if line.startswith("graphs:"))
    assert "decoder" in graphs and "vision" in graphs
    assert "image + text, max |logit diff|" in captured.err

    assert main(["info", str(out)]) == 0
    assert "vision.onnx 1x3x32x32 -> 16 tokens/frame" in capsys.readouterr().out
    assert main(["info", str(out), "--profile", "orin-nano-8gb"]) == 0
    on_device = capsys.readouterr().out
    assert "memory plan on orin-nano-8gb" in on_device and "  vision " in on_device

    assert main(["verify", str(out), "--against", str(vlm_dir("llava-siglip")), "--image",
                 str(picture_file), "--image", str(picture_file), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["images"] == 2 and report["tokens"] > 32
    assert report["max_abs_logit_diff"] <= report["limit"] == 1e-3 and report["passed"]
    # without --image, the text path against the whole multimodal model
    assert main(["verify", str(out), "--against", str(vlm_dir("llava-siglip")), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["passed"]
    # --prompt is the question after the pictures: a longer one is more tokens compared
    long_question = "Which colours are in the picture, and how many shapes are there in it?"
    assert main(["verify", str(out), "--against", str(vlm_dir("llava-siglip")), "--image",
                 str(picture_file), "--image", str(picture_file), "--json",
                 "--prompt", long_question]) == 0
    asked = json.loads(capsys.readouterr().out)
    assert asked["tokens"] > report["tokens"] and asked["passed"]

    assert main(["run", str(out), "--image", str(picture_file), "--prompt", "What is it?",
                 "--max-new-tokens", "4", "--policy", "full"]) == 0
    assert "5 out" not in capsys.readouterr().err


def _fails(capsys, argv, pattern):
    capsys.readouterr()  # drop what building the fixtures printed
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    # Export logs its progress first; the error itself is the one last line.
    assert "Traceback" not in err
    last = err.splitlines()[-1]
    assert last.startswith("edgekv: error: ") and pattern in last, err


def test_corrupt_image_file(capsys, vlm_bundle, tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 truncated")
    _fails(capsys, ["run", str(vlm_bundle("llava-clip")), "--image", str(bad), "--prompt", "hi"],
           "not a valid image file")


def test_wrong_channel_count(vlm_bundle):
    from edgekv.runtime.bundle import Bundle
    from edgekv.runtime.errors import ImageError
    from edgekv.runtime.session import Session

    session = Session.open(Bundle.open(vlm_bundle("llava-clip")), policy="full")
    with pytest.raises(ImageError, match="4 channels"):
        session.append_image(np.zeros((32, 32, 4), dtype=np.uint8))
    assert session.messages == [] and session.stats.tokens_in == 0


def test_image_into_a_text_bundle(capsys, tiny_bundle, picture_file):
    _fails(capsys, ["run", str(tiny_bundle()), "--image", str(picture_file), "--prompt", "hi"],
           "no vision graph")


def test_bad_image_size_flag(capsys, vlm_dir, tmp_path):
    _fails(capsys, ["export", str(vlm_dir("qwen2_vl")), "--out", str(tmp_path / "b"),
                    "--image-size", "30x40"], "multiples of 8")


def test_unsupported_architecture_lists_families(capsys, tmp_path):
    import transformers as tf

    config = tf.GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=64, bos_token_id=0,
                           eos_token_id=0)
    tf.GPT2LMHeadModel(config).save_pretrained(tmp_path / "gpt2")
    tokenizer, _ = vlm_fixtures.tokenizer("llava")
    tokenizer.save_pretrained(tmp_path / "gpt2")
    _fails(capsys, ["export", str(tmp_path / "gpt2"), "--out", str(tmp_path / "b")],
           "supported families: llama, mistral, qwen2, qwen3, idefics3, llava, qwen2_vl")


def test_bench_stream_runs_at_the_bundles_budget_by_default(capsys, vlm_dir, tmp_path,
                                                             monkeypatch):
    from edgekv.export.exporter import ExportOptions, export
    from edgekv.tools import stream_bench

    out = tmp_path / "bundle"
    export(str(vlm_dir("llava-siglip")), out, ExportOptions(budget=128, chunk=32,
                                                            validate=False), log=lambda _m: None)
    seen = {}

    def fake_bench(session, options, policy):
        seen["budget"] = session.session.cache.budget
        return stream_bench.BenchReport(options.frames, seen["budget"], policy)

    monkeypatch.setattr(stream_bench, "run_bench", fake_bench)
    main(["bench-stream", str(out), "--frames", "2000", "--json"])
    assert seen["budget"] == 128  # a bundle below the old fixed default of 512 runs
    assert main(["bench-stream", str(out), "--budget", "512"]) == 2
    assert "exceeds the bundle's budget 128" in capsys.readouterr().err
