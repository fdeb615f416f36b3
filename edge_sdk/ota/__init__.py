"""Over-the-air model updates: the state machine, its persisted store, A/B slots, downloads, health checks.

:class:`OtaManager` composes them; the device agent (:mod:`edge_sdk.agent`)
feeds it jobs from MQTT and hands it the running pipeline. See
:mod:`edge_sdk.ota.states` for the states, the transition table and what a
restart does in each state.
"""

from edge_sdk.ota.download import ChunkDownloader, HttpDownloader
from edge_sdk.ota.health import HealthPolicy, HealthResult, PipelineSample
from edge_sdk.ota.manager import MAX_RESUMES, ModelHost, OtaManager, file_sha256
from edge_sdk.ota.states import STATES, TERMINAL, TRANSITIONS
from edge_sdk.ota.store import OtaError, OtaRecord, SlotInfo, Slots, StateStore, TransitionError, atomic_write

__all__ = [
    "MAX_RESUMES",
    "STATES",
    "TERMINAL",
    "TRANSITIONS",
    "ChunkDownloader",
    "HealthPolicy",
    "HealthResult",
    "HttpDownloader",
    "ModelHost",
    "OtaError",
    "OtaManager",
    "OtaRecord",
    "PipelineSample",
    "SlotInfo",
    "Slots",
    "StateStore",
    "TransitionError",
    "atomic_write",
    "file_sha256",
]
