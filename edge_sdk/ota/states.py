"""The OTA update's states and the only transitions allowed between them.

One update (one job) walks::

    idle -> downloading -> verifying -> staged -> activating -> health_check -> committed
                 |             |          |           |               |
                 +-------------+----------+-----------+--> failed     +--> rolled_back

``committed``, ``rolled_back`` and ``failed`` end a job; ``idle`` is the state
of a device that has never had one. A new job may start from any of those
four, either into ``downloading`` or, when a pre-check refuses it (profile,
version, free disk), straight into ``failed``.

What each state means on disk, and what a restart does with it (see
:meth:`edge_sdk.ota.manager.OtaManager.recover`):

===============  ==================================================  ==========================================
state            on disk                                             after a crash or kill -9
===============  ==================================================  ==========================================
``downloading``  ``download/<job>.part`` grows; ``bytes_done`` is    resume from ``bytes_done`` (what was
                 the prefix already written and fsynced              already verified), Range request / chunks
``verifying``    the download is complete                            verify again from the start
``staged``       the verified bundle sits in the inactive slot       activate it
``activating``   the new model is being loaded; active pointer old   roll back: the update never served
``health_check`` new model serving or about to; pointer still old    roll back, unless the pointer already
                                                                     names the new slot (commit happened)
``committed``    the active pointer names the new slot               nothing to do
===============  ==================================================  ==========================================

The active-slot pointer moves only at commit, so a device that stops before
the commit restarts on its old model by construction.
"""

from __future__ import annotations

from edge_sdk.mqtt.schemas import OTA_STATES

IDLE = "idle"
DOWNLOADING = "downloading"
VERIFYING = "verifying"
STAGED = "staged"
ACTIVATING = "activating"
HEALTH_CHECK = "health_check"
COMMITTED = "committed"
ROLLED_BACK = "rolled_back"
FAILED = "failed"

STATES: tuple[str, ...] = OTA_STATES
TERMINAL: frozenset[str] = frozenset({COMMITTED, ROLLED_BACK, FAILED})
# where a new job may begin
STARTABLE: frozenset[str] = frozenset({IDLE}) | TERMINAL

TRANSITIONS: dict[str, frozenset[str]] = {
    IDLE: frozenset({DOWNLOADING, FAILED}),
    DOWNLOADING: frozenset({VERIFYING, FAILED}),
    VERIFYING: frozenset({STAGED, FAILED}),
    STAGED: frozenset({ACTIVATING, FAILED}),
    ACTIVATING: frozenset({HEALTH_CHECK, FAILED}),
    HEALTH_CHECK: frozenset({COMMITTED, ROLLED_BACK}),
    COMMITTED: frozenset({DOWNLOADING, FAILED}),
    ROLLED_BACK: frozenset({DOWNLOADING, FAILED}),
    FAILED: frozenset({DOWNLOADING, FAILED}),
}


def allowed(current: str, new: str) -> bool:
    """Whether the table allows ``current -> new``."""
    return new in TRANSITIONS.get(current, frozenset())
