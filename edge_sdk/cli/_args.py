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
