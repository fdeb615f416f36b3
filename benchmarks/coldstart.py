"""Cold start: process start to first result, edge_sdk next to the bare engine doing the same work.

Builds (or finds cached) a float MobileNetV2 224x224 bundle (benchmarks/_models.py),
writes one 640x480 JPEG, then launches fresh ``python`` processes, alternating,
--repeats times each (after one untimed run of each, so both find the page
cache and the .pyc files warm):

  edge_sdk   import cv2, edge_sdk; m = edge_sdk.load(bundle, trusted=dir,
             num_threads=N); frame = cv2.imread(jpeg); m.predict(frame)
  bare       import cv2, numpy, ai_edge_litert; Interpreter(model_content=
             the same .tflite bytes, num_threads=N); cv2.imread, resize,
             cvtColor, normalise, set_tensor, invoke, argmax

Each child takes ``time.perf_counter()`` on its first line and prints its own
breakdown as JSON: imports, load, read (the JPEG), first inference. The parent
takes ``perf_counter()`` just before it launches the child; on Linux both read
the system-wide CLOCK_MONOTONIC, so "interpreter start" (exec, site, up to the
child's first line) and "first result" are measured from the real process
start. "wall" is the parent's time around the whole subprocess (exit included).

Prints medians and the ratio edge_sdk/bare of time to first result (goal <=
1.25x), then runs each child once under ``python -X importtime`` and
summarises which imports dominate for edge_sdk and which modules only edge_sdk
imports, so we know what to make lazy.

    python benchmarks/coldstart.py [--repeats 7] [--threads 2] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _models import mobilenet_v2_bundle  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
GOAL = 1.25
STAGES = ("start", "imports", "load", "read", "infer")

EDGE_CHILD = """\
import time
T0 = time.perf_counter()
import json
import sys

import cv2
import edge_sdk

T1 = time.perf_counter()
bundle, trusted, jpeg, threads = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
model = edge_sdk.load(bundle, trusted=trusted, num_threads=threads)
T2 = time.perf_counter()
frame = cv2.imread(jpeg)
T3 = time.perf_counter()
top = model.predict(frame).classes[0].index
T4 = time.perf_counter()
print(json.dumps({"t0": T0, "imports": T1 - T0, "load": T2 - T1, "read": T3 - T2, "infer": T4 - T3,
                  "first_result": T4, "top": int(top)}))
"""

BARE_CHILD = """\
import time
T0 = time.perf_counter()
import json
import sys

import cv2
import numpy as np
from ai_edge_litert.interpreter import Interpreter

T1 = time.perf_counter()
tflite, jpeg, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
with open(tflite, "rb") as fh:
    interpreter = Interpreter(model_content=fh.read(), num_threads=threads)
interpreter.allocate_tensors()
inp = interpreter.get_input_details()[0]["index"]
out = interpreter.get_output_details()[0]["index"]
T2 = time.perf_counter()
frame = cv2.imread(jpeg)
T3 = time.perf_counter()
image = cv2.cvtColor(cv2.resize(frame, (224, 224)), cv2.COLOR_BGR2RGB)
interpreter.set_tensor(inp, ((image.astype(np.float32) - 127.5) / 127.5)[None])
interpreter.invoke()
top = int(np.argmax(interpreter.get_tensor(out)))
T4 = time.perf_counter()
print(json.dumps({"t0": T0, "imports": T1 - T0, "load": T2 - T1, "read": T3 - T2, "infer": T4 - T3,
                  "first_result": T4, "top": top}))
"""

_IMPORTTIME = re.compile(r"^import time:\s+(\d+)\s+\|\s+(\d+)\s+\|(\s*)(\S+)")


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("EDGE_SDK_PROFILE", None)  # the bundle's own profile, as on a device with no override
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return env


def launch(argv: list[str], env: dict[str, str]) -> dict[str, float]:
    """One fresh process; its stages in ms, measured from the parent's launch."""
    launched = time.perf_counter()
    proc = subprocess.run([sys.executable, *argv], env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - launched
    if proc.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    return {
        "start": (report["t0"] - launched) * 1e3,
        "imports": report["imports"] * 1e3,
        "load": report["load"] * 1e3,
        "read": report["read"] * 1e3,
        "infer": report["infer"] * 1e3,
        "first_result": (report["first_result"] - launched) * 1e3,
        "wall": wall * 1e3,
        "top": report["top"],
    }


def importtime(argv: list[str], env: dict[str, str]) -> list[tuple[int, float, float, str]]:
    """``(depth, self_ms, cumulative_ms, module)`` for every import of one run under ``-X importtime``."""
    command = [sys.executable, "-X", "importtime", *argv]
    proc = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed under -X importtime:\n{proc.stderr[-2000:]}")
    rows = []
    for line in proc.stderr.splitlines():
        match = _IMPORTTIME.match(line)
        if match:
            own, cumulative, indent, module = match.groups()
            rows.append((len(indent) // 2, int(own) / 1e3, int(cumulative) / 1e3, module))
    return rows


def _ours(module: str) -> bool:
    return module.split(".")[0] in ("edge_sdk", "device_profiles")


def summarise_imports(edge: list, bare: list, top: int) -> dict:
    """The heaviest imports of the edge_sdk child, and the packages only it imports, by total self time."""
    roots = sorted((r for r in edge if r[0] == 0), key=lambda r: -r[2])[:top]
    bare_modules = {r[3] for r in bare}
    extra: dict[str, float] = defaultdict(float)
    for _, own, _, module in edge:
        if module not in bare_modules:
            extra[module.split(".")[0]] += own
    under_edge = []  # other modules imported directly by an edge_sdk / device_profiles module, with all they import
    stack: list[str] = []
    for depth, _, cumulative, module in reversed(edge):  # importtime prints children before their parent
        del stack[depth:]
        stack.append(module)
        if depth > 0 and _ours(stack[-2]) and not _ours(module):
            under_edge.append((cumulative, module, stack[-2]))
    return {
        "edge_modules": len(edge),
        "bare_modules": len(bare),
        "edge_self_ms": round(sum(r[1] for r in edge), 1),
        "bare_self_ms": round(sum(r[1] for r in bare), 1),
        "top_level_cumulative_ms": {r[3]: round(r[2], 1) for r in roots},
        "imported_by_edge_sdk_modules_ms": {f"{m} (from {parent})": round(c, 1)
                                          for c, m, parent in sorted(under_edge, reverse=True)[:top]},
        "edge_sdk_modules_self_ms": {r[3]: round(r[1], 1) for r in sorted((r for r in edge if _ours(r[3])),
                                                                           key=lambda r: -r[1])[:top]},
        "only_in_edge_sdk_self_ms": {k: round(v, 1) for k, v in sorted(extra.items(), key=lambda kv: -kv[1])[:top]},
    }


def write_jpeg(path: Path) -> None:
    import cv2
    from skimage import data

    image = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)
    image = cv2.resize(image, (640, 640), interpolation=cv2.INTER_LINEAR)[80:560]
    if not cv2.imwrite(str(path), image, [cv2.IMWRITE_JPEG_QUALITY, 90]):
        raise RuntimeError(f"cannot write {path}")


def write_trusted_dir(public_key, directory: Path) -> None:
    from cryptography.hazmat.primitives import serialization

    directory.mkdir()
    pem = public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    (directory / "bench.pub").write_bytes(pem)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7, help="timed launches of each child (default 7)")
    parser.add_argument("--threads", type=int, default=2, help="engine threads, both children (default 2)")
    parser.add_argument("--top", type=int, default=8, help="rows in each import summary (default 8)")
    parser.add_argument("--cache-dir", type=Path, default=None, help="where the converted model is cached "
                        "(default ~/.cache/edge-sdk-bench)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="edge-bench-coldstart-"))
    try:
        bench = mobilenet_v2_bundle(work, args.cache_dir)
        write_trusted_dir(bench.key.public_key, work / "trusted")
        jpeg = work / "frame.jpg"
        write_jpeg(jpeg)
        (work / "edge_child.py").write_text(EDGE_CHILD)
        (work / "bare_child.py").write_text(BARE_CHILD)
        argv = {
            "edge_sdk": [str(work / "edge_child.py"), str(bench.bundle), str(work / "trusted"), str(jpeg),
                         str(args.threads)],
            "bare": [str(work / "bare_child.py"), str(bench.tflite), str(jpeg), str(args.threads)],
        }
        env = child_env()
        for child in argv.values():  # untimed: page cache, .pyc files
            launch(child, env)
        runs: dict[str, list[dict]] = {name: [] for name in argv}
        for r in range(args.repeats):  # alternating, first one then the other, so drift hits both alike
            for name in (list(argv) if r % 2 == 0 else list(argv)[::-1]):
                runs[name].append(launch(argv[name], env))
        imports = summarise_imports(importtime(argv["edge_sdk"], env), importtime(argv["bare"], env), args.top)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    med = {name: {key: statistics.median(run[key] for run in values) for key in (*STAGES, "first_result", "wall")}
           for name, values in runs.items()}
    tops = {name: sorted({run["top"] for run in values}) for name, values in runs.items()}
    figures = {
        "model": "mobilenet_v2 224x224 float32 (random weights)",
        "threads": args.threads,
        "repeats": args.repeats,
        "python": sys.version.split()[0],
        "median_ms": {name: {k: round(v, 1) for k, v in stages.items()} for name, stages in med.items()},
        "first_result_samples_ms": {name: [round(run["first_result"], 1) for run in values]
                                    for name, values in runs.items()},
        "first_result_over_bare": round(med["edge_sdk"]["first_result"] / med["bare"]["first_result"], 3),
        "goal_over_bare": GOAL,
        "top_class": tops,
        "imports": imports,
    }
    if args.json:
        print(json.dumps(figures, indent=2))
        return 0
    print(f"cold start to first result, {figures['model']}, LiteRT {args.threads} thread(s), "
          f"median of {args.repeats} alternating launches (ms)")
    print(f"  {'':10}" + "".join(f"{s:>9}" for s in (*STAGES, "first", "wall")))
    for name, stages in med.items():
        print(f"  {name:10}" + "".join(f"{stages[s]:9.1f}" for s in (*STAGES, "first_result", "wall")))
    diff = {s: med["edge_sdk"][s] - med["bare"][s] for s in (*STAGES, "first_result")}
    print(f"  {'difference':10}" + "".join(f"{diff[s]:+9.1f}" for s in (*STAGES, "first_result")))
    print(f"  edge_sdk / bare, time to first result  {figures['first_result_over_bare']:.3f}x  (goal <= {GOAL:.2f}x)")
    print(f"imports under -X importtime, one run each (inflated by the tracing): edge_sdk child "
          f"{imports['edge_modules']} modules, {imports['edge_self_ms']:.0f} ms; bare child "
          f"{imports['bare_modules']} modules, {imports['bare_self_ms']:.0f} ms")
    for title, key in (
        ("heaviest imports of the edge_sdk child, cumulative", "top_level_cumulative_ms"),
        ("other modules imported directly by edge_sdk modules, cumulative", "imported_by_edge_sdk_modules_ms"),
        ("edge_sdk / device_profiles modules, self time", "edge_sdk_modules_self_ms"),
        ("packages only the edge_sdk child imports, self time summed", "only_in_edge_sdk_self_ms"),
    ):
        print(f"  {title}:")
        print("    " + ", ".join(f"{module} {ms:.1f}" for module, ms in imports[key].items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
