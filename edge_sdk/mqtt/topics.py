"""The MQTT topic tree of edge-sdk: builders, subscription filters and a parser.

With the default prefix ``edge`` (any prefix of one or more plain levels works,
``acme/edge`` included):

=====================  ==================================  ===============  =====================
kind                   topic                               direction        payload
=====================  ==================================  ===============  =====================
``status``             ``edge/<device>/status``            device -> fleet  :class:`Status`, retained; also the last will
``telemetry``          ``edge/<device>/telemetry``         device -> fleet  :class:`Telemetry`
``ota_job``            ``edge/<device>/ota/job``           fleet -> device  :class:`OtaJob`
``group_ota_job``      ``edge/group/<group>/ota/job``      fleet -> devices :class:`OtaJob`
``ota_progress``       ``edge/<device>/ota/progress``      device -> fleet  :class:`OtaProgress`
``ota_chunk_request``  ``edge/<device>/ota/chunk/request`` device -> fleet  :class:`ChunkRequest` (JSON)
``ota_chunk_data``     ``edge/<device>/ota/chunk/data``    fleet -> device  :class:`ChunkData` (binary)
=====================  ==================================  ===============  =====================

Chunk transfer: the job id and the offset travel inside the payloads (the JSON
request and the binary chunk header), not in the topic. A device therefore
subscribes to one fixed topic for all its downloads, the fleet answers every
device through one ``edge/+/ota/chunk/request`` subscription, and a chunk that
arrives late for an old job is recognised by its header and dropped.

Device and group ids are 1 to 64 characters of ``A-Z a-z 0-9 _ . -``: no ``/``,
no MQTT wildcards, nothing a broker treats specially. ``group`` is reserved as a
device id because ``edge/group/...`` holds the group topics.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import NamedTuple

from edge_sdk.errors import EdgeSDKError


class MqttError(EdgeSDKError):
    """Anything wrong in the MQTT layer: configuration, connection, topics."""


class TopicError(MqttError):
    """A device or group id, a prefix or a topic is not part of edge-sdk's topic tree."""


_ID_RE = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
_PREFIX_LEVEL_RE = re.compile(r"[A-Za-z0-9_.\-]{1,64}")

GROUP_LEVEL = "group"

# kind -> the levels after "<prefix>/<device>"
_DEVICE_KINDS: dict[str, tuple[str, ...]] = {
    "status": ("status",),
    "telemetry": ("telemetry",),
    "ota_job": ("ota", "job"),
    "ota_progress": ("ota", "progress"),
    "ota_chunk_request": ("ota", "chunk", "request"),
    "ota_chunk_data": ("ota", "chunk", "data"),
}
_GROUP_KINDS: dict[str, tuple[str, ...]] = {
    "group_ota_job": ("ota", "job"),
}
KINDS: tuple[str, ...] = (*_DEVICE_KINDS, *_GROUP_KINDS)


def validate_id(value: object, what: str = "device id") -> str:
    """Return ``value`` when it is a valid device, group or job id; raise :class:`TopicError` otherwise."""
    if not isinstance(value, str) or not _ID_RE.fullmatch(value):
        raise TopicError(
            f"invalid {what} {value!r}: use 1 to 64 characters of A-Z, a-z, 0-9, '_', '.', '-' "
            "(no '/', '+', '#' or spaces)"
        )
    if what == "device id" and value == GROUP_LEVEL:
        raise TopicError(f"invalid device id {value!r}: it is reserved for the group topics; choose another id")
    return value


class ParsedTopic(NamedTuple):
    """What :meth:`Topics.parse` found: the kind (see :data:`KINDS`) and the device or group id."""

    kind: str
    target: str


@dataclass(frozen=True)
class Topics:
    """Builds and parses the topics under one prefix (default ``edge``)."""

    prefix: str = "edge"

    def __post_init__(self) -> None:
        levels = self.prefix.split("/") if isinstance(self.prefix, str) else [None]
        for level in levels:
            if not isinstance(level, str) or not _PREFIX_LEVEL_RE.fullmatch(level):
                raise TopicError(
                    f"invalid topic prefix {self.prefix!r}: use one or more '/'-separated levels of "
                    "A-Z, a-z, 0-9, '_', '.', '-' (no wildcards, no leading or trailing '/', no empty level)"
                )

    # -- builders -------------------------------------------------------------------------------

    def status(self, device: str) -> str:
        return self._device_topic("status", device)

    def telemetry(self, device: str) -> str:
        return self._device_topic("telemetry", device)

    def ota_job(self, device: str) -> str:
        return self._device_topic("ota_job", device)

    def group_ota_job(self, group: str) -> str:
        return "/".join((self.prefix, GROUP_LEVEL, validate_id(group, "group id"), *_GROUP_KINDS["group_ota_job"]))

    def ota_progress(self, device: str) -> str:
        return self._device_topic("ota_progress", device)

    def ota_chunk_request(self, device: str) -> str:
        return self._device_topic("ota_chunk_request", device)

    def ota_chunk_data(self, device: str) -> str:
        return self._device_topic("ota_chunk_data", device)

    def build(self, kind: str, target: str) -> str:
        """The topic of ``kind`` for a device (or a group, for ``group_ota_job``)."""
        if kind in _GROUP_KINDS:
            return self.group_ota_job(target)
        return self._device_topic(kind, target)

    def subscription(self, kind: str) -> str:
        """A filter matching ``kind`` for every device or group, e.g. ``edge/+/status``."""
        if kind in _GROUP_KINDS:
            return "/".join((self.prefix, GROUP_LEVEL, "+", *_GROUP_KINDS[kind]))
        return "/".join((self.prefix, "+", *self._levels(kind)))

    def _device_topic(self, kind: str, device: str) -> str:
        return "/".join((self.prefix, validate_id(device), *self._levels(kind)))

    @staticmethod
    def _levels(kind: str) -> tuple[str, ...]:
        try:
            return _DEVICE_KINDS[kind]
        except KeyError:
            raise TopicError(f"unknown topic kind {kind!r}; known kinds: {', '.join(KINDS)}") from None

    # -- parser ---------------------------------------------------------------------------------

    def parse(self, topic: str) -> ParsedTopic:
        """``(kind, device_or_group)`` of a topic; :class:`TopicError` for anything outside the tree."""
        head = self.prefix + "/"
        if not isinstance(topic, str) or not topic.startswith(head):
            raise TopicError(f"topic {topic!r} is not under the prefix {self.prefix!r}")
        levels = tuple(topic[len(head):].split("/"))
        if len(levels) >= 2 and levels[0] == GROUP_LEVEL:
            for kind, tail in _GROUP_KINDS.items():
                if levels[2:] == tail:
                    return ParsedTopic(kind, validate_id(levels[1], "group id"))
        for kind, tail in _DEVICE_KINDS.items():
            if levels[1:] == tail:
                return ParsedTopic(kind, validate_id(levels[0]))
        raise TopicError(f"topic {topic!r} is not an edge-sdk topic; known kinds: {', '.join(KINDS)}")
