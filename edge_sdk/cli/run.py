"""``edge-sdk run BUNDLE --source ...``: run a bundle over cameras, streams, videos or images into sinks."""

from __future__ import annotations

import argparse
import sys
import threading
import time

from edge_sdk.cli._args import add_json, add_model_options, load_model, positive_int
from edge_sdk.cli._output import emit_json


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "run",
        help="run a bundle over camera, stream, video or image sources",
        description="Verifies and loads the bundle, then runs the pipeline: sources are decoded and preprocessed "
        "concurrently with inference; results go to the sinks. Sources: camera:0, /dev/video0, rtsp://..., "
        "http(s)://..., video.mp4, an image file, a directory or a glob. Sinks: out.jsonl, - (stdout JSON lines), "
        "images:DIR (annotated JPEGs), out.mp4 (annotated video). Ctrl-C stops cleanly.",
    )
    add_model_options(p)
    p.add_argument("--source", action="append", required=True, metavar="SPEC",
                   help="input source (repeat for several cameras)")
    p.add_argument("--sink", action="append", default=[], metavar="SPEC", help="output sink (repeatable)")
    p.add_argument("--max-batch", type=positive_int, default=1,
                   help="batch frames from several sources into one inference call (model needs a batch dimension)")
    p.add_argument("--max-wait-ms", type=float, default=5.0, help="longest wait for a batch to fill (default 5)")
    p.add_argument("--max-frames", type=positive_int, default=None, help="stop after this many results")
    p.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    p.add_argument("--loop", action="store_true", help="loop video files")
    add_json(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from edge_sdk.vision.pipeline import Pipeline, PipelineConfig
    from edge_sdk.vision.sinks import open_sink
    from edge_sdk.vision.sources import open_source

    config = PipelineConfig(max_batch=args.max_batch, max_wait_ms=args.max_wait_ms)
    model = load_model(args)
    with model:
        sources = [open_source(spec, loop=args.loop) if _is_video(spec) else open_source(spec) for spec in args.source]
        if args.max_frames is not None:  # exact: the sources stop handing out frames at the limit
            budget = _Budget(args.max_frames)
            sources = [_Limited(source, budget) for source in sources]
        sinks = [open_sink(spec) for spec in args.sink]
        pipeline = Pipeline(model, sources, sinks, config)
        if not args.json:
            print(f"running {model!r} on {', '.join(s.name for s in sources)}", file=sys.stderr)
        deadline = time.monotonic() + args.duration if args.duration else None
        interrupted = False
        pipeline.start()
        try:
            while not pipeline.wait(timeout=1.0):
                if not args.json:
                    _progress(pipeline)
                if deadline is not None and time.monotonic() >= deadline:
                    break
        except KeyboardInterrupt:
            interrupted = True
        finally:
            pipeline.stop()
    stats = pipeline.stats.snapshot(sources)
    if args.json:
        emit_json(stats | {"model": f"{model.name} {model.version}", "provider": model.provider})
    else:
        _progress(pipeline, final=True)
    return 130 if interrupted else 0


class _Budget:
    """Frames left to hand out, shared by all the sources of one run."""

    def __init__(self, frames: int) -> None:
        self.left = frames
        self.lock = threading.Lock()

    def take(self) -> bool:
        with self.lock:
            if self.left <= 0:
                return False
            self.left -= 1
            return True


class _Limited:
    """A source that ends once the run's frame budget is spent (``--max-frames``)."""

    def __init__(self, source, budget: _Budget) -> None:
        self._source = source
        self._budget = budget

    def __getattr__(self, name: str):  # name, live, frames_read, frames_dropped, ... of the wrapped source
        return getattr(self._source, name)

    def open(self) -> None:
        self._source.open()

    def close(self) -> None:
        self._source.close()

    def __enter__(self):
        self.open()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def read(self):
        return self._source.read() if self._budget.take() else None

    def __iter__(self):
        while (frame := self.read()) is not None:
            yield frame


def _is_video(spec: str) -> bool:
    from edge_sdk.vision.sources import source_kind

    return source_kind(spec) == "video"


def _progress(pipeline, final: bool = False) -> None:
    s = pipeline.stats.snapshot(pipeline.sources)
    lat = s["latency_ms"]
    line = (f"{s['frames_out']} frames  {s['fps']:.1f} fps  latency p50 {lat['p50']:.1f} ms  p95 {lat['p95']:.1f} ms  "
            f"p99 {lat['p99']:.1f} ms  dropped {s['dropped']}  errors {s['errors']}")
    print("\r" + line, end="\n" if final else "", file=sys.stderr, flush=True)
