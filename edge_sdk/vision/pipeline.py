"""The threaded vision pipeline: sources -> preprocess -> inference -> decode -> sinks.

Threads and who owns them (all started by :meth:`Pipeline.start`, all stopped
and joined by :meth:`Pipeline.stop`):

* one **capture** thread per source reads (decodes) frames and preprocesses
  them for the current model, so decoding and resizing overlap inference;
* one **inference** thread owns the engine: it takes prepared frames from a
  bounded queue, batches frames from several sources into one engine call
  when the model has a batch dimension (up to ``max_batch``, waiting at most
  ``max_wait_ms`` for the batch to fill), and runs them;
* one **output** thread decodes results and hands them to the sinks.

Queues are bounded. File sources block when the pipeline is busy and never
drop a frame; live sources keep capturing into their own drop-oldest buffer,
so a slow model sees the freshest frames and the drops are counted.

:meth:`Pipeline.swap_model` replaces the model between two engine calls. A
frame prepared for the old model is prepared again for the new one, so no
frame is lost or run through the wrong preprocessing.
"""

from __future__ import annotations

import collections
import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np

from edge_sdk.errors import EdgeSDKError

if TYPE_CHECKING:
    from edge_sdk.model import Model
    from edge_sdk.vision.sinks import Sink
    from edge_sdk.vision.sources import Frame, Source

log = logging.getLogger(__name__)

_STOP = object()


@dataclass(frozen=True)
class PipelineConfig:
    """Queue sizes and batching; every option named and typed in one place."""

    queue_size: int = 4
    max_batch: int = 1
    max_wait_ms: float = 5.0
    latency_window: int = 2048  # frames kept for latency percentiles

    def __post_init__(self) -> None:
        if self.queue_size < 1:
            raise EdgeSDKError(f"queue_size must be >= 1, got {self.queue_size!r}")
        if self.max_batch < 1:
            raise EdgeSDKError(f"max_batch must be >= 1, got {self.max_batch!r}")
        if self.max_wait_ms < 0:
            raise EdgeSDKError(f"max_wait_ms must be >= 0, got {self.max_wait_ms!r}")


@dataclass
class _Item:
    frame: "Frame"
    tensor: np.ndarray
    transform: object
    model: "Model"


@dataclass
class PipelineStats:
    """Counters and latency percentiles, safe to read while the pipeline runs."""

    frames_in: int = 0
    frames_out: int = 0
    errors: int = 0
    batches: int = 0
    swaps: int = 0
    reprepared: int = 0
    started: float = field(default_factory=time.monotonic)
    latencies_ms: collections.deque = field(default_factory=lambda: collections.deque(maxlen=2048))
    inference_ms: collections.deque = field(default_factory=lambda: collections.deque(maxlen=2048))

    def percentiles(self) -> dict[str, float]:
        values = np.fromiter(self.latencies_ms, dtype=np.float64)
        if values.size == 0:
            return {"p50": 0.0, "p95": 0.0, "p99": 0.0}
        p50, p95, p99 = np.percentile(values, [50, 95, 99])
        return {"p50": float(p50), "p95": float(p95), "p99": float(p99)}

    def snapshot(self, sources: Sequence["Source"] = ()) -> dict:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        return {
            "frames_in": self.frames_in,
            "frames_out": self.frames_out,
            "fps": self.frames_out / elapsed,
            "errors": self.errors,
            "batches": self.batches,
            "swaps": self.swaps,
            "dropped": sum(getattr(s, "frames_dropped", 0) for s in sources),
            "latency_ms": self.percentiles(),
            "inference_ms_p50": float(np.median(np.fromiter(self.inference_ms, np.float64)))
            if self.inference_ms else 0.0,
        }


def _single_threaded_opencv() -> None:
    """Stop OpenCV's own thread pool from competing with the engine's threads.

    The pipeline already overlaps decoding with inference on its own threads;
    OpenCV parallelising each resize on top of that steals the cores the
    engine was given (measured: invoke 5.1 ms inside the pipeline vs 3.8 ms
    bare for MobileNetV2 on 2 cores).
    """
    import cv2

    cv2.setNumThreads(1)


class Pipeline:
    """Runs a model over one or more sources into sinks. Use as a context manager or start()/stop()."""

    def __init__(
        self,
        model: "Model",
        sources: Sequence["Source"],
        sinks: Sequence["Sink"] = (),
        config: PipelineConfig = PipelineConfig(),
        on_result: Callable | None = None,
    ) -> None:
        if not sources:
            raise EdgeSDKError("a pipeline needs at least one source")
        self._model = model
        self.sources = list(sources)
        self.sinks = list(sinks)
        self.config = config
        self.stats = PipelineStats(latencies_ms=collections.deque(maxlen=config.latency_window))
        self._on_result = on_result
        self._prepared: queue.Queue = queue.Queue(maxsize=config.queue_size * max(1, config.max_batch))
        self._results: queue.Queue = queue.Queue(maxsize=config.queue_size)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._swap_lock = threading.Lock()
        self._pending_swap: tuple["Model", threading.Event] | None = None
        self._sources_left = len(self.sources)
        self._sources_lock = threading.Lock()
        self._done = threading.Event()
        self._failure: BaseException | None = None
        self._stats_lock = threading.Lock()

    def _count(self, counter: str, n: int = 1) -> None:
        with self._stats_lock:
            setattr(self.stats, counter, getattr(self.stats, counter) + n)

    # -- lifecycle ------------------------------------------------------------

    @property
    def model(self) -> "Model":
        return self._model

    def start(self) -> "Pipeline":
        if self._threads:
            raise EdgeSDKError("pipeline already started")
        opened = []
        try:
            for source in self.sources:
                source.open()
                opened.append(source)
        except BaseException:
            for source in opened:
                source.close()
            raise
        _single_threaded_opencv()
        self.stats.started = time.monotonic()
        self._spawn("edge-infer", self._inference_loop)
        self._spawn("edge-output", self._output_loop)
        for source in self.sources:
            self._spawn(f"edge-capture-{source.name}", self._capture_loop, source)
        return self

    def _spawn(self, name: str, target, *args) -> None:
        thread = threading.Thread(target=self._guard, args=(target, *args), name=name, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _guard(self, target, *args) -> None:
        try:
            target(*args)
        except BaseException as exc:  # a stage died: stop everything and re-raise from wait()/stop()
            log.exception("pipeline stage %s failed", threading.current_thread().name)
            self._failure = exc
            self._stop.set()
            self._done.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until every file source is exhausted and its results written (or stop() is called)."""
        finished = self._done.wait(timeout)
        if self._failure is not None:
            raise EdgeSDKError(f"pipeline failed: {self._failure}") from self._failure
        return finished

    def stop(self, timeout: float = 10.0) -> None:
        """Stop capturing, let in-flight frames finish, join every thread, close sources and sinks."""
        self._stop.set()
        for source in self.sources:
            if source.live:  # wakes a capture thread waiting on the live buffer; safe, the source owns its thread
                source.close()
        for thread in self._threads:
            if thread.name.startswith("edge-capture"):
                thread.join(timeout)
        for source in self.sources:  # file sources close only after their reader has stopped using them
            if not source.live:
                source.close()
        for thread in self._threads:
            thread.join(timeout)
        stuck = [t.name for t in self._threads if t.is_alive()]
        for sink in self.sinks:
            sink.close()
        self._threads.clear()
        if stuck:
            log.error("pipeline threads did not stop within %.0f s: %s", timeout, ", ".join(stuck))

    def __enter__(self) -> "Pipeline":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def run(self) -> dict:
        """Start, run until all sources end, stop; returns the final stats snapshot."""
        with self:
            self.wait()
        return self.stats.snapshot(self.sources)

    # -- model swap -------------------------------------------------------------

    def swap_model(self, new_model: "Model", timeout: float | None = 30.0) -> "Model":
        """Replace the running model between two frames; returns the old model (not closed).

        Blocks until the inference thread has switched. Frames already prepared
        for the old model are prepared again for the new one, so none is lost.
        """
        if not self._threads:
            old, self._model = self._model, new_model
            return old
        done = threading.Event()
        with self._swap_lock:
            old = self._model
            self._pending_swap = (new_model, done)
        if not done.wait(timeout):
            raise EdgeSDKError(f"model swap did not happen within {timeout} s")
        return old

    def _apply_pending_swap(self) -> None:
        with self._swap_lock:
            pending, self._pending_swap = self._pending_swap, None
        if pending is not None:
            new_model, done = pending
            self._model = new_model
            self.stats.swaps += 1
            log.info("pipeline now runs %r", new_model)
            done.set()

    # -- stages -----------------------------------------------------------------

    def _capture_loop(self, source: "Source") -> None:
        try:
            while not self._stop.is_set():
                frame = source.read()
                if frame is None:
                    break
                model = self._model
                try:
                    tensor, transform = model.prepare(frame.image)
                except EdgeSDKError as exc:
                    self._count("errors")
                    log.warning("%s frame %d: cannot preprocess: %s", source.name, frame.index, exc)
                    continue
                self._count("frames_in")
                if not self._put_blocking(self._prepared, _Item(frame, tensor, transform, model), drop_on_stop=True):
                    break
        finally:
            with self._sources_lock:
                self._sources_left -= 1
                last = self._sources_left == 0
            if last:
                self._put_blocking(self._prepared, _STOP)

    def _put_blocking(self, q: queue.Queue, item, drop_on_stop: bool = False) -> bool:
        """Put with backpressure; gives up only if a stage failed (or on stop, when asked to)."""
        while self._failure is None:
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                if drop_on_stop and self._stop.is_set():
                    return False
        return False

    def _next_batch(self) -> list | None:
        item = self._prepared.get()
        if item is _STOP:
            return None
        batch = [item]
        limit = self._batch_limit()
        if limit > 1:
            deadline = time.monotonic() + self.config.max_wait_ms / 1000.0
            while len(batch) < limit:
                remaining = deadline - time.monotonic()
                try:
                    nxt = self._prepared.get(timeout=max(remaining, 0)) if remaining > 0 else self._prepared.get_nowait()
                except queue.Empty:
                    break
                if nxt is _STOP:
                    self._prepared.put(_STOP)  # let the loop end after this batch
                    break
                batch.append(nxt)
        return batch

    def _batch_limit(self) -> int:
        fixed = self._model.batch_size
        if fixed is None:
            return self.config.max_batch
        return 1 if fixed == 1 else min(fixed, self.config.max_batch)

    def _inference_loop(self) -> None:
        while True:
            self._apply_pending_swap()
            batch = self._next_batch()
            if batch is None:
                break
            self._apply_pending_swap()
            model = self._model
            for item in batch:
                if item.model is not model:  # prepared before a swap: prepare again for the new model
                    item.tensor, item.transform = model.prepare(item.frame.image)
                    item.model = model
                    self.stats.reprepared += 1
            tensor = batch[0].tensor if len(batch) == 1 else np.concatenate([i.tensor for i in batch])
            fixed = model.batch_size
            if fixed is not None and fixed > len(batch):  # pad a fixed-size batch with copies of the last frame
                tensor = np.concatenate([tensor, np.repeat(tensor[-1:], fixed - len(batch), axis=0)])
            t0 = time.perf_counter()
            try:
                outputs = model.run_prepared(tensor)
            except EdgeSDKError as exc:
                self._count("errors", len(batch))
                log.warning("inference failed for %d frame(s): %s", len(batch), exc)
                continue
            self.stats.inference_ms.append((time.perf_counter() - t0) * 1e3)
            self.stats.batches += 1
            self._put_blocking(self._results, (batch, outputs, model))
        self._put_blocking(self._results, _STOP)

    def _output_loop(self) -> None:
        while True:
            entry = self._results.get()
            if entry is _STOP:
                break
            batch, outputs, model = entry
            try:
                predictions = model.decode(outputs, [item.transform for item in batch])
            except EdgeSDKError as exc:
                self._count("errors", len(batch))
                log.warning("decoding failed for %d frame(s): %s", len(batch), exc)
                continue
            now = time.monotonic()
            for item, prediction in zip(batch, predictions):
                for sink in self.sinks:
                    try:
                        sink.write(item.frame, prediction)
                    except (OSError, EdgeSDKError) as exc:  # a full disk or a closed stream must not stop inference
                        self._count("errors")
                        log.warning("sink %s failed on %s frame %d: %s", type(sink).__name__,
                                    item.frame.source, item.frame.index, exc)
                if self._on_result is not None:
                    self._on_result(item.frame, prediction)
                self.stats.latencies_ms.append((now - item.frame.timestamp) * 1e3)
                self.stats.frames_out += 1
        self._done.set()
