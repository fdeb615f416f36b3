"""Sources and sinks against real files: images from skimage.data, videos written by OpenCV, real sockets."""

from __future__ import annotations

import io
import json
import logging
import socket
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from skimage import data

from edge_sdk.errors import EdgeSDKError
from edge_sdk.vision.sinks import (
    PALETTE,
    SEGMENTATION_ALPHA,
    AnnotatedImageSink,
    AnnotatedVideoSink,
    CallbackSink,
    JsonLinesSink,
    SinkError,
    annotate,
    line_thickness,
    open_sink,
)
from edge_sdk.vision.sources import (
    THREAD_NAME_PREFIX,
    ArraySource,
    CameraSource,
    CaptureSource,
    Frame,
    ImageSource,
    ReconnectPolicy,
    Source,
    SourceError,
    StreamSource,
    VideoSource,
    mask_url,
    open_source,
    source_kind,
)
from edge_sdk.vision.types import BBox, Classification, Detection, Prediction, SegmentationMask

# --------------------------------------------------------------------------- fixtures


def source_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(THREAD_NAME_PREFIX)]


@pytest.fixture(autouse=True)
def _no_leftover_threads():
    yield
    deadline = time.monotonic() + 2.0
    while source_threads() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert source_threads() == [], "a source left its capture thread running"


def bgr(rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)


ASTRONAUT = bgr(data.astronaut())  # 512x512
COFFEE = bgr(data.coffee())  # 400x600
CHELSEA = bgr(data.chelsea())  # 300x451
CAMERA = data.camera()  # 512x512 grayscale
LOGO = data.logo()  # 500x500 RGBA


@pytest.fixture
def image_dir(tmp_path) -> Path:
    folder = tmp_path / "images"
    folder.mkdir()
    cv2.imwrite(str(folder / "a_astronaut.jpg"), ASTRONAUT)
    cv2.imwrite(str(folder / "b_coffee.png"), COFFEE)
    cv2.imwrite(str(folder / "c_camera.png"), CAMERA)
    cv2.imwrite(str(folder / "d_logo.png"), cv2.cvtColor(LOGO, cv2.COLOR_RGBA2BGRA))
    (folder / "notes.txt").write_text("not an image")
    sub = folder / "more"
    sub.mkdir()
    cv2.imwrite(str(sub / "e_chelsea.jpg"), CHELSEA)
    return folder


VIDEO_SIZE = (160, 120)  # width, height
VIDEO_FRAMES = 12


def video_frames() -> list[np.ndarray]:
    stills = [cv2.resize(img, VIDEO_SIZE, interpolation=cv2.INTER_AREA) for img in (ASTRONAUT, COFFEE, CHELSEA)]
    return [stills[i % 3] for i in range(VIDEO_FRAMES)]


def write_video(path: Path, fourcc: str, frames: list[np.ndarray] | None = None) -> Path:
    frames = video_frames() if frames is None else frames
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), 10.0, (width, height))
    assert writer.isOpened(), f"this OpenCV build cannot write {fourcc} into {path.suffix}"
    for frame in frames:
        writer.write(frame)
    writer.release()
    return path


@pytest.fixture(params=[("clip.avi", "MJPG"), ("clip.mp4", "mp4v")], ids=["avi-mjpg", "mp4-mp4v"])
def video_file(request, tmp_path) -> Path:
    name, fourcc = request.param
    return write_video(tmp_path / name, fourcc)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def read_all(source: Source) -> list[Frame]:
    with source:
        return list(source)


def mean_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


# --------------------------------------------------------------------------- image sources


def test_directory_source_reads_sorted_images_as_bgr(image_dir):
    source = open_source(str(image_dir))
    assert isinstance(source, Source) and not source.live and len(source) == 4
    frames = read_all(source)

    assert [Path(f.path).name for f in frames] == ["a_astronaut.jpg", "b_coffee.png", "c_camera.png", "d_logo.png"]
    assert [f.index for f in frames] == [0, 1, 2, 3]
    assert all(f.source == str(image_dir) and f.label is None for f in frames)
    assert all(f.image.dtype == np.uint8 and f.image.ndim == 3 and f.image.shape[2] == 3 for f in frames)
    assert mean_abs_diff(frames[0].image, ASTRONAUT) < 3  # JPEG, so close rather than equal
    np.testing.assert_array_equal(frames[1].image, COFFEE)  # PNG is lossless
    gray = frames[2].image  # grayscale expanded to three equal channels
    np.testing.assert_array_equal(gray[:, :, 0], CAMERA)
    np.testing.assert_array_equal(gray[:, :, 1], CAMERA)
    np.testing.assert_array_equal(frames[3].image, cv2.cvtColor(LOGO, cv2.COLOR_RGBA2BGR))  # alpha dropped
    timestamps = [f.timestamp for f in frames]
    assert timestamps == sorted(timestamps)
    assert (source.frames_read, source.frames_dropped, source.errors) == (4, 0, 0)


def test_recursive_directory_includes_subfolders(image_dir):
    frames = read_all(ImageSource.from_path(image_dir, recursive=True))
    assert [Path(f.path).name for f in frames][-1] == "e_chelsea.jpg"
    assert len(frames) == 5
    assert mean_abs_diff(frames[-1].image, CHELSEA) < 3


def test_glob_source_and_labels(image_dir):
    source = open_source(str(image_dir / "*.jpg"), labels={"a_astronaut.jpg": "person"})
    frames = read_all(source)
    assert [Path(f.path).name for f in frames] == ["a_astronaut.jpg"]
    assert frames[0].label == "person"

    frames = read_all(open_source(str(image_dir / "**" / "*.jpg"), recursive=True))
    assert [Path(f.path).name for f in frames] == ["a_astronaut.jpg", "e_chelsea.jpg"]


def test_single_image_file(image_dir):
    path = image_dir / "b_coffee.png"
    frames = read_all(open_source(str(path), labels={str(path): "cup"}))
    assert len(frames) == 1 and frames[0].path == str(path) and frames[0].label == "cup"
    assert frames[0].image.shape == COFFEE.shape


def test_corrupt_jpeg_is_skipped_logged_and_counted(image_dir, caplog):
    good = (image_dir / "a_astronaut.jpg").read_bytes()
    (image_dir / "b_broken.jpg").write_bytes(good[: len(good) // 2])  # truncated mid-scan
    (image_dir / "b_empty.jpg").write_bytes(b"")

    with caplog.at_level(logging.WARNING, logger="edge_sdk.vision.sources"):
        source = ImageSource.from_path(image_dir)
        frames = read_all(source)

    names = [Path(f.path).name for f in frames]
    assert "b_broken.jpg" not in names and "b_empty.jpg" not in names
    assert names == ["a_astronaut.jpg", "b_coffee.png", "c_camera.png", "d_logo.png"]
    assert [f.index for f in frames] == [0, 1, 2, 3]
    assert source.errors == 2
    assert "b_broken.jpg" in caplog.text and "b_empty.jpg" in caplog.text


def test_corrupt_jpeg_in_strict_mode_raises_naming_the_file(image_dir):
    broken = image_dir / "b_broken.jpg"
    broken.write_bytes((image_dir / "a_astronaut.jpg").read_bytes()[:2000])
    source = open_source(str(image_dir), strict=True)
    with source:
        assert source.read().path.endswith("a_astronaut.jpg")
        with pytest.raises(SourceError) as info:
            source.read()
    assert info.value.source == str(broken)
    assert str(broken) in str(info.value) and "cannot decode" in str(info.value)


def test_empty_directory_missing_path_and_no_glob_match_name_the_path(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("no images here")
    with pytest.raises(SourceError, match="holds no image files") as info:
        open_source(str(empty))
    assert info.value.source == str(empty)

    missing = tmp_path / "nope"
    with pytest.raises(SourceError, match="no such file") as info:
        open_source(str(missing) + "/")
    assert str(missing) in str(info.value)

    pattern = str(tmp_path / "*.png")
    with pytest.raises(SourceError, match="no image files match") as info:
        open_source(pattern)
    assert info.value.source == pattern
    assert isinstance(info.value, EdgeSDKError)


def test_read_before_open_raises_and_close_is_idempotent(image_dir):
    source = ImageSource.from_path(image_dir)
    with pytest.raises(SourceError, match="not open"):
        source.read()
    source.open()
    source.close()
    source.close()
    with pytest.raises(SourceError, match="not open"):
        source.read()


# --------------------------------------------------------------------------- video files


def test_video_file_reads_back_every_frame(video_file):
    source = open_source(str(video_file))
    assert isinstance(source, VideoSource) and not source.live
    frames = read_all(source)

    expected = video_frames()
    assert len(frames) == VIDEO_FRAMES
    assert [f.index for f in frames] == list(range(VIDEO_FRAMES))
    assert all(f.image.shape == (VIDEO_SIZE[1], VIDEO_SIZE[0], 3) for f in frames)
    assert all(f.path == str(video_file) for f in frames)
    for frame, original in zip(frames, expected, strict=True):
        assert mean_abs_diff(frame.image, original) < 12  # lossy codecs, but clearly the same picture
    assert mean_abs_diff(frames[0].image, expected[1]) > 30  # and clearly not another one
    assert source.frames_dropped == 0


def test_video_loop_starts_over(tmp_path):
    path = write_video(tmp_path / "short.avi", "MJPG", video_frames()[:3])
    with VideoSource.from_file(path, loop=True) as source:
        frames = [source.read() for _ in range(8)]
    assert [f.index for f in frames] == list(range(8))
    assert mean_abs_diff(frames[3].image, frames[0].image) < 1
    assert mean_abs_diff(frames[7].image, frames[1].image) < 1


def test_missing_and_undecodable_video_files(tmp_path):
    missing = tmp_path / "missing.mp4"
    with pytest.raises(SourceError, match="no such video file") as info:
        open_source(str(missing))
    assert info.value.source == str(missing)

    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"this is not a video " * 200)
    source = open_source(str(garbage))
    with pytest.raises(SourceError, match="cannot decode") as info:
        source.open()
    assert info.value.source == str(garbage)


# --------------------------------------------------------------------------- cameras and streams


def test_missing_camera_fails_fast():
    source = open_source("camera:7")
    assert isinstance(source, CameraSource) and source.live
    started = time.monotonic()
    with pytest.raises(SourceError, match="camera 7 is not available") as info:
        source.open()
    assert time.monotonic() - started < 5
    assert info.value.source == "camera:7"


def test_camera_device_path_and_bad_camera_specs():
    assert open_source("camera:/dev/video0").name == "camera:/dev/video0"
    with pytest.raises(SourceError, match="camera:N"):
        open_source("camera:front")


def test_camera_open_that_hangs_times_out():
    release = threading.Event()

    def hanging_factory():
        release.wait(5)
        raise OSError("gave up")

    source = CameraSource.from_device(3, connect_timeout=0.2, capture_factory=hanging_factory)
    started = time.monotonic()
    with pytest.raises(SourceError, match="no connection within 0.2 s"):
        source.open()
    assert time.monotonic() - started < 1.5
    release.set()  # lets the blocked open return; the autouse fixture checks its thread then ends


@pytest.mark.parametrize("scheme", ["rtsp", "http"])
def test_stream_to_closed_port_fails_with_masked_url(scheme, caplog):
    url = f"{scheme}://admin:s3cret@127.0.0.1:{free_port()}/live.mjpg"
    source = open_source(url, connect_timeout=3.0)
    assert isinstance(source, StreamSource) and source.live
    started = time.monotonic()
    with caplog.at_level(logging.DEBUG), pytest.raises(SourceError, match="cannot connect") as info:
        source.open()
    assert time.monotonic() - started < 3
    assert info.value.source == mask_url(url) == url.replace("admin:s3cret@", "***@")
    assert "s3cret" not in str(info.value) and "admin" not in str(info.value)
    assert "s3cret" not in caplog.text


def test_mask_url():
    assert mask_url("rtsp://u:p@cam.local:554/s") == "rtsp://***@cam.local:554/s"
    assert mask_url("rtsp://user@cam.local/s") == "rtsp://***@cam.local/s"
    assert mask_url("http://cam.local/video.mjpg") == "http://cam.local/video.mjpg"
    assert mask_url("https://h/x?channel=1&token=abc&key=k2") == "https://h/x?channel=1&token=***&key=***"
    assert mask_url("rtsp://u:p@ss@cam/s") == "rtsp://***@cam/s"
    assert mask_url("failed: rtsp://u:p@cam/s timed out") == "failed: rtsp://***@cam/s timed out"


def test_factory_errors_are_reported_without_credentials():
    def factory():
        raise OSError("cannot open rtsp://admin:hunter2@10.0.0.5/s")

    source = StreamSource.from_url("rtsp://admin:hunter2@10.0.0.5/s", capture_factory=factory)
    with pytest.raises(SourceError, match="OSError") as info:
        source.open()
    assert "hunter2" not in str(info.value) and "rtsp://***@10.0.0.5/s" in str(info.value)


class FailingCapture:
    """A capture that never opened, like cv2.VideoCapture of an unreachable stream."""

    def isOpened(self) -> bool:
        return False

    def read(self):
        return False, None

    def release(self) -> None:
        pass


def test_stream_reconnects_with_backoff_and_resumes(tmp_path):
    """The stream plays, drops, fails 3 reconnects, recovers and plays again, then drops for good."""
    video = write_video(tmp_path / "segment.avi", "MJPG", video_frames()[:5])
    plan = ["video", "fail", "fail", "fail", "video"]  # afterwards: always fail
    calls: list[float] = []

    def factory():
        calls.append(time.monotonic())
        step = plan[len(calls) - 1] if len(calls) <= len(plan) else "fail"
        return cv2.VideoCapture(str(video)) if step == "video" else FailingCapture()

    policy = ReconnectPolicy(initial=0.02, maximum=0.1, multiplier=2.0, jitter=0.1, max_reconnects=4)
    source = StreamSource.from_url("rtsp://u:pw@cam/x", buffer_size=100, reconnect=policy, capture_factory=factory)
    frames = []
    with source:
        with pytest.raises(SourceError, match="gave up after 4 reconnect attempt") as info:
            while (frame := source.read()) is not None:
                frames.append(frame)
        assert "pw" not in str(info.value)

    # 4 attempts to come back after the first drop (3 failed), 4 more (all failed) after the second.
    assert source.reconnects == 8
    assert len(calls) == 9
    assert [f.index for f in frames] == list(range(10))  # frames resumed after the reconnect
    assert mean_abs_diff(frames[5].image, frames[0].image) < 1
    assert source.frames_dropped == 0
    # Exponential backoff: each wait at least the policy's lower bound (base * (1 - jitter)).
    gaps = np.diff(calls[1:5])
    assert all(gap >= min(0.1, 0.02 * 2**n) * 0.9 - 0.005 for n, gap in enumerate(gaps, start=1)), gaps
    assert all(gap < 1.0 for gap in gaps), gaps


def test_reconnect_policy_delays_grow_capped_with_jitter():
    policy = ReconnectPolicy()  # 0.5 s, doubling, capped at 30 s, +-20 %
    import random

    rng = random.Random(0)
    for attempt in range(200):
        base = min(30.0, 0.5 * 2**attempt)
        delay = policy.delay(attempt, rng)
        assert base * 0.8 <= delay <= min(30.0, base * 1.2)
    assert len({round(policy.delay(3, rng), 6) for _ in range(20)}) > 1  # jittered
    assert ReconnectPolicy(jitter=0).delay(10_000) == 30.0
    with pytest.raises(ValueError, match="maximum"):
        ReconnectPolicy(initial=5, maximum=1)


# --------------------------------------------------------------------------- live buffer


def test_live_source_drops_oldest_when_reader_is_slow():
    produced = 400
    tiny = [np.full((8, 8, 3), i % 256, np.uint8) for i in range(produced)]
    source = ArraySource(tiny, name="fast", live=True, buffer_size=4)
    indices = []
    with source:
        while (frame := source.read()) is not None:
            indices.append(frame.index)
            np.testing.assert_array_equal(frame.image, tiny[frame.index])
            time.sleep(0.002)

    assert source.frames_dropped > 0
    assert indices == sorted(set(indices))  # always forward, never repeated
    assert indices[-1] == produced - 1  # the newest frame is the last one read
    assert source.frames_read == len(indices)
    assert source.frames_read + source.frames_dropped == produced


def test_live_reads_stay_fresh_while_producing():
    """A camera-like producer (1 frame/ms) read every 10 ms: each read is one of the newest frames."""
    produced = []

    def camera():
        for i in range(150):
            time.sleep(0.001)
            produced.append(i)
            yield np.full((4, 4, 3), i % 256, np.uint8)

    source = ArraySource(camera(), live=True, buffer_size=2)
    lags = []
    with source:
        while (frame := source.read()) is not None:
            lags.append(len(produced) - 1 - frame.index)
            time.sleep(0.01)
    assert source.frames_dropped > 0
    assert np.median(lags) <= 3, lags


def test_close_wakes_a_blocked_reader_and_joins_the_thread():
    def slow():
        while True:
            time.sleep(0.05)
            yield np.zeros((4, 4, 3), np.uint8)

    source = ArraySource(slow(), name="slow", live=True, buffer_size=1)
    source.open()
    results = []
    reader = threading.Thread(target=lambda: results.extend(iter(source.read, None)))
    reader.start()
    time.sleep(0.2)
    source.close()
    reader.join(2)
    assert not reader.is_alive()
    assert source_threads() == []
    assert 1 <= len(results) <= 6


def test_array_source_converts_and_validates():
    frames = read_all(ArraySource([CAMERA, cv2.cvtColor(LOGO, cv2.COLOR_RGBA2BGRA), ASTRONAUT]))
    assert [f.image.shape for f in frames] == [(512, 512, 3), (500, 500, 3), (512, 512, 3)]
    assert frames[2].image is ASTRONAUT  # already BGR: not copied
    with pytest.raises(SourceError, match="uint8"):
        read_all(ArraySource([np.zeros((4, 4, 3), np.float32)], name="floats"))
    with pytest.raises(SourceError, match=r"\(2, 2, 2\)"):
        read_all(ArraySource([np.zeros((2, 2, 2), np.uint8)], live=True))


# --------------------------------------------------------------------------- the CLI form


def test_open_source_dispatch_and_option_checks(image_dir, video_file):
    assert source_kind("camera:0") == "camera"
    assert source_kind("rtsp://cam/x") == source_kind("HTTPS://cam/x.m3u8") == "stream"
    assert source_kind(str(video_file)) == "video"
    assert source_kind(str(image_dir)) == "images"
    assert source_kind(str(image_dir / "*.png")) == "glob"
    assert isinstance(open_source(str(image_dir / "a_astronaut.jpg")), ImageSource)
    with pytest.raises(SourceError, match="'loop' does not apply to images"):
        open_source(str(image_dir), loop=True)
    with pytest.raises(SourceError, match="'strict' does not apply to stream"):
        open_source("rtsp://u:p@cam/x", strict=True)
    with pytest.raises(SourceError, match="no such file or directory"):
        open_source("nothing-here")
    notes = image_dir / "notes.txt"
    with pytest.raises(SourceError, match="cannot tell what kind"):
        open_source(str(notes))
    with pytest.raises(SourceError):
        open_source("")


def test_live_option_reaches_the_source():
    source = open_source("camera:0", buffer_size=5, connect_timeout=1.5, reconnect=ReconnectPolicy(max_reconnects=3))
    assert (source.buffer_size, source.connect_timeout, source.reconnect.max_reconnects) == (5, 1.5, 3)
    assert isinstance(source, CaptureSource)


# --------------------------------------------------------------------------- sinks


def detection_prediction() -> Prediction:
    return Prediction(
        task="detection",
        detections=(
            Detection(BBox(100, 120, 300, 380), 0.91, 0, "person", keypoints=((200.0, 200.0),)),
            Detection(BBox(350.5, 40.2, 480.7, 160.9), 0.42, 3, "rocket"),
        ),
    )


def frame_of(image: np.ndarray, index: int = 0, source: str = "test", **extra) -> Frame:
    return Frame(image=image, index=index, timestamp=time.monotonic(), source=source, **extra)


def test_json_lines_sink_writes_one_parseable_line_per_frame(tmp_path):
    out = tmp_path / "deep" / "out.jsonl"
    prediction = detection_prediction()
    with open_sink(f"jsonl:{out}") as sink:
        assert isinstance(sink, JsonLinesSink)
        sink.write(frame_of(ASTRONAUT, 0, path="/data/a.jpg", label="person"), prediction)
        sink.write(frame_of(ASTRONAUT, 1), Prediction(task="detection"))
        assert len(out.read_text().splitlines()) == 2  # flushed per line, before close

    first, second = (json.loads(line) for line in out.read_text().splitlines())
    assert first["source"] == "test" and first["index"] == 0 and first["path"] == "/data/a.jpg"
    assert first["label"] == "person" and isinstance(first["timestamp"], float)
    assert first["task"] == "detection"
    assert [d["label"] for d in first["detections"]] == ["person", "rocket"]
    assert first["detections"][0]["box"] == [100, 120, 300, 380]
    assert first["detections"][0]["keypoints"] == [[200.0, 200.0]]
    assert first["detections"][1]["score"] == pytest.approx(0.42)
    assert second["detections"] == [] and second["path"] is None and "label" not in second


def test_json_lines_to_stdout_and_to_a_stream(capsys):
    prediction = Prediction(task="classification", classes=(Classification(7, "cat", 0.8),))
    with open_sink("-") as sink:
        sink.write(frame_of(CHELSEA, 4), prediction)
    line = json.loads(capsys.readouterr().out)
    assert line["classes"] == [{"index": 7, "label": "cat", "score": 0.8}] and line["index"] == 4

    buffer = io.StringIO()
    with JsonLinesSink(buffer) as sink:
        sink.write(frame_of(CHELSEA), prediction)
    assert not buffer.closed and json.loads(buffer.getvalue())["task"] == "classification"


def changed_pixels(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    return np.any(before != after, axis=2)


def test_annotate_draws_box_borders_only_and_never_mutates_the_input():
    image = ASTRONAUT.copy()
    prediction = Prediction(task="detection", detections=(Detection(BBox(100, 120, 300, 380), 0.91, 0, "person"),))
    out = annotate(image, prediction)

    np.testing.assert_array_equal(image, ASTRONAUT)
    assert out is not image and out.shape == image.shape and out.dtype == np.uint8
    changed = changed_pixels(image, out)
    t = line_thickness(image)
    # Every edge of the box is drawn in the class colour.
    colour = PALETTE[0]
    for y, x in [(250, 100), (250, 300), (380, 200), (120, 250)]:
        assert changed[y, x], (y, x)
        np.testing.assert_array_equal(out[y, x], colour)
    # Inside the box, away from its border: untouched.
    assert not changed[120 + t + 1 : 380 - t - 1, 100 + t + 1 : 300 - t - 1].any()
    # Outside: only the border and the label tag above the box's top-left corner changed.
    allowed = np.zeros_like(changed)
    allowed[120 - t : 380 + t + 1, 100 - t : 300 + t + 1] = True
    allowed[120 - 40 : 120, 100 : 100 + 160] = True  # the "person 0.91" tag
    assert changed[120 - 40 : 120, 100:260].any()
    assert not (changed & ~allowed).any()


def test_annotate_keypoints_classification_and_segmentation():
    out = annotate(ASTRONAUT, detection_prediction())
    assert changed_pixels(ASTRONAUT, out)[200, 200]  # the keypoint dot, inside the first box

    classified = annotate(CHELSEA, Prediction(task="classification", classes=(Classification(1, "tabby", 0.77),)))
    changed = changed_pixels(CHELSEA, classified)
    assert changed[:30, :120].any() and not changed[60:, :].any()

    mask = np.zeros(COFFEE.shape[:2], np.int32)
    mask[100:200, 150:300] = 2
    labelled = SegmentationMask(mask, ("bg", "a", "cup"))
    segmented = annotate(COFFEE, Prediction(task="segmentation", segmentation=labelled))
    changed = changed_pixels(COFFEE, segmented)
    assert changed[100:200, 150:300].all() and not changed[mask == 0].any()
    expected = np.rint(COFFEE[150, 200] * (1 - SEGMENTATION_ALPHA) + PALETTE[2] * SEGMENTATION_ALPHA)
    np.testing.assert_allclose(segmented[150, 200], expected, atol=1)
    # A mask at another resolution is scaled to the frame.
    small = SegmentationMask(np.kron(np.eye(2, dtype=np.int32), np.ones((5, 5), np.int32)))
    scaled = annotate(COFFEE, Prediction(task="segmentation", segmentation=small))
    changed = changed_pixels(COFFEE, scaled)
    assert changed[:200, :300].all() and not changed[:200, 300:].any()


def test_annotated_image_sink_writes_named_jpegs(tmp_path):
    out_dir = tmp_path / "annotated"
    with open_sink(f"images:{out_dir}") as sink:
        assert isinstance(sink, AnnotatedImageSink)
        sink.write(frame_of(ASTRONAUT, 7, source="camera:0"), detection_prediction())
        sink.write(frame_of(COFFEE, 8, source="camera:0"), Prediction(task="detection"))
    files = sorted(p.name for p in out_dir.iterdir())
    assert files == ["camera_0-000007.jpg", "camera_0-000008.jpg"]
    written = cv2.imread(str(out_dir / "camera_0-000007.jpg"))
    assert written.shape == ASTRONAUT.shape
    assert mean_abs_diff(written[250:300, 100], ASTRONAUT[250:300, 100]) > 20  # the box edge
    assert mean_abs_diff(written[450:, :80], ASTRONAUT[450:, :80]) < 3  # far away: JPEG noise only


@pytest.mark.parametrize("spec", ["video:{dir}/run.mp4", "{dir}/run.avi"])
def test_annotated_video_sink_reads_back_with_right_count_and_size(tmp_path, spec):
    path = Path(spec.format(dir=tmp_path).removeprefix("video:"))
    frames = read_all(ArraySource(video_frames()))
    with open_sink(spec.format(dir=tmp_path)) as sink:
        assert isinstance(sink, AnnotatedVideoSink)
        for frame in frames:
            sink.write(frame, Prediction(task="detection", detections=(Detection(BBox(10, 10, 60, 50), 0.9, 1, "x"),)))
        sink.write(frame_of(ASTRONAUT, 99), Prediction(task="detection"))  # another size: resized
    capture = cv2.VideoCapture(str(path))
    read_back = []
    while True:
        ok, image = capture.read()
        if not ok:
            break
        read_back.append(image)
    capture.release()
    assert len(read_back) == VIDEO_FRAMES + 1
    assert all(image.shape == (VIDEO_SIZE[1], VIDEO_SIZE[0], 3) for image in read_back)
    assert sink.frames_written == VIDEO_FRAMES + 1
    # The box edge is drawn in the frames on disk.
    assert mean_abs_diff(read_back[0][25:35, 8:12], frames[0].image[25:35, 8:12]) > 20


def test_callback_sink_counts_and_logs_errors(caplog):
    seen = []

    def callback(frame, prediction):
        seen.append(frame.index)
        if frame.index % 2:
            raise RuntimeError(f"bad frame {frame.index}")

    with caplog.at_level(logging.ERROR, logger="edge_sdk.vision.sinks"), CallbackSink(callback) as sink:
        for i in range(5):
            sink.write(frame_of(CHELSEA, i), Prediction(task="classification"))
    assert seen == [0, 1, 2, 3, 4]
    assert sink.errors == 2
    assert "bad frame 1" in caplog.text and "bad frame 3" in caplog.text


def test_open_sink_specs_and_errors(tmp_path):
    assert isinstance(open_sink(str(tmp_path / "x.jsonl")), JsonLinesSink)
    assert isinstance(open_sink(str(tmp_path / "frames") + "/"), AnnotatedImageSink)
    assert isinstance(open_sink(str(tmp_path / "clip.avi")), AnnotatedVideoSink)
    with pytest.raises(SinkError, match="unknown sink"):
        open_sink(str(tmp_path / "out.txt"))
    with pytest.raises(SinkError, match="suffix '.gif'"):
        open_sink(f"video:{tmp_path / 'clip.gif'}")
    sink = JsonLinesSink(tmp_path / "closed.jsonl")
    sink.close()
    with pytest.raises(SinkError, match="closed"):
        sink.write(frame_of(CHELSEA), Prediction(task="detection"))


def test_images_to_json_lines_end_to_end(image_dir, tmp_path):
    out = tmp_path / "preds.jsonl"
    with open_source(str(image_dir)) as source, open_sink(str(out)) as sink:
        for frame in source:
            height, width = frame.image.shape[:2]
            box = BBox(0, 0, width / 2, height / 2)
            sink.write(frame, Prediction(task="detection", detections=(Detection(box, 0.5, 0, "thing"),)))
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    names = [Path(line["path"]).name for line in lines]
    assert names == ["a_astronaut.jpg", "b_coffee.png", "c_camera.png", "d_logo.png"]
    assert lines[1]["detections"][0]["box"] == [0, 0, 300, 200]
