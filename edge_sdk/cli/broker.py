"""``edge-sdk broker``: a development MQTT broker on loopback, until Ctrl-C."""

from __future__ import annotations

import argparse
import signal
import sys
import time

from edge_sdk.cli._output import step


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "broker",
        help="run a development MQTT broker on this machine",
        description="Runs an MQTT broker on 127.0.0.1 for development and the quick start: the installed "
        "mosquitto when there is one, else the pure-Python amqtt broker. Anonymous, loopback only, nothing "
        "persisted. Prints the URL to give to `edge-sdk agent --broker`; stops on Ctrl-C.",
    )
    p.add_argument("--port", type=_port, default=1883, help="TCP port (default 1883; 0 picks a free one)")
    p.add_argument("--engine", choices=("auto", "mosquitto", "python"), default="auto",
                   help="auto: mosquitto if installed, else python (amqtt)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from edge_sdk.mqtt.broker import EmbeddedBroker

    # `kill` and service managers send SIGTERM: stop the broker as for Ctrl-C instead of orphaning it.
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        with EmbeddedBroker(port=args.port, engine=args.engine) as broker:
            print(broker.url, flush=True)
            step(f"{broker.kind} broker listening on {broker.url}; press Ctrl-C to stop")
            try:
                while broker.running:
                    time.sleep(0.2)
            except KeyboardInterrupt:
                step("stopping")
                return 0
    finally:
        signal.signal(signal.SIGTERM, previous)
    print(f"edge-sdk: error: the {broker.kind} broker stopped unexpectedly", file=sys.stderr)
    return 1


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be 0 to 65535, got {value}")
    return value
