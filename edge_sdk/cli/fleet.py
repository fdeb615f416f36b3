"""``edge-sdk fleet status|monitor``: the devices as the host's registry knows them."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from edge_sdk.cli._args import add_broker_options, add_json, command_group, default_registry, positive_float
from edge_sdk.cli._output import emit_json, step, table


def register(subparsers: argparse._SubParsersAction) -> None:
    actions = command_group(
        subparsers, "fleet", help="see the fleet: devices, models, telemetry, last job",
        description="The host keeps a SQLite registry of the devices, fed by their MQTT messages (retained "
        "status, telemetry, OTA progress).",
    )
    status = actions.add_parser(
        "status", help="list the devices",
        description="Listens to the broker for --listen seconds (the retained status of every device arrives at "
        "once), merges it into the registry, and prints every device: online/offline, profile, model and "
        "version, last telemetry, last job state.",
    )
    monitor = actions.add_parser(
        "monitor", help="record everything the devices send into the registry, printing a live summary",
        description="Runs until Ctrl-C (or --duration): keeps the registry current (telemetry included) and "
        "prints one line per OTA state change and a summary every --every seconds.",
    )
    for p in (status, monitor):
        add_broker_options(p)
        p.add_argument("--registry", type=Path, default=None, help=f"fleet registry (default {default_registry()})")
        p.add_argument("--group", default=None, help="only devices of this group")
    status.add_argument("--listen", type=float, default=2.0, help="seconds to listen first (0: registry only)")
    add_json(status)
    status.set_defaults(func=run_status)
    monitor.add_argument("--duration", type=positive_float, default=None, help="stop after this many seconds")
    monitor.add_argument("--every", type=positive_float, default=10.0, help="summary interval (default 10 s)")
    monitor.set_defaults(func=run_monitor)


def _connect(args, registry, on_progress=None):
    from edge_sdk.errors import EdgeSDKError
    from edge_sdk.fleet import FleetMonitor
    from edge_sdk.mqtt.client import MqttClient

    client = MqttClient(mqtt_config_for(args))
    FleetMonitor(client, registry, on_progress=on_progress)
    client.start()
    if not client.wait_connected(client.config.connect_timeout):
        client.close()
        raise EdgeSDKError(f"cannot reach the broker at {client.config.url}")
    return client


def mqtt_config_for(args):
    import os

    from edge_sdk.cli._args import mqtt_config

    return mqtt_config(args, client_id=f"edge-sdk-fleet-{os.getpid()}")


def _age(at: float | None) -> str:
    if at is None:
        return "-"
    seconds = max(time.time() - at, 0)
    return f"{seconds:.0f} s ago" if seconds < 120 else f"{seconds / 60:.0f} min ago" if seconds < 7200 \
        else f"{seconds / 3600:.0f} h ago"


def _rows(devices):
    rows = []
    for d in devices:
        t = d.telemetry or {}
        latency = t.get("latency_ms") or {}
        rows.append((d.device_id, d.state, d.profile or "-", ",".join(d.groups) or "-",
                     f"{d.model_name} {d.model_version}" if d.model_name else "-",
                     f"{t['fps']:.1f}" if "fps" in t else "-",
                     f"{latency['p50']:.1f}/{latency['p99']:.1f}" if latency else "-",
                     _age(d.telemetry_at), f"{d.job_state} ({d.job_id})" if d.job_state else "-"))
    return rows


HEADERS = ("device", "state", "profile", "groups", "model", "fps", "p50/p99 ms", "telemetry", "last job")


def run_status(args: argparse.Namespace) -> int:
    from edge_sdk.fleet import Registry

    registry = Registry(args.registry or default_registry())
    try:
        if args.listen > 0:
            client = _connect(args, registry)
            time.sleep(args.listen)
            client.close()
        devices = registry.devices(args.group)
    finally:
        registry.close()
    if args.json:
        emit_json({"devices": [d.to_dict() for d in devices]})
        return 0
    if not devices:
        print("no devices known yet")
        return 0
    table(_rows(devices), HEADERS)
    online = sum(d.state == "online" for d in devices)
    print(f"{len(devices)} device(s), {online} online")
    return 0


def run_monitor(args: argparse.Namespace) -> int:
    from edge_sdk.fleet import Registry

    registry = Registry(args.registry or default_registry())

    def on_progress(p) -> None:
        step(f"{p.device_id}: job {p.job_id} {p.state} {p.bytes_done}/{p.bytes_total}"
             + (f" ({p.error})" if p.error else ""))

    client = _connect(args, registry, on_progress)
    started = time.monotonic()
    try:
        while args.duration is None or time.monotonic() - started < args.duration:
            time.sleep(min(args.every, args.duration or args.every))
            devices = registry.devices(args.group)
            table(_rows(devices), HEADERS)
    except KeyboardInterrupt:
        pass
    finally:
        client.close()
        registry.close()
    return 0
