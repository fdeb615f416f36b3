"""What bundle verification costs, next to the cheapest possible integrity check.

Builds a signed bundle holding a model of --size-mb megabytes (random bytes:
weights do not compress, and a quantized model is no different to sha256),
then in one run, interleaved and repeated, times:

  sha256      hashlib.sha256 over the same model bytes read from a plain file
  verify      edge_sdk.bundle.open_bundle(): container checks, signature,
              manifest parse, and sha256 of every entry streamed from the zip
  extract     open_bundle(extract_to=...): the same plus writing and fsync-ing
              every file into a staging directory renamed into place

and prints medians and the ratios verify/sha256 and extract/sha256. The goal
for verify is at most 1.3x a plain hash. Both sides read from the page cache
(each is run once before timing), so the ratio compares CPU work, not disks.

    python benchmarks/bundle.py [--size-mb 50] [--repeats 15] [--json]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from edge_sdk.bundle import InputSpec, Manifest, OutputSpec, SigningKey, TaskSpec, TrustStore, open_bundle, write_bundle  # noqa: E402


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mb", type=int, default=50, help="model size in MB (default 50)")
    parser.add_argument("--repeats", type=int, default=15, help="timed repeats of each measurement (default 15)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="edge-bench-bundle-"))
    try:
        model = work / "model.tflite"
        model.write_bytes(os.urandom(args.size_mb * 1_000_000))
        key = SigningKey.generate()
        trust = TrustStore.from_keys([key.public_key])
        manifest = Manifest(
            name="bench", version="1.0.0", created="2026-01-01T00:00:00Z", profile="raspberry-pi-4",
            engine="litert", format="tflite", model="model.tflite",
            inputs=(InputSpec("input", (1, 224, 224, 3), "uint8", scale=1 / 255, zero_point=0),),
            outputs=(OutputSpec("scores", (1, 1000), "uint8", scale=1 / 256, zero_point=0),),
            task=TaskSpec("classification", labels="labels.txt"),
        )
        files = {"model.tflite": model, "labels.txt": "\n".join(f"class{i}" for i in range(1000)).encode()}
        build_s = timed(lambda: write_bundle(manifest, files, work / "bench.edgepkg", key))
        bundle = work / "bench.edgepkg"

        def extract() -> None:
            target = work / "slot"
            open_bundle(bundle, trusted=trust, extract_to=target, overwrite=True)

        cases = {
            "sha256": lambda: sha256_file(model),
            "verify": lambda: open_bundle(bundle, trusted=trust),
            "extract": extract,
        }
        for fn in cases.values():  # warm the page cache and code paths
            fn()
        samples: dict[str, list[float]] = {name: [] for name in cases}
        for _ in range(args.repeats):  # interleaved so drift on a shared machine hits every case alike
            for name, fn in cases.items():
                samples[name].append(timed(fn))
        med = {name: statistics.median(values) for name, values in samples.items()}
        figures = {
            "model_mb": args.size_mb,
            "bundle_bytes": bundle.stat().st_size,
            "repeats": args.repeats,
            "build_s": round(build_s, 4),
            "sha256_ms": round(med["sha256"] * 1000, 2),
            "verify_ms": round(med["verify"] * 1000, 2),
            "extract_ms": round(med["extract"] * 1000, 2),
            "verify_over_sha256": round(med["verify"] / med["sha256"], 3),
            "extract_over_sha256": round(med["extract"] / med["sha256"], 3),
            "sha256_mb_per_s": round(args.size_mb / med["sha256"], 1),
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)

    if args.json:
        print(json.dumps(figures, indent=2))
        return 0
    print(f"bundle verification, {args.size_mb} MB model, median of {args.repeats} interleaved runs")
    print(f"  plain sha256 of the model file   {figures['sha256_ms']:8.2f} ms  ({figures['sha256_mb_per_s']} MB/s)")
    print(f"  open_bundle() verify             {figures['verify_ms']:8.2f} ms")
    print(f"  open_bundle() verify + extract   {figures['extract_ms']:8.2f} ms")
    print(f"  verify / sha256                  {figures['verify_over_sha256']:8.3f}x  (goal <= 1.3x)")
    print(f"  verify+extract / sha256          {figures['extract_over_sha256']:8.3f}x  (includes writing + fsync)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
