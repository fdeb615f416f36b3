"""The host side of the fleet: device registry, bundle serving and rollouts (``edge-sdk deploy``, ``fleet``)."""

from edge_sdk.fleet.registry import DeviceRecord, FleetMonitor, Registry
from edge_sdk.fleet.rollout import (
    Rollout,
    RolloutError,
    RolloutResult,
    bundle_ref,
    new_job_id,
    parse_fraction,
    plan_waves,
    sign_rollback,
)
from edge_sdk.fleet.server import BundleServer, ChunkServer

__all__ = [
    "BundleServer",
    "ChunkServer",
    "DeviceRecord",
    "FleetMonitor",
    "Registry",
    "Rollout",
    "RolloutError",
    "RolloutResult",
    "bundle_ref",
    "new_job_id",
    "parse_fraction",
    "plan_waves",
    "sign_rollback",
]
