"""``edge-sdk``: the command line.

Each subcommand lives in its own module with a ``register(subparsers)``
function; this module lists them, parses arguments, and is the one place that
turns an :class:`~edge_sdk.errors.EdgeSDKError` into a message and exit code.

Exit codes: 0 success, 1 the operation failed (bad bundle, bad profile, ...),
2 bad command-line usage, 130 interrupted.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Sequence

from edge_sdk._version import __version__
from edge_sdk.cli import agent, bench, broker, demo, deploy, firmware, fleet, inspect, keys, package, profiles, run
from edge_sdk.errors import EdgeSDKError

# The registry of subcommands, in the order `--help` lists them.
COMMANDS = (profiles, keys, package, inspect, run, bench, firmware, broker, agent, deploy, fleet, demo)

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edge-sdk",
        description="Package vision models as signed bundles per device profile, run them, and keep fleets updated.",
    )
    parser.add_argument("--version", action="version", version=f"edge-sdk {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for command in COMMANDS:
        command.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=(logging.WARNING, logging.INFO, logging.DEBUG)[min(args.verbose, 2)],
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args) or EXIT_OK)
    except EdgeSDKError as exc:
        print(f"edge-sdk: error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("edge-sdk: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
