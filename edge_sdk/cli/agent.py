"""``edge-sdk agent``: run the device agent (pipeline + telemetry + OTA) until stopped."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

from edge_sdk.cli._args import add_broker_options, add_trusted_dir, mqtt_config, positive_float, positive_int
from edge_sdk.cli._output import step


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "agent",
        help="run the device agent: pipeline, telemetry and OTA updates over MQTT",
        description="Runs on each device until SIGTERM or Ctrl-C. Keeps two bundle slots in --state-dir, runs the "
        "active one over --source, reports telemetry through a durable on-disk outbox and installs OTA jobs "
        "(download with resume, verification, hot swap, health check, automatic rollback). Status is retained "
        "on <prefix>/<device>/status with an offline last will.",
    )
    add_broker_options(p)
    p.add_argument("--device-id", required=True, help="this device's id (A-Z a-z 0-9 _ . -, at most 64)")
    p.add_argument("--profile", required=True, help="this device's profile id or TOML file")
    p.add_argument("--group", action="append", default=[], dest="groups",
                   help="a group this device belongs to (repeatable); group jobs reach it")
    p.add_argument("--state-dir", type=Path, default=Path("edge-agent"),
                   help="slots, OTA state and the telemetry outbox (default ./edge-agent)")
    p.add_argument("--bundle", type=Path, default=None,
                   help="first bundle to install when no slot is active yet (first boot)")
    p.add_argument("--source", default=None,
                   help="what the pipeline reads: camera:0, rtsp://..., video file, image dir or glob; "
                   "without it the agent holds the model and only updates it")
    p.add_argument("--fps", type=positive_float, default=None, help="read the source at most this fast")
    p.add_argument("--no-loop", action="store_true", help="stop the pipeline when a file source ends")
    p.add_argument("--telemetry-interval", type=positive_float, default=10.0, help="seconds (default 10)")
    p.add_argument("--outbox-max", type=positive_int, default=10000,
                   help="messages kept while the broker is away; the oldest are dropped (and counted) beyond")
    h = p.add_argument_group("health check after an update")
    h.add_argument("--health-window", type=float, default=10.0, help="seconds the new model is watched (default 10)")
    h.add_argument("--max-latency-ratio", type=positive_float, default=2.0,
                   help="new p50 latency may be at most this times the old one (default 2)")
    h.add_argument("--max-errors", type=int, default=0, help="pipeline errors allowed in the window (default 0)")
    h.add_argument("--no-golden-required", action="store_true", help="accept bundles without a golden pair")
    h.add_argument("--install-command", default=None, metavar="CMD",
                   help="shell command run on each verified update before it commits, in the extracted bundle's "
                   "directory with $EDGE_SDK_BUNDLE_DIR, $EDGE_SDK_VERSION, ...; non-zero exit rolls the update "
                   "back (a gateway flashing the MCUboot image a bundle carries onto a microcontroller)")
    h.add_argument("--install-timeout", type=positive_float, default=300.0, help="seconds (default 300)")
    p.add_argument("--allow-unsigned", action="store_true", help="accept unsigned bundles (development only)")
    add_trusted_dir(p)
    p.add_argument("--hold-at", action="append", default=[], type=_hold, metavar="STATE=SECONDS",
                   help="pause that long right after entering an OTA state (crash-safety testing and demos)")
    p.set_defaults(func=run)


def _hold(value: str) -> tuple[str, float]:
    from edge_sdk.ota.states import STATES

    state, _, seconds = value.partition("=")
    try:
        duration = float(seconds)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected STATE=SECONDS, got {value!r}") from None
    if state not in STATES or not duration >= 0:
        raise argparse.ArgumentTypeError(f"{value!r}: expected one of {', '.join(STATES)} and seconds >= 0")
    return state, duration


def run(args: argparse.Namespace) -> int:
    from edge_sdk.agent import Agent, AgentConfig
    from edge_sdk.ota.health import HealthPolicy

    config = AgentConfig(
        device_id=args.device_id,
        profile=args.profile,
        mqtt=mqtt_config(args),
        state_dir=args.state_dir,
        groups=tuple(args.groups),
        trusted_dir=args.trusted_dir,
        allow_unsigned=args.allow_unsigned,
        initial_bundle=args.bundle,
        source=args.source,
        source_fps=args.fps,
        loop_source=not args.no_loop,
        telemetry_interval_s=args.telemetry_interval,
        outbox_max_messages=args.outbox_max,
        health=HealthPolicy(window_s=args.health_window, max_errors=args.max_errors,
                            max_latency_ratio=args.max_latency_ratio, require_golden=not args.no_golden_required),
        hold=dict(args.hold_at),
        install_command=args.install_command,
        install_timeout_s=args.install_timeout,
    )
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    agent = Agent(config)
    agent.start()
    active = agent.ota.slots.active
    step(f"agent {config.device_id} ({agent.profile.id}) on {config.mqtt.url}; running "
         f"{f'{active.name} {active.version} from slot {active.slot}' if active else 'no model yet'}; "
         f"state in {config.state_dir}")
    sys.stderr.flush()
    try:
        stop.wait()
    finally:
        step("stopping")
        agent.stop()
    return 0
