"""Fetching a bundle into ``download/<job>.part``: HTTP(S) with Range resume, or chunks over MQTT.

Both write the same partial file and report ``bytes_done`` only for a prefix
that is written *and* fsynced, so the caller can persist it and a restart
resumes from there (the file is first truncated to that length: anything
past it was never confirmed). Neither trusts the sender: a download can never
grow past the job's size, an HTTP resume is made conditional on the ETag the
earlier part came from (``If-Range``; a changed file restarts from zero), and
every MQTT chunk carries its own sha256 that is checked before it is written.
The whole file's sha256 is checked afterwards, in the ``verifying`` state.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol

from edge_sdk.mqtt.schemas import ChunkData, ChunkRequest
from edge_sdk.ota.store import OtaError

log = logging.getLogger(__name__)

Progress = Callable[[int, "str | None"], None]  # (verified bytes on disk, etag)

BLOCK = 256 * 1024
# MQTT chunks: the per-message costs (two sha256, the request round trip, thread hand-offs) are paid per chunk,
# so chunks are as large as the format allows; 8 in flight keep a link busy with at most 8 MiB buffered.
CHUNK_BYTES = 1024 * 1024
CHECKPOINT_BYTES = 4 << 20
CHECKPOINT_S = 0.5


class Cancelled(OtaError):
    """The agent is stopping; the download stops where it is and resumes on the next start."""


def open_partial(path: Path, verified: int) -> int:
    """Create or truncate the partial file to its ``verified`` prefix; returns where to resume."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "ab") as fh:
        size = fh.tell()
        if size < verified:  # the record claims more than the file holds: the file was lost; start over
            log.warning("%s holds %d bytes but %d were recorded; downloading again from 0", path, size, verified)
            verified = 0
        fh.truncate(verified)
        os.fsync(fh.fileno())
    return verified


class _Checkpoints:
    """Calls ``progress`` with fsynced prefixes, at most every CHECKPOINT_BYTES or CHECKPOINT_S."""

    def __init__(self, fh, progress: Progress, start: int) -> None:
        self._fh = fh
        self._progress = progress
        self._last_bytes = start
        self._last_time = time.monotonic()

    def maybe(self, done: int, etag: str | None, force: bool = False) -> None:
        now = time.monotonic()
        if force or done - self._last_bytes >= CHECKPOINT_BYTES or now - self._last_time >= CHECKPOINT_S:
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._last_bytes, self._last_time = done, now
            self._progress(done, etag)


@dataclass
class HttpDownloader:
    """GET with ``Range: bytes=<done>-``; retries transient failures with capped backoff, resuming each time."""

    timeout_s: float = 15.0
    attempts: int = 6
    backoff_max_s: float = 8.0

    def fetch(self, url: str, path: Path, total: int, verified: int, etag: str | None,
              progress: Progress, cancel: threading.Event) -> None:
        done = open_partial(path, verified)
        failures = 0
        while done < total:
            if cancel.is_set():
                raise Cancelled("download interrupted by shutdown")
            try:
                done, etag = self._once(url, path, total, done, etag, progress, cancel)
                failures = 0
            except (urllib.error.URLError, OSError, TimeoutError) as exc:
                if isinstance(exc, urllib.error.HTTPError) and exc.code not in (408, 429, 500, 502, 503, 504):
                    raise OtaError(f"bundle download from {url} refused: HTTP {exc.code} {exc.reason}") from exc
                failures += 1
                if failures >= self.attempts:
                    raise OtaError(f"bundle download from {url} failed {failures} times in a row, at byte "
                                   f"{done} of {total}: {getattr(exc, 'reason', exc)}") from exc
                delay = min(self.backoff_max_s, 0.5 * 2 ** (failures - 1))
                log.warning("download from %s interrupted at %d/%d bytes (%s); resuming in %.1f s",
                            url, done, total, getattr(exc, "reason", exc), delay)
                if cancel.wait(delay):
                    raise Cancelled("download interrupted by shutdown") from exc
                done = open_partial(path, done)

    def _once(self, url: str, path: Path, total: int, done: int, etag: str | None, progress: Progress,
              cancel: threading.Event) -> tuple[int, str | None]:
        request = urllib.request.Request(url, headers={"User-Agent": "edge-sdk-agent"})
        if done:
            request.add_header("Range", f"bytes={done}-")
            if etag:
                request.add_header("If-Range", etag)
        with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
            status = response.status
            new_etag = response.headers.get("ETag")
            if done and status == 200:  # the server ignored the range, or the file changed (If-Range failed)
                log.warning("%s: the server sent the whole file instead of resuming at %d (file changed or no "
                            "Range support); starting over", url, done)
                done = open_partial(path, 0)
            elif status == 206:
                start = _content_range_start(response.headers.get("Content-Range"), url)
                if start != done:
                    raise OtaError(f"{url}: asked for bytes from {done}, the server sent from {start}")
            elif status != 200:
                raise OtaError(f"{url}: unexpected HTTP status {status}")
            etag = new_etag or etag
            with open(path, "r+b") as fh:
                fh.seek(done)
                checkpoints = _Checkpoints(fh, progress, done)
                while True:
                    if cancel.is_set():
                        checkpoints.maybe(done, etag, force=True)
                        raise Cancelled("download interrupted by shutdown")
                    block = response.read(min(BLOCK, total - done + 1))
                    if not block:
                        break
                    if done + len(block) > total:
                        raise OtaError(f"{url}: the server sent more than the job's {total} bytes; "
                                       "the job or the server is wrong")
                    fh.write(block)
                    done += len(block)
                    checkpoints.maybe(done, etag)
                checkpoints.maybe(done, etag, force=True)
        if done < total:
            raise ConnectionError(f"connection closed at {done} of {total} bytes")
        return done, etag


def _content_range_start(header: str | None, url: str) -> int:
    # "bytes 100-199/1000"
    try:
        unit, rest = header.split(" ", 1)
        start = int(rest.split("-", 1)[0])
        if unit != "bytes":
            raise ValueError(unit)
        return start
    except (AttributeError, ValueError) as exc:
        raise OtaError(f"{url}: malformed Content-Range {header!r} in a 206 response") from exc


class ChunkTransport(Protocol):
    """What the MQTT chunk downloader needs from the agent: send one request."""

    def request_chunk(self, request: ChunkRequest) -> None: ...


class ChunkDownloader:
    """Fetches a bundle as ``ChunkData`` messages, keeping ``window`` requests in flight.

    :meth:`deliver` is called (from the MQTT thread) with every decoded chunk
    for this device; chunks of another job, at an offset not asked for, or of
    the wrong length are dropped. Requests that go unanswered for
    ``retry_s`` are sent again; after ``stall_s`` without a single useful
    chunk the download fails.
    """

    def __init__(self, transport: ChunkTransport, chunk_bytes: int = CHUNK_BYTES, window: int = 8,
                 retry_s: float = 3.0, stall_s: float = 60.0) -> None:
        self._transport = transport
        self.chunk_bytes = chunk_bytes
        self.window = window
        self.retry_s = retry_s
        self.stall_s = stall_s
        self._inbox: queue.Queue[ChunkData] = queue.Queue(maxsize=2 * window)
        self._job_id: str | None = None
        self.dropped = 0

    def deliver(self, chunk: ChunkData) -> None:
        if chunk.job_id != self._job_id:
            self.dropped += 1
            log.debug("dropped a chunk of job %r (downloading %r)", chunk.job_id, self._job_id)
            return
        try:
            self._inbox.put_nowait(chunk)
        except queue.Full:  # the sender ignores the window; the request will be repeated
            self.dropped += 1

    def fetch(self, job_id: str, path: Path, total: int, verified: int, progress: Progress,
              cancel: threading.Event) -> None:
        done = open_partial(path, verified)
        while not self._inbox.empty():
            self._inbox.get_nowait()
        self._job_id = job_id
        try:
            with open(path, "r+b") as fh:
                self._run(job_id, fh, total, done, progress, cancel)
        finally:
            self._job_id = None

    def _run(self, job_id: str, fh, total: int, done: int, progress: Progress, cancel: threading.Event) -> None:
        checkpoints = _Checkpoints(fh, progress, done)
        received: dict[int, bytes] = {}  # out-of-order chunks beyond the contiguous prefix
        asked: dict[int, float] = {}  # offset -> when requested
        next_offset = done
        last_useful = time.monotonic()
        while done < total:
            if cancel.is_set():
                checkpoints.maybe(done, None, force=True)
                raise Cancelled("download interrupted by shutdown")
            now = time.monotonic()
            for offset, at in list(asked.items()):
                if now - at >= self.retry_s:
                    self._ask(job_id, offset, total, asked)
            while len(asked) + len(received) < self.window and next_offset < total:
                self._ask(job_id, next_offset, total, asked)
                next_offset += self.chunk_bytes
            try:
                chunk = self._inbox.get(timeout=0.2)
            except queue.Empty:
                if time.monotonic() - last_useful > self.stall_s:
                    raise OtaError(f"no chunk data for job {job_id!r} from the fleet for {self.stall_s:.0f} s "
                                   f"(at byte {done} of {total}); is the bundle being served over MQTT?") from None
                continue
            expected = min(self.chunk_bytes, total - chunk.offset) if chunk.offset < total else -1
            if chunk.offset not in asked or len(chunk.data) != expected:
                self.dropped += 1
                continue
            del asked[chunk.offset]
            received[chunk.offset] = chunk.data
            last_useful = time.monotonic()
            while done in received:
                data = received.pop(done)
                fh.seek(done)
                fh.write(data)
                done += len(data)
            checkpoints.maybe(done, None)
        checkpoints.maybe(done, None, force=True)

    def _ask(self, job_id: str, offset: int, total: int, asked: dict[int, float]) -> None:
        asked[offset] = time.monotonic()
        self._transport.request_chunk(ChunkRequest(job_id, offset, min(self.chunk_bytes, total - offset)))
