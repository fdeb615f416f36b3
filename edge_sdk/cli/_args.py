"""Argument helpers shared by the subcommands, so every command spells its options the same way."""

from __future__ import annotations

import argparse
from pathlib import Path

from edge_sdk.bundle.signing import default_trusted_dir


def command_group(subparsers: argparse._SubParsersAction, name: str, help: str, description: str):
    """A command with actions (``edge-sdk NAME ACTION``); returns the actions' subparsers."""
    parser = subparsers.add_parser(name, help=help, description=description)
    actions = parser.add_subparsers(dest=f"{name}_action", metavar="ACTION")
    actions.required = True
    return actions


def add_json(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def add_trusted_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--trusted-dir", type=Path, default=None, help=f"trusted public keys (default: {default_trusted_dir()})"
    )


def positive_int(text: str) -> int:
    """An argparse type for counts: a clear usage error instead of a traceback or a silent zero."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """The options every command that loads a bundle onto this device shares."""
    parser.add_argument("bundle", type=Path, help=".edgepkg file")
    parser.add_argument("--profile", default=None, help="device profile (default: $EDGE_SDK_PROFILE or the bundle's)")
    parser.add_argument("--threads", type=positive_int, default=None, help="engine threads (default: the profile's)")
    parser.add_argument("--allow-cpu-fallback", action="store_true",
                        help="run on the CPU if the profile's accelerator is absent")
    parser.add_argument("--allow-unsigned", action="store_true", help="accept an unsigned bundle (development only)")
    add_trusted_dir(parser)


def load_model(args: argparse.Namespace):
    """``edge_sdk.load`` with the options of :func:`add_model_options`."""
    from edge_sdk.model import load

    return load(args.bundle, profile=args.profile, trusted=args.trusted_dir, allow_unsigned=args.allow_unsigned,
                allow_cpu_fallback=True if args.allow_cpu_fallback else None, num_threads=args.threads)
