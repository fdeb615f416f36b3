"""``edge-sdk deploy``: roll a bundle out to devices or a group, canary first, halting on failures."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from edge_sdk.cli._args import (
    add_broker_options,
    add_json,
    add_trusted_dir,
    default_registry,
    fraction,
    mqtt_config,
    positive_float,
    positive_int,
)
from edge_sdk.cli._output import emit_json, step, table

EXIT_HALTED = 3


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "deploy",
        help="roll a bundle out over the air (canary, failure threshold, live progress)",
        description="Verifies the bundle, serves it (HTTP with Range resume, or MQTT chunks), publishes an OTA "
        "job to each target device in waves (the canary wave first) and waits for each wave to commit. Halts "
        f"when the failure rate exceeds --max-failure-rate; exits {EXIT_HALTED} on a halted rollout, 1 when "
        "any device failed, 0 when all committed.",
    )
    p.add_argument("bundle", type=Path, help=".edgepkg file")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--device", action="append", dest="devices", help="a target device id (repeatable)")
    target.add_argument("--group", help="every device that reports this group in its status")
    add_broker_options(p)
    p.add_argument("--canary", type=fraction, default=0.0,
                   help="share of the targets updated first, e.g. 10%% (at least one device); default none")
    p.add_argument("--max-failure-rate", type=fraction, default=0.2,
                   help="halt when more than this share of the devices tried failed (default 20%%)")
    p.add_argument("--wave-size", type=positive_int, default=None,
                   help="devices per wave after the canary (default: all the rest at once)")
    p.add_argument("--timeout", type=positive_float, default=600.0,
                   help="seconds a wave may take; devices not done by then count as failed (default 600)")
    p.add_argument("--transport", choices=("http", "mqtt"), default="http",
                   help="how devices fetch the bundle: from this command's HTTP server, or as MQTT chunks")
    p.add_argument("--url", default=None,
                   help="the bundle is already hosted here (any HTTP/S3 URL with Range support); serve nothing")
    p.add_argument("--serve-host", default="127.0.0.1",
                   help="address the HTTP server binds (default 127.0.0.1; 0.0.0.0 for a real fleet)")
    p.add_argument("--serve-port", type=int, default=0, help="HTTP port (default: a free one)")
    p.add_argument("--advertise", default=None, help="host name devices use to reach this server")
    p.add_argument("--discover", type=positive_float, default=2.0,
                   help="seconds to collect the devices' retained status before choosing targets (default 2)")
    p.add_argument("--rollback", action="store_true",
                   help="allow an older version: the job carries a rollback signature made with --key")
    p.add_argument("--key", type=Path, default=None, help="private key that signs a --rollback")
    p.add_argument("--registry", type=Path, default=None, help=f"fleet registry (default {default_registry()})")
    p.add_argument("--allow-unsigned", action="store_true", help="deploy an unsigned bundle (development only)")
    add_trusted_dir(p)
    add_json(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from edge_sdk.bundle.signing import SigningKey, default_key_dir
    from edge_sdk.errors import EdgeSDKError
    from edge_sdk.fleet import BundleServer, ChunkServer, FleetMonitor, Registry, Rollout, bundle_ref
    from edge_sdk.fleet.rollout import RolloutError, new_job_id, sign_rollback
    from edge_sdk.mqtt.client import MqttClient
    from edge_sdk.mqtt.schemas import MQTT_CHUNKS

    bundle = bundle_ref(args.bundle, trusted=args.trusted_dir, allow_unsigned=args.allow_unsigned)
    job_id = new_job_id(bundle)
    signature = None
    if args.rollback:
        key_path = args.key or default_key_dir() / "signing.key"
        signature = sign_rollback(SigningKey.from_file(key_path), job_id, bundle)
    say = step  # progress on stderr, also with --json (stdout stays machine-readable)
    say(f"deploying {bundle.name} {bundle.version} for {bundle.profile} ({bundle.size} bytes), job {job_id}")
    registry = Registry(args.registry or default_registry())
    client = MqttClient(mqtt_config(args, client_id=f"edge-sdk-deploy-{job_id}"))
    server = None
    try:
        holder: list[Rollout] = []
        FleetMonitor(client, registry, on_progress=lambda p: holder and holder[0].on_progress(p))
        client.start()
        if not client.wait_connected(client.config.connect_timeout):
            raise EdgeSDKError(f"cannot reach the broker at {client.config.url}")
        time.sleep(args.discover)  # retained status messages of every device arrive now
        targets, skipped = _targets(args, registry, bundle)
        for device, why in skipped.items():
            say(f"skipping {device}: {why}")
        if not targets:
            raise RolloutError(f"no target devices ({'group ' + args.group if args.group else 'devices given'}: "
                               f"none online with profile {bundle.profile})")
        if args.url:
            url = args.url
        elif args.transport == "mqtt":
            url = MQTT_CHUNKS
            ChunkServer(client).add_job(job_id, args.bundle)
        else:
            server = BundleServer(args.serve_host, args.serve_port, advertise=args.advertise)
            url = server.add(args.bundle, bundle.sha256)
            say(f"serving the bundle at {url}")
        rollout = Rollout(client, bundle, url, canary=args.canary, max_failure_rate=args.max_failure_rate,
                          wave_size=args.wave_size, timeout_s=args.timeout, job_id=job_id,
                          rollback_signature=signature, on_event=say)
        holder.append(rollout)
        result = rollout.run(targets)
        result.skipped.update(skipped)
        client.flush(5.0)
    finally:
        if server is not None:
            server.close()
        client.close()
        registry.close()
    if args.json:
        emit_json(result.to_dict())
    else:
        rows = [(d, o.wave, o.state, f"{o.seconds:.1f}" if o.seconds is not None else "-", o.error or "")
                for d, o in sorted(result.outcomes.items())]
        table(rows, ("device", "wave", "state", "seconds", "error"))
        print(f"{len(result.committed)} committed, {len(result.failed)} failed"
              + (f"; HALTED: {result.reason}" if result.halted else ""))
    if result.halted:
        print(f"edge-sdk: rollout halted: {result.reason}", file=sys.stderr)
        return EXIT_HALTED
    return 1 if result.failed else 0


def _targets(args, registry, bundle) -> tuple[list[str], dict[str, str]]:
    skipped: dict[str, str] = {}
    if args.devices:
        known = {d.device_id: d for d in registry.devices()}
        targets = []
        for device in dict.fromkeys(args.devices):
            record = known.get(device)
            if record is not None and record.profile and record.profile != bundle.profile:
                skipped[device] = f"profile {record.profile}, the bundle is for {bundle.profile}"
            else:
                targets.append(device)  # unknown or offline: the retained job waits for it
        return targets, skipped
    targets = []
    for record in registry.devices(args.group):
        if record.state != "online":
            skipped[record.device_id] = "offline"
        elif record.profile != bundle.profile:
            skipped[record.device_id] = f"profile {record.profile}, the bundle is for {bundle.profile}"
        else:
            targets.append(record.device_id)
    return targets, skipped
