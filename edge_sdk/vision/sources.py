"""Frame sources: image files, video files, cameras, network streams and arrays.

Every source follows the small :class:`Source` protocol: ``open()``, ``read()``
(a :class:`Frame`, or ``None`` at the end of the stream), ``close()``, a
context manager and iteration, plus counters a pipeline reports as telemetry.

Two kinds of sources behave differently on purpose:

* **File sources** (images, video files, arrays) are not live: ``read()``
  decodes the next frame on the caller's thread, so the pipeline owns the
  concurrency, and no frame is ever dropped.
* **Live sources** (cameras, streams) capture on a thread the source owns,
  started by ``open()`` and stopped and joined by ``close()``. Frames go into
  a bounded buffer that drops the *oldest* frame when full, so ``read()``
  always returns the freshest frames however slow the consumer is. When a live
  capture fails it is reopened with capped exponential backoff and jitter
  (:class:`ReconnectPolicy`).

``open_source(spec)`` turns the ``--source`` strings of the CLI
(``camera:0``, ``video.mp4``, ``rtsp://...``, ``images/``, ``images/*.jpg``)
into a source; each source class also has named constructors for Python users.
OpenCV is imported lazily, inside the functions that need it.
"""

from __future__ import annotations

import abc

import collections
import glob
import logging
import random
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Iterator, Mapping, Protocol, runtime_checkable

import numpy as np

from edge_sdk.errors import EdgeSDKError

if TYPE_CHECKING:
    from types import TracebackType

log = logging.getLogger(__name__)

#: Suffixes (lower case) read as still images.
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp"})
#: Suffixes (lower case) that ``open_source`` reads as video files.
VIDEO_SUFFIXES = frozenset(
    {".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".ts", ".wmv", ".flv", ".h264", ".h265"}
)
#: URL schemes that ``open_source`` reads as network streams.
STREAM_SCHEMES = ("rtsp", "rtsps", "rtmp", "http", "https")
#: Every thread this module starts has a name beginning with this.
THREAD_NAME_PREFIX = "edge-sdk-source"

_CAMERA_PREFIX = "camera:"
_STREAM_RE = re.compile(rf"^(?:{'|'.join(STREAM_SCHEMES)})://", re.IGNORECASE)
_USERINFO_RE = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://)[^/?#\s]*@")
_SECRET_KEYS = "user|username|password|passwd|pass|pwd|token|access_token|auth|key|api_key|apikey|secret|signature|sig"
_SECRET_QUERY_RE = re.compile(rf"([?&;](?:{_SECRET_KEYS})=)[^&;#]*", re.IGNORECASE)
_GLOB_CHARS = frozenset("*?[")
_JOIN_TIMEOUT_S = 10.0


class SourceError(EdgeSDKError):
    """A source could not be opened or read: missing file, undecodable data, absent camera, lost stream.

    ``source`` names the offending source, file or (credential-masked) URL and
    ``reason`` says what went wrong.
    """

    def __init__(self, source: str, reason: str) -> None:
        self.source = str(source)
        self.reason = reason
        super().__init__(f"{self.source}: {reason}")


@dataclass(frozen=True)
class Frame:
    """One captured image and where it came from.

    ``image`` is BGR ``uint8`` of shape (H, W, 3); ``index`` counts the
    frames of one source from 0 (for a live source it counts every captured
    frame, so indices skip the frames that were dropped); ``timestamp`` is
    :func:`time.monotonic` at capture; ``path`` is the file the frame was
    decoded from, if any; ``label`` is an optional ground-truth label.
    """

    image: np.ndarray
    index: int
    timestamp: float
    source: str
    path: str | None = None
    label: str | None = None


@runtime_checkable
class Source(Protocol):
    """What the pipeline reads frames from."""

    name: str
    live: bool
    frames_read: int
    frames_dropped: int
    reconnects: int
    errors: int

    def open(self) -> None: ...

    def read(self) -> Frame | None: ...

    def close(self) -> None: ...

    def __enter__(self) -> "Source": ...

    def __exit__(self, *exc: object) -> None: ...

    def __iter__(self) -> Iterator[Frame]: ...


class Capture(Protocol):
    """The part of ``cv2.VideoCapture`` a :class:`CaptureSource` uses; inject your own for other devices."""

    def isOpened(self) -> bool: ...

    def read(self) -> tuple[bool, np.ndarray | None]: ...

    def release(self) -> None: ...


CaptureFactory = Callable[[], Capture]


@dataclass(frozen=True)
class ReconnectPolicy:
    """How a live source reopens its capture after the capture fails.

    The n-th consecutive attempt (n from 0) waits
    ``min(maximum, initial * multiplier**n)`` seconds, spread by
    ``+-jitter`` (a fraction) so that a fleet does not reconnect in lockstep,
    and never more than ``maximum``. After ``max_reconnects`` consecutive
    failed attempts the source gives up (``None``: it never does).
    """

    initial: float = 0.5
    maximum: float = 30.0
    multiplier: float = 2.0
    jitter: float = 0.2
    max_reconnects: int | None = None

    def __post_init__(self) -> None:
        if not self.initial >= 0:
            raise ValueError(f"ReconnectPolicy.initial must be >= 0 seconds, got {self.initial!r}")
        if not self.maximum >= self.initial:
            raise ValueError(f"ReconnectPolicy.maximum must be >= initial ({self.initial!r}), got {self.maximum!r}")
        if not self.multiplier >= 1:
            raise ValueError(f"ReconnectPolicy.multiplier must be >= 1, got {self.multiplier!r}")
        if not 0 <= self.jitter <= 1:
            raise ValueError(f"ReconnectPolicy.jitter must be between 0 and 1, got {self.jitter!r}")
        if self.max_reconnects is not None and self.max_reconnects < 0:
            raise ValueError(f"ReconnectPolicy.max_reconnects must be >= 0 or None, got {self.max_reconnects!r}")

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait before the ``attempt``-th (from 0) consecutive reconnect attempt."""
        base = self.maximum
        if attempt < 64:  # beyond that the exponential is past any sane cap
            base = min(self.maximum, self.initial * self.multiplier**attempt)
        spread = base * self.jitter
        value = base + (rng or random).uniform(-spread, spread)
        return min(self.maximum, max(0.0, value))


def mask_url(url: str) -> str:
    """``url`` with credentials replaced by ``***``: user info and secret-looking query values.

    Works on any text, so error messages that quote a URL can be masked too.
    """
    masked = _USERINFO_RE.sub(r"\1***@", url)
    return _SECRET_QUERY_RE.sub(r"\1***", masked)


def to_bgr(image: object, where: str) -> np.ndarray:
    """``image`` as BGR ``uint8`` (H, W, 3): grayscale is expanded, alpha dropped; else :class:`SourceError`."""
    if not isinstance(image, np.ndarray):
        raise SourceError(where, f"a frame must be a numpy array, got {type(image).__name__!r}")
    if image.dtype != np.uint8:
        raise SourceError(where, f"a frame must be uint8, got dtype {str(image.dtype)!r}")
    if image.ndim == 3 and image.shape[2] == 3:
        out = image
    elif image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (1, 4)):
        import cv2

        if image.ndim == 3 and image.shape[2] == 4:
            out = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
        else:
            out = cv2.cvtColor(np.ascontiguousarray(image.reshape(image.shape[:2])), cv2.COLOR_GRAY2BGR)
    else:
        raise SourceError(where, f"a frame must be (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), got {image.shape!r}")
    if out.shape[0] == 0 or out.shape[1] == 0:
        raise SourceError(where, f"a frame must not be empty, got shape {image.shape!r}")
    return out


class _SourceBase(abc.ABC):
    """Counters, the open/closed state, context manager and iteration shared by every source."""

    def __init__(self, name: str, live: bool) -> None:
        self.name = name
        self.live = live
        self.frames_read = 0
        self.frames_dropped = 0
        self.reconnects = 0
        self.errors = 0
        self._is_open = False

    def open(self) -> None:
        """Open the source; calling it again while open does nothing."""
        if not self._is_open:
            self._open()
            self._is_open = True

    def read(self) -> Frame | None:
        """The next frame, or ``None`` at the end of the stream (or once ``close()`` was called)."""
        if not self._is_open:
            raise SourceError(self.name, "the source is not open; call open() or use it in a 'with' block")
        frame = self._read()
        if frame is not None:
            self.frames_read += 1
        return frame

    def close(self) -> None:
        """Release the source and join its threads; calling it again does nothing."""
        if self._is_open:
            self._is_open = False
            self._close()

    def __enter__(self):
        self.open()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: "TracebackType | None"
    ) -> None:
        self.close()

    def __iter__(self) -> Iterator[Frame]:
        """Frames until the end of the stream; opens the source if needed (closing stays with the caller)."""
        self.open()
        while (frame := self.read()) is not None:
            yield frame

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, live={self.live})"

    @abc.abstractmethod
    def _open(self) -> None:
        """Acquire the underlying device, file or stream."""

    @abc.abstractmethod
    def _read(self) -> Frame | None:
        """The next frame, or ``None`` at the end."""

    @abc.abstractmethod
    def _close(self) -> None:
        """Release what ``_open`` acquired."""


# --------------------------------------------------------------------------- images


class ImageSource(_SourceBase):
    """Still images, decoded one per ``read()`` in the given order.

    A file that cannot be read or decoded is skipped with a logged warning and
    counted in ``errors``; with ``strict=True`` it raises :class:`SourceError`
    naming the file instead. ``labels`` maps a file's path (as listed) or its
    file name to a ground-truth label put on its frames.
    """

    def __init__(
        self,
        files: Iterable[str | Path],
        *,
        name: str = "images",
        strict: bool = False,
        labels: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(name, live=False)
        self.files: tuple[Path, ...] = tuple(Path(f) for f in files)
        if not self.files:
            raise SourceError(name, "no image files given")
        self.strict = strict
        self.labels = dict(labels) if labels is not None else None
        self._position = 0

    @classmethod
    def from_path(
        cls,
        path: str | Path,
        *,
        recursive: bool = False,
        strict: bool = False,
        labels: Mapping[str, str] | None = None,
    ) -> "ImageSource":
        """One image file, or the image files of a directory (sorted; its subdirectories too if ``recursive``)."""
        path = Path(path)
        if path.is_dir():
            candidates = path.rglob("*") if recursive else path.iterdir()
            files = sorted(p for p in candidates if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
            if not files:
                suffixes = ", ".join(sorted(IMAGE_SUFFIXES))
                where = "or its subdirectories " if recursive else ""
                raise SourceError(str(path), f"the directory {where}holds no image files ({suffixes})")
            return cls(files, name=str(path), strict=strict, labels=labels)
        if path.is_file():
            return cls([path], name=str(path), strict=strict, labels=labels)
        raise SourceError(str(path), "no such file or directory")

    @classmethod
    def from_glob(
        cls,
        pattern: str,
        *,
        recursive: bool = False,
        strict: bool = False,
        labels: Mapping[str, str] | None = None,
    ) -> "ImageSource":
        """The image files matching a glob pattern, sorted (``**`` spans directories if ``recursive``)."""
        matches = sorted(glob.glob(pattern, recursive=recursive))
        files = [Path(m) for m in matches if Path(m).suffix.lower() in IMAGE_SUFFIXES and Path(m).is_file()]
        if not files:
            raise SourceError(pattern, "no image files match this pattern")
        return cls(files, name=pattern, strict=strict, labels=labels)

    def __len__(self) -> int:
        return len(self.files)

    def _open(self) -> None:
        self._position = 0

    def _read(self) -> Frame | None:
        while self._position < len(self.files):
            path = self.files[self._position]
            self._position += 1
            try:
                image = _decode_image(path)
            except SourceError as exc:
                if self.strict:
                    raise
                self.errors += 1
                log.warning("skipping %s", exc)
                continue
            return Frame(
                image=image,
                index=self.frames_read,
                timestamp=time.monotonic(),
                source=self.name,
                path=str(path),
                label=self._label_of(path),
            )
        return None

    def _close(self) -> None:
        pass

    def _label_of(self, path: Path) -> str | None:
        if self.labels is None:
            return None
        return self.labels.get(str(path), self.labels.get(path.name))


def _decode_image(path: Path) -> np.ndarray:
    import cv2

    try:
        data = np.fromfile(path, dtype=np.uint8)  # not cv2.imread: it cannot tell "missing" from "corrupt"
    except OSError as exc:
        raise SourceError(str(path), f"cannot read the file: {exc.strerror or exc}") from exc
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None:
        raise SourceError(str(path), "cannot decode the image (corrupt, truncated or not an image)")
    return to_bgr(image, str(path))


# --------------------------------------------------------------------------- captures


class CaptureSource(_SourceBase):
    """Frames from a capture object (``read()`` / ``release()`` / ``isOpened()``, as ``cv2.VideoCapture``).

    ``capture_factory`` builds a new capture; it is called by ``open()`` and
    again for every reconnect. A non-live source reads the capture on the
    caller's thread and ends when a read fails. A live source captures on its
    own thread into a buffer of ``buffer_size`` frames that drops the oldest
    frame when full; when a read fails it reconnects under ``reconnect`` (or
    ends, if ``reconnect`` is ``None``), and ``read()`` raises
    :class:`SourceError` once the buffered frames are consumed if it gave up.
    ``open()`` of a live source waits at most ``connect_timeout`` seconds for
    the first connection, which is tried once: a source that never worked is
    a configuration error, reported now. ``unavailable`` is the reason given
    when the capture cannot be opened; ``path`` is put on every frame.
    """

    def __init__(
        self,
        name: str,
        capture_factory: CaptureFactory,
        *,
        live: bool,
        buffer_size: int = 2,
        connect_timeout: float = 10.0,
        reconnect: ReconnectPolicy | None = None,
        unavailable: str = "cannot be opened",
        path: str | None = None,
    ) -> None:
        super().__init__(name, live=live)
        if buffer_size < 1:
            raise ValueError(f"buffer_size must be >= 1, got {buffer_size!r}")
        if not connect_timeout > 0:
            raise ValueError(f"connect_timeout must be > 0 seconds, got {connect_timeout!r}")
        self._factory = capture_factory
        self.buffer_size = buffer_size
        self.connect_timeout = connect_timeout
        self.reconnect = reconnect
        self._unavailable = unavailable
        self._path = path
        self._capture: Capture | None = None  # not live: the capture read on the caller's thread
        self._captured = 0  # not live: frames read from the capture so far
        # Live: the running capture thread and its buffer. That thread is the only writer
        # of frames_dropped and reconnects; the reader is the only writer of frames_read.
        self._run: _LiveRun | None = None

    def _open(self) -> None:
        self._captured = 0
        if self.live:
            run = _LiveRun(self)
            self._run = run
            try:
                run.start(self.connect_timeout)
            except BaseException:
                self._run = None
                raise
        else:
            capture, failure = self._connect()
            if capture is None:
                raise failure
            self._capture = capture

    def _read(self) -> Frame | None:
        if self.live:
            item = self._run.get() if self._run is not None else None
        else:
            item = self._next_pulled()
        if item is None:
            return None
        image, index, timestamp = item
        return Frame(image=image, index=index, timestamp=timestamp, source=self.name, path=self._path)

    def _close(self) -> None:
        run, self._run = self._run, None
        if run is not None:
            run.stop()
        capture, self._capture = self._capture, None
        if capture is not None:
            _release(capture, self.name)

    def _connect(self) -> tuple[Capture, None] | tuple[None, SourceError]:
        """A new, opened capture, or the reason there is none."""
        try:
            capture = self._factory()
        except Exception as exc:  # a factory is user code or OpenCV; either may raise anything
            detail = mask_url(f"{type(exc).__name__}: {exc}")
            return None, SourceError(self.name, f"{self._unavailable} ({detail})")
        try:
            opened = bool(capture.isOpened())
        except Exception as exc:
            opened = False
            log.debug("%s: isOpened() raised %r", self.name, exc)
        if not opened:
            _release(capture, self.name)
            return None, SourceError(self.name, self._unavailable)
        return capture, None

    def _grab(self, capture: Capture) -> np.ndarray | None:
        """The next image from ``capture`` as BGR, or ``None`` when the read fails."""
        try:
            ok, image = capture.read()
        except Exception as exc:
            log.warning("%s: reading the capture raised %s: %s", self.name, type(exc).__name__, exc)
            return None
        if not ok or image is None:
            return None
        return to_bgr(image, self.name)

    def _next_pulled(self) -> tuple[np.ndarray, int, float] | None:
        if self._capture is None:
            return None
        image = self._grab(self._capture)
        if image is None:
            return None
        self._captured += 1
        return image, self._captured - 1, time.monotonic()


class _LiveRun:
    """One capture thread of a live :class:`CaptureSource`, from ``open()`` to ``close()``.

    Each ``open()`` gets a fresh run, so a thread abandoned in a blocked
    OpenCV call can never write into the buffer of a later run.
    """

    def __init__(self, source: CaptureSource) -> None:
        self.source = source
        self.cond = threading.Condition()  # guards buffer and finished
        self.buffer: collections.deque[tuple[np.ndarray, int, float]] = collections.deque()
        self.finished = False
        self.stopping = threading.Event()
        self.ready = threading.Event()
        self.failure: SourceError | None = None  # why the run ended early; read() raises it
        self.open_failure: SourceError | None = None
        self.captured = 0
        self.thread = threading.Thread(target=self._main, name=f"{THREAD_NAME_PREFIX}[{source.name}]", daemon=True)

    def start(self, connect_timeout: float) -> None:
        self.thread.start()
        if not self.ready.wait(connect_timeout):
            self.stop(join_timeout=0.5)
            raise SourceError(self.source.name, f"no connection within {connect_timeout:g} s")
        if self.open_failure is not None:
            self.stop()
            raise self.open_failure

    def stop(self, join_timeout: float = _JOIN_TIMEOUT_S) -> None:
        with self.cond:
            self.stopping.set()
            self.buffer.clear()
            self.cond.notify_all()
        self.thread.join(join_timeout)
        if self.thread.is_alive():
            # Only possible while OpenCV itself blocks (a hung open or read); the daemon
            # thread releases its capture and ends as soon as that call returns.
            log.warning("%s: capture thread still blocked in OpenCV after %.1f s", self.source.name, join_timeout)

    def get(self) -> tuple[np.ndarray, int, float] | None:
        """The oldest buffered frame; waits for one. ``None`` at the end or once stopped."""
        with self.cond:
            while not self.buffer and not self.finished and not self.stopping.is_set():
                self.cond.wait()
            if self.buffer:
                return self.buffer.popleft()
            if self.stopping.is_set() or self.failure is None:
                return None
        raise self.failure

    def _main(self) -> None:
        source = self.source
        capture, self.open_failure = source._connect()
        self.ready.set()
        try:
            while capture is not None and not self.stopping.is_set():
                try:
                    image = source._grab(capture)
                except SourceError as exc:  # the capture delivered something that is not an image
                    self.failure = exc
                    break
                if image is not None:
                    self._push(image)
                    continue
                _release(capture, source.name)
                capture = None
                if source.reconnect is not None:
                    capture = self._reconnect(source.reconnect)
        finally:
            if capture is not None:
                _release(capture, source.name)
            with self.cond:
                self.finished = True
                self.cond.notify_all()

    def _push(self, image: np.ndarray) -> None:
        item = (image, self.captured, time.monotonic())
        self.captured += 1
        with self.cond:
            if self.stopping.is_set():
                return
            if len(self.buffer) >= self.source.buffer_size:
                self.buffer.popleft()
                self.source.frames_dropped += 1
            self.buffer.append(item)
            self.cond.notify_all()

    def _reconnect(self, policy: ReconnectPolicy) -> Capture | None:
        name = self.source.name
        log.warning("%s: capture failed; reconnecting", name)
        attempt = 0
        while not self.stopping.is_set():
            if policy.max_reconnects is not None and attempt >= policy.max_reconnects:
                self.failure = SourceError(name, f"capture lost; gave up after {attempt} reconnect attempt(s)")
                log.error("%s", self.failure)
                return None
            delay = policy.delay(attempt, _RNG)
            log.info("%s: reconnect attempt %d in %.2f s", name, attempt + 1, delay)
            if self.stopping.wait(delay):
                return None
            attempt += 1
            self.source.reconnects += 1
            capture, failure = self.source._connect()
            if capture is not None:
                log.warning("%s: reconnected after %d attempt(s)", name, attempt)
                return capture
            log.info("%s: reconnect attempt %d failed: %s", name, attempt, failure.reason)
        return None


_RNG = random.Random()


def _release(capture: Capture, name: str) -> None:
    try:
        capture.release()
    except Exception as exc:  # releasing must never mask the error that got us here
        log.debug("%s: release() raised %r", name, exc)


class VideoSource(CaptureSource):
    """A video file, decoded one frame per ``read()``; with ``loop=True`` it starts over at the end."""

    def __init__(self, path: str | Path, *, loop: bool = False) -> None:
        self.path = Path(path)
        self.loop = loop
        super().__init__(
            str(path),
            self._open_file,
            live=False,
            unavailable="cannot decode the video (corrupt, truncated or an unsupported codec)",
            path=str(path),
        )

    @classmethod
    def from_file(cls, path: str | Path, *, loop: bool = False) -> "VideoSource":
        """A video file OpenCV can decode; a missing file raises :class:`SourceError` at once."""
        if not Path(path).is_file():
            raise SourceError(str(path), "no such video file")
        return cls(path, loop=loop)

    def _open_file(self) -> Capture:
        import cv2

        return cv2.VideoCapture(str(self.path))

    def _open(self) -> None:
        if not self.path.is_file():
            raise SourceError(str(self.path), "no such video file")
        super()._open()

    def _next_pulled(self) -> tuple[np.ndarray, int, float] | None:
        item = super()._next_pulled()
        if item is not None or not self.loop or self._captured == 0:
            return item
        # End of file: start over with a fresh decoder (seeking is unreliable for some containers).
        if self._capture is not None:
            _release(self._capture, self.name)
        self._capture, failure = self._connect()
        if self._capture is None:
            raise failure
        return super()._next_pulled()


class CameraSource(CaptureSource):
    """A local camera (V4L2 index or device path), captured live on the source's own thread."""

    @classmethod
    def from_device(
        cls,
        device: int | str,
        *,
        buffer_size: int = 2,
        connect_timeout: float = 5.0,
        reconnect: ReconnectPolicy | None = ReconnectPolicy(),
        capture_factory: CaptureFactory | None = None,
    ) -> "CameraSource":
        """``device`` is an index (``0``) or a device path (``/dev/video0``)."""

        def open_camera() -> Capture:
            import cv2

            return cv2.VideoCapture(device)

        return cls(
            f"{_CAMERA_PREFIX}{device}",
            capture_factory or open_camera,
            live=True,
            buffer_size=buffer_size,
            connect_timeout=connect_timeout,
            reconnect=reconnect,
            unavailable=f"camera {device} is not available (check the index or device path, "
            "and that no other process holds the camera)",
        )


class StreamSource(CaptureSource):
    """A network stream (RTSP, RTMP, HTTP MJPEG/HLS) captured live, reconnecting when it drops.

    The source's ``name`` is the URL with its credentials masked; the URL
    itself is never logged.
    """

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        buffer_size: int = 2,
        connect_timeout: float = 10.0,
        read_timeout: float = 10.0,
        reconnect: ReconnectPolicy | None = ReconnectPolicy(),
        capture_factory: CaptureFactory | None = None,
    ) -> "StreamSource":
        """``read_timeout`` bounds how long one read may block before the stream counts as dropped."""

        def open_stream() -> Capture:
            import cv2

            params = [
                cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, int(connect_timeout * 1000),
                cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(read_timeout * 1000),
            ]  # fmt: skip
            return cv2.VideoCapture(url, cv2.CAP_FFMPEG, params)

        return cls(
            mask_url(url),
            capture_factory or open_stream,
            live=True,
            buffer_size=buffer_size,
            connect_timeout=connect_timeout,
            reconnect=reconnect,
            unavailable="cannot connect to the stream (check the URL, the credentials and the network)",
        )


class _IterableCapture:
    """A capture over an iterable of arrays: ``read()`` fails at the end."""

    def __init__(self, frames: Iterable[np.ndarray]) -> None:
        self._iterator = iter(frames)

    def isOpened(self) -> bool:
        return True

    def read(self) -> tuple[bool, np.ndarray | None]:
        try:
            return True, next(self._iterator)
        except StopIteration:
            return False, None

    def release(self) -> None:
        close = getattr(self._iterator, "close", None)
        if close is not None:
            close()


class ArraySource(CaptureSource):
    """Frames from numpy arrays (BGR; grayscale and BGRA are converted), for tests and Python callers.

    With ``live=True`` the arrays are consumed on the source's own thread as
    fast as they come, exactly like a camera, and the oldest buffered frame is
    dropped when the reader falls behind. The source ends with the iterable.
    """

    def __init__(
        self, frames: Iterable[np.ndarray], name: str = "array", live: bool = False, *, buffer_size: int = 2
    ) -> None:
        super().__init__(name, lambda: _IterableCapture(frames), live=live, buffer_size=buffer_size)


# --------------------------------------------------------------------------- the CLI form


def open_source(
    spec: str,
    *,
    recursive: bool = False,
    strict: bool = False,
    labels: Mapping[str, str] | None = None,
    loop: bool = False,
    buffer_size: int | None = None,
    connect_timeout: float | None = None,
    reconnect: ReconnectPolicy | None = None,
) -> CaptureSource | ImageSource:
    """The source a ``--source`` string names; the source is returned unopened.

    ``camera:0`` or ``camera:/dev/video0``; ``rtsp://``, ``rtsps://``,
    ``rtmp://``, ``http://`` or ``https://`` URLs; a video file (by suffix); an
    image file, a directory of images or a glob pattern. Options apply only to
    the kinds that have them (images: ``recursive``, ``strict``, ``labels``;
    video files: ``loop``; cameras and streams: ``buffer_size``,
    ``connect_timeout``, ``reconnect``); giving one to another kind raises
    :class:`SourceError`. ``None`` means the kind's default.
    """
    kind = source_kind(spec)
    given = {
        "recursive": recursive,
        "strict": strict,
        "labels": labels is not None,
        "loop": loop,
        "buffer_size": buffer_size is not None,
        "connect_timeout": connect_timeout is not None,
        "reconnect": reconnect is not None,
    }
    allowed = _OPTIONS_BY_KIND[kind]
    for option, is_given in given.items():
        if is_given and option not in allowed:
            raise SourceError(mask_url(spec), f"option {option!r} does not apply to {kind} sources")
    live_options = {
        key: value
        for key, value in (("buffer_size", buffer_size), ("connect_timeout", connect_timeout), ("reconnect", reconnect))
        if value is not None
    }
    if kind == "camera":
        return CameraSource.from_device(_camera_device(spec), **live_options)
    if kind == "stream":
        return StreamSource.from_url(spec, **live_options)
    if kind == "video":
        return VideoSource.from_file(spec, loop=loop)
    if kind == "glob":
        return ImageSource.from_glob(spec, recursive=recursive, strict=strict, labels=labels)
    return ImageSource.from_path(spec, recursive=recursive, strict=strict, labels=labels)


_OPTIONS_BY_KIND = {
    "camera": {"buffer_size", "connect_timeout", "reconnect"},
    "stream": {"buffer_size", "connect_timeout", "reconnect"},
    "video": {"loop"},
    "images": {"recursive", "strict", "labels"},
    "glob": {"recursive", "strict", "labels"},
}


def source_kind(spec: str) -> str:
    """Which kind of source ``spec`` names: ``camera``, ``stream``, ``video``, ``images`` or ``glob``."""
    if not spec:
        raise SourceError(repr(spec), "empty source; use camera:N, a video file, a URL, an image directory or a glob")
    if spec.startswith(_CAMERA_PREFIX):
        return "camera"
    if _STREAM_RE.match(spec):
        return "stream"
    path = Path(spec)
    if path.is_dir():
        return "images"
    suffix = path.suffix.lower()
    if suffix in VIDEO_SUFFIXES:
        return "video"
    if suffix in IMAGE_SUFFIXES and path.is_file():
        return "images"
    if _GLOB_CHARS & set(spec):
        return "glob"
    if suffix in IMAGE_SUFFIXES or spec.endswith(("/", "\\")):
        return "images"  # missing: ImageSource.from_path says so
    if path.exists():
        raise SourceError(
            spec,
            f"cannot tell what kind of source this is from its suffix {suffix!r}; "
            f"video files end in {', '.join(sorted(VIDEO_SUFFIXES))} and images in {', '.join(sorted(IMAGE_SUFFIXES))}",
        )
    raise SourceError(
        mask_url(spec),
        "no such file or directory; a source is camera:N, camera:/dev/videoN, a video file, "
        "an rtsp:// or http(s):// URL, an image file or directory, or a glob such as 'images/*.jpg'",
    )


def _camera_device(spec: str) -> int | str:
    device = spec.removeprefix(_CAMERA_PREFIX)
    if device.isdigit():
        return int(device)
    if device.startswith("/"):
        return device
    raise SourceError(spec, f"a camera is camera:N or camera:/dev/videoN, got device {device!r}")


__all__ = [
    "ArraySource",
    "CameraSource",
    "Capture",
    "CaptureFactory",
    "CaptureSource",
    "Frame",
    "IMAGE_SUFFIXES",
    "ImageSource",
    "ReconnectPolicy",
    "Source",
    "SourceError",
    "StreamSource",
    "THREAD_NAME_PREFIX",
    "VIDEO_SUFFIXES",
    "VideoSource",
    "mask_url",
    "open_source",
    "source_kind",
    "to_bgr",
]
