"""What telemetry costs the pipeline: frames per second with a TelemetryReporter running next to it, and without.

Builds (or finds cached) a float MobileNetV2 224x224 bundle (benchmarks/_models.py)
and 200 distinct 640x480 frames cut from scikit-image photos (as
benchmarks/pipeline.py does), decoded into memory, then in one run, interleaved
and repeated, times the real edge_sdk Pipeline over an ArraySource cycling
through them for --frames frames (default 3000, about 15 s here, so that a
run holds over a hundred reports):

  off   the pipeline alone
  on    the same pipeline while a TelemetryReporter reports every --interval
        seconds (default 0.1 s, 100x the default rate): it reads the stats
        snapshot, samples /proc and the disk, validates a Telemetry message,
        puts it into the SQLite outbox (WAL, fsync'd) and pumps it through an
        MqttClient to --broker (default the local Mosquitto, mqtt://127.0.0.1:1883)

and prints median frames per second and on/off (goal >= 0.99): the median of
the per-repeat ratios (each "on" run against the "off" run beside it, which
cancels most of a shared machine's drift) and the ratio of the medians. Every
case runs once untimed first; the order of the cases alternates between repeats.
The reporter and its client are started before a timed "on" run and stopped
after it, so their start and stop are inside the cost. Each "on" run checks
that its telemetry reached the broker (the outbox is empty after the acks).

Also prints the process CPU time per frame (all threads) in both cases, and,
measured apart from the timed runs, what one report costs the reporter's own
thread (build + fsync'd put + pump): figures that a shared machine's noise
disturbs far less than frames per second.

    python benchmarks/telemetry.py [--frames 3000] [--repeats 7] [--threads 2] [--interval 0.1] [--json]
"""

from __future__ import annotations

import argparse
import itertools
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _models import mobilenet_v2_bundle  # noqa: E402
from pipeline import make_frames, run_figures, usable_cores  # noqa: E402  (benchmarks/pipeline.py)

import edge_sdk  # noqa: E402
from edge_sdk.mqtt import MqttClient, MqttConfig  # noqa: E402
from edge_sdk.telemetry import Outbox, TelemetryReporter  # noqa: E402
from edge_sdk.vision.pipeline import Pipeline  # noqa: E402
from edge_sdk.vision.sources import ArraySource  # noqa: E402

GOAL = 0.99
DEVICE = "bench-telemetry"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=3000, help="frames per timed run (default 3000)")
    parser.add_argument("--repeats", type=int, default=7, help="timed repeats of each case (default 7)")
    parser.add_argument("--threads", type=int, default=2, help="engine threads (default 2)")
    parser.add_argument("--interval", type=float, default=0.1, help="seconds between reports (default 0.1)")
    parser.add_argument("--broker", default="mqtt://127.0.0.1:1883", help="MQTT broker URL "
                        "(default mqtt://127.0.0.1:1883)")
    parser.add_argument("--cache-dir", type=Path, default=None, help="where the converted model is cached "
                        "(default ~/.cache/edge-sdk-bench)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="edge-bench-telemetry-"))
    client = MqttClient(MqttConfig.from_url(args.broker, client_id=DEVICE))
    client.start()
    try:
        if not client.wait_connected(10):
            print(f"no MQTT broker at {args.broker}; start one (mosquitto, or edge-sdk broker) or pass --broker",
                  file=sys.stderr)
            return 2
        bench = mobilenet_v2_bundle(work, args.cache_dir)
        images = make_frames(min(args.frames, 200))
        model = edge_sdk.load(bench.bundle, trusted=bench.trusted, num_threads=args.threads)
        outbox = Outbox(work / "outbox.db")
        reports: list[int] = []

        def run_pipeline(telemetry: bool) -> None:
            pipeline = Pipeline(model, [ArraySource(itertools.islice(itertools.cycle(images), args.frames))])
            reporter = TelemetryReporter(
                DEVICE, outbox, client, lambda: pipeline.stats.snapshot(pipeline.sources),
                interval_s=args.interval, model_version_fn=lambda: pipeline.model.version,
            ) if telemetry else None
            if reporter is not None:
                reporter.start()
            stats = pipeline.run()
            if reporter is not None:
                reporter.stop()
                reports.append(reporter.reports)
                deadline = time.monotonic() + 10
                while outbox.pending():  # its messages went out, outside the timed part
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"telemetry did not reach {args.broker}: {outbox!r}")
                    if client.connected:
                        outbox.pump(client)
                    time.sleep(0.01)
            if stats["errors"] or stats["frames_out"] != args.frames:
                raise RuntimeError(f"{stats['frames_out']} results for {args.frames} frames, {stats['errors']} errors")

        cases = {"off": lambda: run_pipeline(False), "on": lambda: run_pipeline(True)}
        for fn in cases.values():  # warm the engine, the page cache, the outbox file
            fn()
        reports.clear()
        fps: dict[str, list[float]] = {name: [] for name in cases}
        cpu_ms: dict[str, list[float]] = {name: [] for name in cases}  # process CPU time per frame, all threads
        names = list(cases)
        for r in range(args.repeats):  # interleaved, order alternating, so drift on a shared machine hits both alike
            for name in (names if r % 2 == 0 else names[::-1]):
                start, start_cpu = time.perf_counter(), time.process_time()
                cases[name]()
                fps[name].append(args.frames / (time.perf_counter() - start))
                cpu_ms[name].append((time.process_time() - start_cpu) * 1e3 / args.frames)
        report_ms = report_cost_ms(outbox, client)
        outbox.close()
        model.close()
    finally:
        client.close()
        shutil.rmtree(work, ignore_errors=True)

    med = {name: statistics.median(values) for name, values in fps.items()}
    figures = {
        **run_figures(args),
        "interval_s": args.interval,
        "broker": args.broker,
        "fps": {name: round(value, 2) for name, value in med.items()},
        "fps_samples": {name: [round(v, 2) for v in values] for name, values in fps.items()},
        "on_over_off": round(statistics.median(on / off for on, off in zip(fps["on"], fps["off"], strict=True)), 4),
        "on_over_off_pairs": [round(on / off, 4) for on, off in zip(fps["on"], fps["off"], strict=True)],
        "median_on_over_median_off": round(med["on"] / med["off"], 4),
        "reports_per_run": reports,
        "cpu_ms_per_frame": {name: round(statistics.median(values), 4) for name, values in cpu_ms.items()},
        "report_ms": report_ms,
        "report_cpu_share": round(report_ms["cpu_mean"] / 1e3 / args.interval / usable_cores(), 5),
        "goal": GOAL,
    }
    if args.json:
        print(json.dumps(figures, indent=2))
        return 0
    print(f"telemetry cost, {figures['model']}, LiteRT {args.threads} thread(s) on {figures['cores']} core(s)")
    print(f"  cpu: {figures['cpu']}; {args.frames} frames 640x480 decoded in memory per run, median of "
          f"{args.repeats} interleaved runs")
    print(f"  {'pipeline, telemetry off':<46}  {med['off']:7.1f} fps")
    print(f"  {f'pipeline, reporter every {args.interval:g} s to the broker':<46}  {med['on']:7.1f} fps  "
          f"{figures['on_over_off']:6.3f}x off  (goal >= {GOAL:.2f}x)")
    pairs = ", ".join(f"{v:.3f}" for v in figures["on_over_off_pairs"])
    print(f"  on/off per repeat: {pairs}; median of the pairs {figures['on_over_off']:.3f}, "
          f"ratio of the medians {figures['median_on_over_median_off']:.3f}")
    cpu = figures["cpu_ms_per_frame"]
    print(f"  process CPU per frame, all threads: off {cpu['off']:.3f} ms, on {cpu['on']:.3f} ms "
          f"({cpu['on'] / cpu['off'] - 1:+.2%})")
    print(f"  reports per timed run: {', '.join(map(str, reports))}; all acknowledged by {args.broker}")
    print(f"  one report on the reporter's thread: p50 {report_ms['p50']:.2f} ms, p95 {report_ms['p95']:.2f} ms "
          "(snapshot, /proc, validate, fsync'd put, pump)")
    share = report_ms["cpu_mean"] / 1e3 / args.interval / figures["cores"]
    print(f"  of which CPU {report_ms['cpu_mean']:.2f} ms: {share:.2%} of {figures['cores']} core(s) at one report "
          f"every {args.interval:g} s, {share * args.interval / 10:.4%} at the default 10 s")
    return 0


def report_cost_ms(outbox: Outbox, client: MqttClient, count: int = 200) -> dict[str, float]:
    """Wall and CPU time of report_now() + one pump, as the reporter's thread spends them.

    The CPU time (``time.thread_time``, the fsync wait excluded) is what a
    report takes away from the pipeline's cores; unlike the fps ratio it does
    not drown in a shared machine's noise.
    """
    from edge_sdk.vision.pipeline import PipelineStats

    stats = PipelineStats()
    stats.latencies_ms.extend(float(i % 50) for i in range(2048))
    reporter = TelemetryReporter(DEVICE, outbox, client, stats.snapshot, interval_s=60.0)
    times, cpu = [], []
    for _ in range(count):
        start, start_cpu = time.perf_counter(), time.thread_time()
        reporter.report_now()
        outbox.pump(client)
        times.append((time.perf_counter() - start) * 1e3)
        cpu.append((time.thread_time() - start_cpu) * 1e3)
    deadline = time.monotonic() + 10
    while outbox.pending() and time.monotonic() < deadline:
        outbox.pump(client)
        time.sleep(0.01)
    times.sort()
    return {"p50": round(statistics.median(times), 3), "p95": round(times[int(0.95 * (len(times) - 1))], 3),
            "cpu_mean": round(statistics.fmean(cpu), 3)}


if __name__ == "__main__":
    sys.exit(main())
