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


def add_broker_options(parser: argparse.ArgumentParser, default: str | None = "mqtt://127.0.0.1:1883") -> None:
    """``--broker`` and the options of a broker connection (TLS files, keepalive, topic prefix)."""
    g = parser.add_argument_group("broker")
    g.add_argument("--broker", default=default, required=default is None,
                   help="mqtt://[user[:password]@]host[:port] or mqtts://... (default %(default)s)")
    g.add_argument("--ca-file", type=Path, default=None, help="CA bundle for mqtts://")
    g.add_argument("--cert-file", type=Path, default=None, help="client certificate for mqtts://")
    g.add_argument("--key-file", type=Path, default=None, help="client key for mqtts://")
    g.add_argument("--keepalive", type=positive_int, default=30,
                   help="seconds; the broker marks a silent client offline after about 1.5x (default 30)")
    g.add_argument("--mqtt-protocol", choices=("3.1.1", "5"), default="3.1.1", help="MQTT version")
    g.add_argument("--topic-prefix", default="edge", help="topic prefix (default edge)")


def mqtt_config(args: argparse.Namespace, **overrides):
    """The :class:`~edge_sdk.mqtt.MqttConfig` of :func:`add_broker_options`; the password may come from
    ``$EDGE_SDK_MQTT_PASSWORD`` so that it stays out of the process list."""
    import os

    from edge_sdk.mqtt.client import MqttConfig

    options = {"keepalive": args.keepalive, "protocol": args.mqtt_protocol, "prefix": args.topic_prefix,
               "ca_file": args.ca_file, "cert_file": args.cert_file, "key_file": args.key_file, **overrides}
    config = MqttConfig.from_url(args.broker, **options)
    password = os.environ.get("EDGE_SDK_MQTT_PASSWORD")
    if password and config.username and config.password is None:
        config = config.replace(password=password)
    return config


def fraction(text: str) -> float:
    """An argparse type for ``10%`` or ``0.1``."""
    from edge_sdk.fleet.rollout import RolloutError, parse_fraction

    try:
        return parse_fraction(text, "value")
    except RolloutError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def default_registry() -> Path:
    """The host's fleet registry: ``$XDG_STATE_HOME/edge-sdk/fleet.db`` (``~/.local/state/...``)."""
    import os

    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(os.environ.get("EDGE_SDK_FLEET_DB") or Path(base) / "edge-sdk" / "fleet.db")
