"""``edge-sdk inspect BUNDLE``: the manifest, sizes and the verification verdict."""

from __future__ import annotations

import argparse
from pathlib import Path

from edge_sdk.bundle.reader import describe_bundle
from edge_sdk.bundle.signing import default_trusted_dir
from edge_sdk.cli._args import add_json, add_trusted_dir
from edge_sdk.cli._output import emit_json, human_bytes, table


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "inspect",
        help="verify a bundle and show its manifest and contents",
        description="Verifies the bundle completely (signature, hashes, sizes, entry names) and prints what it holds. "
        "Exits 1 when verification fails or the bundle is unsigned.",
    )
    p.add_argument("bundle", type=Path, help=".edgepkg file")
    add_trusted_dir(p)
    p.add_argument("--profile", default=None, help="also check the bundle was built for this device profile")
    add_json(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    profile = None
    if args.profile:
        from device_profiles import load_profile

        profile = load_profile(args.profile)
    report = describe_bundle(args.bundle, trusted=args.trusted_dir or default_trusted_dir(), profile=profile)
    ok = report["verified"] and report["signed"]
    if args.json:
        emit_json(report)
        return 0 if ok else 1
    manifest = report["manifest"]
    print(f"bundle:   {report['path']} ({human_bytes(report['bundle_bytes'])})")
    if ok:
        print(f"verified: yes, signed by trusted key {report['signer']}")
    else:
        print(f"verified: NO: {report['error']}")
    if manifest is None:
        print("manifest: unreadable")
        return 1
    if not report["verified"]:
        print("(the manifest below is UNVERIFIED and shown for diagnosis only)")
    print(f"model:    {manifest['name']} {manifest['version']} for {manifest['profile']} "
          f"({manifest['engine']}/{manifest['format']}), created {manifest['created']}")
    task = manifest["task"]
    print(f"task:     {task['kind']}" + (f", decoder {task['decoder']}" if task.get("decoder") else "")
          + (f", labels {task['labels']}" if task.get("labels") else ""))
    for spec in manifest["inputs"]:
        quant = f" q(scale={spec['scale']:g}, zp={spec['zero_point']})" if "scale" in spec else ""
        print(f"input:    {spec['name']} {spec['shape']} {spec['dtype']} {spec['layout']} "
              f"{spec['color_order']} resize={spec['resize']}{quant}")
    for spec in manifest["outputs"]:
        quant = f" q(scale={spec['scale']:g}, zp={spec['zero_point']})" if "scale" in spec else ""
        print(f"output:   {spec['name']} {spec['shape']} {spec['dtype']}{quant}")
    if manifest.get("quantization"):
        print(f"quant:    {_inline(manifest['quantization'])}")
    if manifest.get("accuracy"):
        print(f"accuracy: {_inline(manifest['accuracy'])}")
    if manifest.get("golden"):
        print(f"golden:   {', '.join(manifest['golden']['inputs'].values())} -> "
              f"{', '.join(manifest['golden']['outputs'].values())}")
    print()
    pins = {f["name"]: f for f in manifest["files"]}
    rows = [
        (e["name"], human_bytes(e["size"]), e["method"], pins.get(e["name"], {}).get("role", "-"),
         pins.get(e["name"], {}).get("sha256", "-")[:16])
        for e in report["entries"]
    ]
    table(rows, ("entry", "size", "stored", "role", "sha256"))
    return 0 if ok else 1


def _inline(data: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(data.items()) if not isinstance(v, (dict, list)))
