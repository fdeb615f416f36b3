"""``edge-sdk demo``: the quick start, end to end on what exists today.

Steps: a development signing key; a real digit classifier trained on
scikit-learn's shipped digits and written as ONNX; a signed bundle for the
``generic-x86`` profile with a golden input; verification and extraction as a
device does it, with the golden input run through ONNX Runtime when it is
installed; ``inspect``; and the refusals a device gives a tampered bundle, a
bundle for another board and a bundle signed by an unknown key.

A second run reuses the key and the trained model from the work directory.
"""

from __future__ import annotations

import argparse
import io
import shutil
import sys
import time
from contextlib import redirect_stdout
from pathlib import Path


from edge_sdk.cli._output import human_bytes, step, table

PROFILE = "generic-x86"
VERSION = "1.0.0"


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "demo",
        help="run the quick-start demo end to end on embedded defaults",
        description="Generates a development key, trains a digit classifier on scikit-learn's shipped digits, "
        "packages it as a signed bundle, verifies it as a device would, and shows what a device refuses.",
    )
    p.add_argument("--workdir", type=Path, default=Path("demo-output"), help="where keys, models and bundles go")
    p.add_argument("--fresh", action="store_true", help="rebuild everything instead of reusing the work directory")
    p.set_defaults(func=run_demo)


def run_demo(args: argparse.Namespace) -> int:
    work: Path = args.workdir.absolute()
    if args.fresh and work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    key_id = _keys(work)
    model_path, split, classifier = _model(work)
    bundle_path = _package(work, model_path, split, classifier, key_id)
    golden_error, run_stats = _verify_as_device(work, bundle_path, split)
    _inspect(work, bundle_path)
    refusals = _refusals(work, bundle_path)
    _summary(work, bundle_path, classifier, split, golden_error, run_stats, refusals, time.perf_counter() - started)
    return 0


def _keys(work: Path) -> str:
    from edge_sdk.bundle.signing import SigningKey, TrustStore, generate_keypair

    key_dir, trusted_dir = work / "keys", work / "trusted-keys"
    if (key_dir / "signing.key").exists():
        step(f"[1/6] reusing development signing key in {key_dir}")
        key_id = SigningKey.from_file(key_dir / "signing.key").key_id
    else:
        step(f"[1/6] generating a development Ed25519 signing key in {key_dir}")
        key_id = generate_keypair(key_dir).key_id
    TrustStore({}).add_file(key_dir / "signing.pub", trusted_dir)
    print(f"      key id {key_id}; the device trusts {trusted_dir}")
    return key_id


def _model(work: Path):
    from converters.samples import load_digits_split, softmax_to_onnx, train_softmax

    split = load_digits_split()
    model_path = work / "models" / "digits.onnx"
    step(f"[2/6] training a digit classifier on scikit-learn's digits ({len(split.train_labels)} train, "
         f"{len(split.test_labels)} test images)")
    classifier = train_softmax(split)
    if not model_path.exists():
        softmax_to_onnx(classifier, model_path)
    print(f"      test accuracy {classifier.accuracy(split.test_images, split.test_labels):.1%}; "
          f"ONNX model {model_path} ({human_bytes(model_path.stat().st_size)})")
    return model_path, split, classifier


def _package(work: Path, model_path: Path, split, classifier, key_id: str) -> Path:
    from converters.samples import softmax_bundle
    from edge_sdk.bundle import SigningKey

    step(f"[3/6] packaging a signed bundle for profile {PROFILE!r}")
    key = SigningKey.from_file(work / "keys" / "signing.key")
    (work / "bundles").mkdir(exist_ok=True)
    path = softmax_bundle(classifier, split, work / "bundles", key, version=VERSION, profile=PROFILE,
                          metadata={"trainer": "edge-sdk demo softmax regression"})
    print(f"      {path} ({human_bytes(path.stat().st_size)}), signed by {key_id}")
    return path


def _verify_as_device(work: Path, bundle_path: Path, split) -> tuple[float | None, dict | None]:
    """Verify + install the bundle, then run it the way a device does: edge_sdk.load and the pipeline."""
    from device_profiles import load_profile
    from edge_sdk.bundle import open_bundle

    step("[4/6] verifying, installing and running the bundle as a device does")
    t0 = time.perf_counter()
    bundle = open_bundle(bundle_path, trusted=work / "trusted-keys", profile=load_profile(PROFILE),
                         extract_to=work / "device" / "active", overwrite=True)
    print(f"      verified (signature, hashes, names, profile) in {1000 * (time.perf_counter() - t0):.1f} ms; "
          f"installed into {bundle.directory}")
    try:
        import onnxruntime  # noqa: F401  (the engine generic-x86 runs)
    except ImportError:
        print("      (onnxruntime not installed: pip install 'edge-deploy-sdk[onnxruntime]' to run the model)")
        return None, None
    import edge_sdk
    from edge_sdk.vision.pipeline import Pipeline
    from edge_sdk.vision.sources import ArraySource

    with edge_sdk.load(bundle_path, trusted=work / "trusted-keys", profile=PROFILE) as model:
        error = model.golden_check()
        verdict = "matches" if error <= 1.0 else "DOES NOT match"
        print(f"      {model!r}: golden input {verdict} its expected output ({error:.2g} of the tolerance)")
        correct = []
        labels = {i: int(label) for i, label in enumerate(split.test_labels)}
        stats = Pipeline(model, [ArraySource(list(split.test_images), name="digits")],
                         on_result=lambda frame, p: correct.append(p.top.index == labels[frame.index])).run()
    stats["accuracy"] = sum(correct) / max(1, len(correct))
    lat = stats["latency_ms"]
    print(f"      pipeline over {stats['frames_out']} real digit images: accuracy {stats['accuracy']:.1%}, "
          f"{stats['fps']:.0f} fps, latency p50 {lat['p50']:.2f} ms p99 {lat['p99']:.2f} ms, "
          f"{stats['dropped']} dropped")
    return error, stats


def _inspect(work: Path, bundle_path: Path) -> None:
    from edge_sdk.cli import inspect

    step(f"[5/6] edge-sdk inspect {bundle_path.name} --trusted-dir {work / 'trusted-keys'}")
    args = argparse.Namespace(bundle=bundle_path, trusted_dir=work / "trusted-keys", profile=None, json=False)
    buf = io.StringIO()
    with redirect_stdout(buf):
        inspect.run(args)
    sys.stdout.write("".join(f"      {line}\n" for line in buf.getvalue().splitlines()))


def _refusals(work: Path, bundle_path: Path) -> list[tuple[str, str]]:
    """Three bad bundles a device must refuse, with the reason it gives."""
    from edge_sdk.bundle import SigningKey, open_bundle
    from edge_sdk.bundle.reader import VerifiedBundle
    from edge_sdk.bundle.writer import write_bundle
    from edge_sdk.errors import EdgeSDKError

    step("[6/6] showing what a device refuses (the installed model stays in place)")
    bad = work / "refused"
    bad.mkdir(exist_ok=True)
    good: VerifiedBundle = open_bundle(bundle_path, trusted=work / "trusted-keys")

    tampered = bad / "tampered.edgepkg"
    data = bytearray(bundle_path.read_bytes())
    data[_middle_of_entry(bundle_path, good.manifest.model)] ^= 0x01
    tampered.write_bytes(bytes(data))

    files = {e.name: good.read(e.name) for e in good.manifest.files}
    stranger = write_bundle(good.manifest, files, bad / "untrusted-signer.edgepkg", SigningKey.generate())

    cases = [
        ("one bit flipped in the model", tampered, "generic-x86"),
        ("built for generic-x86, opened on a raspberry-pi-4", bundle_path, "raspberry-pi-4"),
        ("signed by a key the device does not trust", stranger, "generic-x86"),
    ]
    results = []
    for what, path, device in cases:
        try:
            open_bundle(path, trusted=work / "trusted-keys", profile=device)
        except EdgeSDKError as exc:
            results.append((what, str(exc).replace(str(work) + "/", "")))
        else:
            results.append((what, "ACCEPTED (this is a bug)"))
    for what, reason in results:
        print(f"      refused: {what}\n               -> {reason}")
    return results


def _middle_of_entry(bundle_path: Path, name: str) -> int:
    """The file offset of the middle byte of a stored entry's data."""
    import struct
    import zipfile

    with zipfile.ZipFile(bundle_path) as zf:
        info = zf.getinfo(name)
    with open(bundle_path, "rb") as fh:
        fh.seek(info.header_offset + 26)
        name_len, extra_len = struct.unpack("<HH", fh.read(4))
    return info.header_offset + 30 + name_len + extra_len + info.compress_size // 2


def _summary(work, bundle_path, classifier, split, golden_error, run_stats, refusals, seconds) -> None:
    print()
    rows = [
        ("model", f"digits softmax classifier, test accuracy {classifier.accuracy(split.test_images, split.test_labels):.1%}"),
        ("bundle", str(bundle_path.relative_to(work.parent) if work.parent in bundle_path.parents else bundle_path)),
        ("signing key", str(work / "keys" / "signing.key")),
        ("trusted keys", str(work / "trusted-keys")),
        ("golden check", "skipped" if golden_error is None else
         ("passed" if golden_error <= 1.0 else "FAILED") + f" ({golden_error:.2g} of the tolerance)"),
        ("on-device run", "skipped" if run_stats is None else
         f"{run_stats['frames_out']} frames, accuracy {run_stats['accuracy']:.1%}, "
         f"p50 {run_stats['latency_ms']['p50']:.2f} ms, {run_stats['dropped']} dropped"),
        ("bad bundles refused", f"{sum(1 for _, r in refusals if 'ACCEPTED' not in r)}/{len(refusals)}"),
        ("time", f"{seconds:.1f} s"),
    ]
    table(rows, ("demo", "result"))
    print(
        "\nnext: edge-sdk inspect {b} --trusted-dir {t}\n"
        "      edge-sdk bench {b} --trusted-dir {t} --vs-bare\n"
        "      edge-sdk profiles list\n"
        "      edge-sdk keys generate --help".format(b=bundle_path, t=work / "trusted-keys")
    )
