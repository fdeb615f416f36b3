"""`edge-sdk run` and `edge-sdk bench` on real bundles, sources and sinks."""

from __future__ import annotations

import json

import pytest

from edge_sdk.cli.main import main
from test_runtime import _digit_files, digits_bundle

cv2 = pytest.importorskip("cv2")


@pytest.fixture(scope="module")
def digits():
    from converters.samples import load_digits_split, train_softmax

    split = load_digits_split()
    return split, train_softmax(split)


def test_run_images_into_jsonl_and_annotated_images(tmp_path, keys, digits, capsys):
    bundle = digits_bundle(tmp_path, keys, digits)
    frames = _digit_files(tmp_path, digits[0], 25)
    out = tmp_path / "out.jsonl"
    code = main(["run", str(bundle), "--trusted-dir", str(keys.trusted_dir), "--source", str(frames),
                 "--sink", str(out), "--sink", f"images:{tmp_path / 'ann'}", "--json"])
    stats = json.loads(capsys.readouterr().out)
    assert code == 0 and stats["frames_out"] == 25 and stats["dropped"] == 0
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(lines) == 25 and all(line["task"] == "classification" for line in lines)
    assert len(list((tmp_path / "ann").glob("*.jpg"))) == 25


def test_run_max_frames_and_missing_source(tmp_path, keys, digits, capsys):
    bundle = digits_bundle(tmp_path, keys, digits)
    frames = _digit_files(tmp_path, digits[0], 40)
    code = main(["run", str(bundle), "--trusted-dir", str(keys.trusted_dir), "--source", str(frames),
                 "--max-frames", "10", "--json"])
    stats = json.loads(capsys.readouterr().out)
    assert code == 0 and stats["frames_out"] == 10  # exact, however fast the model is
    code = main(["run", str(bundle), "--trusted-dir", str(keys.trusted_dir), "--source", str(frames),
                 "--source", str(frames), "--max-frames", "25", "--json"])
    assert code == 0 and json.loads(capsys.readouterr().out)["frames_out"] == 25  # one budget for all sources
    code = main(["run", str(bundle), "--trusted-dir", str(keys.trusted_dir), "--source", str(tmp_path / "nope.mp4")])
    assert code == 1 and "nope.mp4" in capsys.readouterr().err


def test_run_refuses_a_tampered_bundle_and_bad_counts(tmp_path, keys, digits, capsys):
    bundle = digits_bundle(tmp_path, keys, digits)
    data = bytearray(bundle.read_bytes())
    data[len(data) // 2] ^= 0xFF
    bad = tmp_path / "bad.edgepkg"
    bad.write_bytes(bytes(data))
    code = main(["run", str(bad), "--trusted-dir", str(keys.trusted_dir), "--source", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 1 and "bad.edgepkg" in err
    with pytest.raises(SystemExit) as exit_:
        main(["run", str(bundle), "--source", "x", "--max-batch", "0"])
    assert exit_.value.code == 2 and "must be at least 1" in capsys.readouterr().err


def test_bench_json_vs_bare_and_histogram(tmp_path, keys, digits, capsys):
    bundle = digits_bundle(tmp_path, keys, digits)
    png = tmp_path / "hist.png"
    code = main(["bench", str(bundle), "--trusted-dir", str(keys.trusted_dir), "--runs", "30", "--warmup", "3",
                 "--vs-bare", "--histogram", str(png), "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["runs"] == 30 and report["engine"] == "onnxruntime"
    assert 0 < report["latency_ms"]["p50"] <= report["latency_ms"]["p99"]
    assert set(report["stages_ms_p50"]) == {"preprocess", "inference", "postprocess"}
    assert report["bare_latency_ms"]["p50"] > 0 and report["peak_rss_mib"] > 10
    image = cv2.imread(str(png))
    assert image is not None and image.shape == (360, 640, 3) and (image != 255).any()
