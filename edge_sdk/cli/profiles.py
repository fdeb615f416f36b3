"""``edge-sdk profiles list|show|validate``: the device profiles this machine knows."""

from __future__ import annotations

import argparse
import sys

from edge_sdk.cli._args import add_json, command_group
from edge_sdk.cli._output import emit_json, human_bytes, table


def register(subparsers: argparse._SubParsersAction) -> None:
    sub = command_group(
        subparsers,
        "profiles",
        help="list, show and validate device profiles",
        description="Device profiles are TOML files: the built-in ones, plus any in --profiles-dir "
        "or in the directories named by EDGE_SDK_PROFILES_PATH (which override built-ins of the same id).",
    )

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--profiles-dir", action="append", default=[], metavar="DIR", help="extra directory of profile TOML files"
    )
    add_json(common)

    p = sub.add_parser("list", parents=[common], help="list known profiles")
    p.set_defaults(func=_list)
    p = sub.add_parser("show", parents=[common], help="show one profile in full")
    p.add_argument("name", help="profile id (e.g. raspberry-pi-4) or path to a profile TOML file")
    p.set_defaults(func=_show)
    p = sub.add_parser("validate", parents=[common], help="check profile files and report every problem")
    p.add_argument("files", nargs="+", metavar="FILE", help="profile TOML file(s)")
    p.set_defaults(func=_validate)


def _list(args: argparse.Namespace) -> int:
    from device_profiles import list_profiles

    found = list_profiles(args.profiles_dir)
    if args.json:
        emit_json([p.to_dict() | {"path": p.path} for p in found])
        return 0
    rows = [
        (
            p.id,
            p.cpu.architecture,
            p.cpu.cores,
            human_bytes(p.memory.ram_bytes),
            p.runtime.engine,
            p.runtime.quantization,
            p.accelerator.kind if p.accelerator else "-",
        )
        for p in found
    ]
    table(rows, ("id", "arch", "cores", "ram", "engine", "quant", "accelerator"))
    return 0


def _show(args: argparse.Namespace) -> int:
    from device_profiles import load_profile

    profile = load_profile(args.name, args.profiles_dir)
    data = profile.to_dict()
    if args.json:
        emit_json(data | {"path": profile.path})
        return 0
    print(f"# {profile.id}: {profile.name}  ({profile.path})")
    _print_tree(data)
    return 0


def _print_tree(data: dict, indent: str = "") -> None:
    for key, value in data.items():
        if isinstance(value, dict):
            print(f"{indent}{key}:")
            _print_tree(value, indent + "  ")
        elif isinstance(value, (list, tuple)) and len(value) > 8:
            print(f"{indent}{key}: {', '.join(map(str, value[:8]))}, ... ({len(value)} in all)")
        elif isinstance(value, (list, tuple)):
            print(f"{indent}{key}: {', '.join(map(str, value)) or '-'}")
        else:
            print(f"{indent}{key}: {value}")


def _validate(args: argparse.Namespace) -> int:
    from device_profiles import validate_file
    from edge_sdk.errors import ProfileError

    results = []
    for path in args.files:
        try:
            profile = validate_file(path)
        except ProfileError as exc:
            results.append({"file": path, "valid": False, "id": None, "key": exc.key, "error": str(exc)})
        else:
            results.append({"file": path, "valid": True, "id": profile.id, "key": None, "error": None})
    if args.json:
        emit_json(results)
    else:
        for r in results:
            if r["valid"]:
                print(f"ok      {r['file']} ({r['id']})")
            else:
                print(f"INVALID {r['error']}", file=sys.stderr)
    return 0 if all(r["valid"] for r in results) else 1
