"""Serving bundles to devices: an HTTP server with Range support, and the MQTT chunk server.

:class:`BundleServer` serves the ``.edgepkg`` files it is given (nothing
else: no directory listing, no path from the request reaches the file
system) with ``ETag``, ``Accept-Ranges`` and single-range ``206`` answers, so
an interrupted download resumes. In production any HTTP server or S3 bucket
that honours ``Range`` does the same job; the agent only needs a URL.

:class:`ChunkServer` answers ``ChunkRequest`` messages on
``<prefix>/+/ota/chunk/request`` with ``ChunkData`` on the asking device's
``ota/chunk/data`` topic, for devices that only reach the broker.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from edge_sdk.mqtt.client import MqttClient
from edge_sdk.mqtt.schemas import ChunkData, ChunkRequest, receive
from edge_sdk.ota.manager import file_sha256

log = logging.getLogger(__name__)

_RANGE_RE = re.compile(r"bytes=(\d*)-(\d*)")


class _Handler(BaseHTTPRequestHandler):
    server: "_Server"
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt: str, *args) -> None:
        log.debug("%s %s", self.address_string(), fmt % args)

    def do_HEAD(self) -> None:
        self._serve(body=False)

    def do_GET(self) -> None:
        self._serve(body=True)

    def _serve(self, body: bool) -> None:
        entry = self.server.files.get(self.path.split("?", 1)[0])
        if entry is None:
            self.send_error(HTTPStatus.NOT_FOUND, "no such bundle")
            return
        path, etag = entry
        size = path.stat().st_size
        start, end = 0, size - 1
        status = HTTPStatus.OK
        wanted = self.headers.get("Range")
        if_range = self.headers.get("If-Range")
        if wanted and (if_range is None or if_range == etag):
            match = _RANGE_RE.fullmatch(wanted.strip())
            if match is None or match.groups() == ("", ""):
                self.send_error(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE, "only one bytes=a-b range")
                return
            first, last = match.groups()
            if first:
                start, end = int(first), min(int(last), size - 1) if last else size - 1
            else:  # suffix range: the last N bytes
                start, end = max(size - int(last), 0), size - 1
            if start >= size or start > end:
                self.send_response(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status = HTTPStatus.PARTIAL_CONTENT
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("ETag", etag)
        self.send_header("Content-Length", str(end - start + 1))
        if status == HTTPStatus.PARTIAL_CONTENT:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.end_headers()
        self.server.requests.append((self.path, start if status == HTTPStatus.PARTIAL_CONTENT else None))
        if not body:
            return
        limit = self.server.rate_limit
        with open(path, "rb") as fh:
            fh.seek(start)
            left = end - start + 1
            try:
                while left > 0:
                    block = fh.read(min(left, 256 * 1024 if limit is None else max(1, limit // 20)))
                    if not block:
                        break
                    self.wfile.write(block)
                    left -= len(block)
                    self.server.bytes_served += len(block)
                    if limit is not None:
                        self.server.throttle.wait(len(block) / limit)
            except (BrokenPipeError, ConnectionResetError):
                log.debug("client went away during %s", self.path)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # socketserver's default listen backlog is 5: a rollout's devices arrive at once, and SYNs beyond the
    # backlog are dropped and retried after 1, 3, 7 s (measured: 500 devices took 38 s instead of seconds).
    request_queue_size = 1024
    files: dict[str, tuple[Path, str]]
    rate_limit: int | None
    throttle: threading.Event
    bytes_served: int
    requests: list[tuple[str, int | None]]


class BundleServer:
    """Serves bundles at ``http://<host>:<port>/bundles/<sha256>/<file name>`` until :meth:`close`.

    ``rate_limit`` (bytes per second, per connection) slows downloads, for
    demos and tests that need to catch one mid-way.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, advertise: str | None = None,
                 rate_limit: int | None = None) -> None:
        self._server = _Server((host, port), _Handler)
        self._server.files = {}
        self._server.rate_limit = rate_limit
        self._server.throttle = threading.Event()
        self._server.bytes_served = 0
        self._server.requests = []
        self.host = advertise or (host if host not in ("0.0.0.0", "") else "127.0.0.1")
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="edge-sdk-bundle-server",
                                        daemon=True)
        self._thread.start()

    def add(self, path: str | os.PathLike, sha256: str | None = None) -> str:
        """Serve ``path``; returns its URL. The sha256 (computed when not given) doubles as the ETag."""
        path = Path(path).resolve()
        digest = sha256 or file_sha256(path)
        route = f"/bundles/{digest}/{path.name}"
        self._server.files[route] = (path, f'"{digest}"')
        return f"http://{self.host}:{self.port}{route}"

    @property
    def bytes_served(self) -> int:
        """Body bytes sent so far, over all requests."""
        return self._server.bytes_served

    @property
    def requests(self) -> list[tuple[str, int | None]]:
        """``(path, range start or None)`` of every answered GET/HEAD, in order."""
        return list(self._server.requests)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def __enter__(self) -> "BundleServer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ChunkServer:
    """Answers chunk requests for the jobs it was told about (:meth:`add_job`).

    A rollout sends the same bundle to many devices, which ask for the same
    chunks; each encoded chunk (header, sha256, data) is therefore built once
    and kept, up to ``cache_bytes`` in all, so answering a request costs one
    publish. Jobs whose bundles fit are encoded up front by :meth:`add_job`.
    """

    def __init__(self, client: MqttClient, cache_bytes: int = 256 << 20, chunk_bytes: int = 1 << 20) -> None:
        self._client = client
        self._jobs: dict[str, tuple[Path, int]] = {}
        self._cache: dict[tuple[str, int, int], bytes] = {}
        self._cached = 0
        self._cache_limit = cache_bytes
        self._chunk_bytes = chunk_bytes
        self._lock = threading.Lock()
        self.served = 0
        self.refused = 0
        client.subscribe(client.topics.subscription("ota_chunk_request"), self._on_request)

    def add_job(self, job_id: str, path: str | os.PathLike) -> None:
        path = Path(path)
        size = path.stat().st_size
        with self._lock:
            self._jobs[job_id] = (path, size)
        if self._cached + size <= self._cache_limit:
            for offset in range(0, size, self._chunk_bytes):
                self._payload(job_id, path, size, offset, self._chunk_bytes)

    def _payload(self, job_id: str, path: Path, size: int, offset: int, length: int) -> bytes:
        key = (job_id, offset, min(length, size - offset))
        with self._lock:
            payload = self._cache.get(key)
        if payload is not None:
            return payload
        with open(path, "rb") as fh:
            fh.seek(offset)
            data = fh.read(key[2])
        payload = ChunkData(job_id, offset, data).to_payload()
        with self._lock:
            if self._cached + len(payload) <= self._cache_limit and key not in self._cache:
                self._cache[key] = payload
                self._cached += len(payload)
        return payload

    def _on_request(self, topic: str, payload: bytes) -> None:
        received = receive(self._client.topics, ChunkRequest, topic, payload, log)
        if received is None:
            self.refused += 1
            return
        device, request = received
        with self._lock:
            job = self._jobs.get(request.job_id)
        if job is None or request.offset >= job[1]:
            self.refused += 1
            log.warning("chunk request from %s for unknown job %r or offset %d past the end", device,
                        request.job_id, request.offset)
            return
        path, size = job
        data = self._payload(request.job_id, path, size, request.offset, request.length)
        self._client.publish(self._client.topics.ota_chunk_data(device), data, qos=1)
        self.served += 1
