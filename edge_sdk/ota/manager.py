"""The OTA manager: runs one job at a time through the persisted state machine.

Jobs arrive from MQTT (:meth:`OtaManager.submit`, on paho's thread, returns at
once) and run on the manager's own thread. Every transition is persisted by
:class:`~edge_sdk.ota.store.StateStore` before the work of the new state
starts, and reported as an ``OtaProgress`` message. The running model is only
ever replaced through the :class:`ModelHost` (the agent's pipeline), and the
active-slot pointer moves only when the health check passed, so whatever
happens the device runs a complete, verified bundle.
"""

from __future__ import annotations

import hashlib
import logging
import queue
import shutil
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Mapping, Protocol

from edge_sdk.bundle.manifest import semver_key
from edge_sdk.bundle.reader import open_bundle
from edge_sdk.bundle.signing import TrustStore
from edge_sdk.errors import EdgeSDKError
from edge_sdk.mqtt.schemas import MQTT_CHUNKS, OtaJob, OtaProgress, rollback_statement
from edge_sdk.ota import states
from edge_sdk.ota.download import Cancelled, ChunkDownloader, HttpDownloader
from edge_sdk.ota.health import HealthPolicy, PipelineSample, golden_problem, watch
from edge_sdk.ota.store import OtaError, SlotInfo, Slots, StateStore

if TYPE_CHECKING:
    from device_profiles import DeviceProfile
    from edge_sdk.model import Model

log = logging.getLogger(__name__)

MAX_RESUMES = 3  # restarts of the agent within one job before the loop guard gives up
FREE_DISK_RESERVE = 16 << 20  # bytes kept free beyond the download itself
_STOP = object()


class ModelHost(Protocol):
    """Where the running model lives (the agent's pipeline)."""

    def running(self) -> "Model | None": ...

    def swap(self, model: "Model") -> "Model | None":
        """Make ``model`` serve, between two frames; returns the model it replaced."""

    def sample(self) -> PipelineSample: ...


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


class OtaManager:
    """Installs OTA jobs into two slots under ``root`` and hot-swaps them into ``host``."""

    def __init__(
        self,
        root: str | Path,
        device_id: str,
        profile: "DeviceProfile",
        trusted: TrustStore,
        host: ModelHost,
        report: Callable[[OtaProgress], None],
        *,
        chunks: ChunkDownloader | None = None,
        http: HttpDownloader | None = None,
        policy: HealthPolicy = HealthPolicy(),
        allow_unsigned: bool = False,
        on_commit: Callable[[], None] | None = None,
        hold: Mapping[str, float] | None = None,
        free_disk_reserve: int = FREE_DISK_RESERVE,
        install_command: str | None = None,
        install_timeout_s: float = 300.0,
    ) -> None:
        self.root = Path(root)
        self.device_id = device_id
        self.profile = profile
        self.trust = trusted
        self.host = host
        self._report = report
        self._chunks = chunks
        self._http = http or HttpDownloader()
        self.policy = policy
        self.allow_unsigned = allow_unsigned
        self._on_commit = on_commit or (lambda: None)
        self._hold = dict(hold or {})
        self._reserve = free_disk_reserve
        self.install_command = install_command
        self.install_timeout_s = install_timeout_s
        self.store = StateStore(self.root / "ota.json")
        self.slots = Slots(self.root)
        self._jobs: queue.Queue = queue.Queue(maxsize=16)
        self._cancel = threading.Event()
        self._thread: threading.Thread | None = None
        self._resume_pending = False
        self._staged_here: str | None = None  # the job this process verified and staged

    @property
    def download_dir(self) -> Path:
        return self.root / "download"

    # -- start-up -----------------------------------------------------------------------------

    def load(self, path: Path) -> "Model":
        from edge_sdk.model import load

        return load(path, profile=self.profile, trusted=self.trust, allow_unsigned=self.allow_unsigned)

    def install_initial(self, bundle: str | Path) -> SlotInfo:
        """Put a first bundle into slot A and make it active (a device's first boot)."""
        bundle = Path(bundle)
        verified = open_bundle(bundle, trusted=self.trust, allow_unsigned=self.allow_unsigned, profile=self.profile)
        staging = self.download_dir / "initial.part"
        staging.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(bundle, staging)
        path = self.slots.install(staging, "a")
        info = SlotInfo("a", verified.manifest.name, verified.manifest.version, file_sha256(path))
        self.slots.set_active(info)
        log.info("installed %s %s into slot a", info.name, info.version)
        return info

    def recover(self) -> None:
        """Settle whatever state a previous run left, before the active model is loaded."""
        record = self.store.record
        state = record.state
        if state in (states.ACTIVATING, states.HEALTH_CHECK):
            active = self.slots.active
            if active is not None and record.job is not None and active.sha256 == record.job.bundle.sha256 \
                    and active.slot == record.slot:
                self._finish(states.COMMITTED, None)  # the pointer moved: the commit itself had happened
            else:
                reason = (f"the agent stopped during {state} (crash or kill); the new model never committed, "
                          "the previous model runs")
                self._finish(states.FAILED if state == states.ACTIVATING else states.ROLLED_BACK, reason, block=True)
        elif state in (states.DOWNLOADING, states.VERIFYING, states.STAGED):
            if record.resumes >= MAX_RESUMES:
                self._finish(states.FAILED, f"loop guard: the agent restarted {record.resumes + 1} times during "
                             f"this job (last in {state}); giving up")
            else:
                self.store.update(resumes=record.resumes + 1)
                self._resume_pending = True
                log.info("resuming OTA job %s in state %s (restart %d)", record.job_id, state, record.resumes + 1)

    def load_active(self) -> "Model | None":
        """The model of the active slot; if it no longer verifies, the other slot's, which becomes active."""
        active = self.slots.active
        if active is None:
            return None
        for slot in (active.slot, self.slots.other(active.slot)):
            path = self.slots.bundle_path(slot)
            if not path.exists():
                continue
            try:
                model = self.load(path)
            except EdgeSDKError as exc:
                log.error("slot %s does not load: %s", slot, exc)
                continue
            if slot != active.slot:
                log.error("falling back to slot %s (%s %s)", slot, model.name, model.version)
                self.slots.set_active(SlotInfo(slot, model.name, model.version, file_sha256(path)))
            return model
        log.error("neither slot holds a bundle that verifies; running without a model until an update arrives")
        return None

    # -- jobs ---------------------------------------------------------------------------------

    def start(self) -> "OtaManager":
        self._thread = threading.Thread(target=self._worker, name="edge-sdk-ota", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        self._cancel.set()
        try:
            self._jobs.put_nowait(_STOP)
        except queue.Full:
            pass
        if self._thread is not None:
            self._thread.join(timeout)

    def submit(self, job: OtaJob) -> None:
        """Queue a job (called from the MQTT thread; never blocks)."""
        try:
            self._jobs.put_nowait(job)
        except queue.Full:
            log.error("OTA job queue full; dropping job %s", job.job_id)
            self._progress_for(job, states.FAILED, 0, "the device's job queue is full; send the job again later")

    def _worker(self) -> None:
        if self._resume_pending:
            self._guarded(self._advance)
        while not self._cancel.is_set():
            job = self._jobs.get()
            if job is _STOP:
                return
            self._guarded(self._begin, job)

    def _guarded(self, fn, *args) -> None:
        try:
            fn(*args)
        except Cancelled:
            log.info("OTA work interrupted by shutdown in state %s; it resumes on the next start",
                     self.store.record.state)
        except Exception as exc:  # noqa: BLE001 - the worker must survive any job
            log.exception("OTA job failed unexpectedly")
            if self.store.record.state not in states.STARTABLE:
                self._fail_current(f"internal error: {type(exc).__name__}: {exc}")

    # -- pre-checks ---------------------------------------------------------------------------

    def _begin(self, job: OtaJob) -> None:
        record = self.store.record
        if record.job_id == job.job_id and record.state not in states.STARTABLE:
            log.info("job %s is already in progress (%s)", job.job_id, record.state)
            return
        done = record.finished(job.job_id)
        if done is not None:
            log.info("job %s already ended here (%s); reporting it again", job.job_id, done.state)
            self._progress_for(job, done.state, job.bundle.size if done.state == states.COMMITTED else 0, done.error)
            return
        active = self.slots.active
        if active is not None and active.sha256 == job.bundle.sha256:
            log.info("job %s: %s %s is already running", job.job_id, job.bundle.name, job.bundle.version)
            self.store.update(history=(*record.history, *self._finished_entry(job, states.COMMITTED, None)))
            self._progress_for(job, states.COMMITTED, job.bundle.size, None)
            return
        problem = self._precheck(job)
        if problem is not None:
            log.warning("refusing job %s: %s", job.job_id, problem)
            self.store.finish(states.FAILED, problem, job=job)
            self._progress(states.FAILED, 0, problem)
            return
        self.store.transition(states.DOWNLOADING, job=job, slot=self.slots.inactive, bytes_done=0, error=None,
                              resumes=0, etag=None)
        self._entered(states.DOWNLOADING)
        self._advance()

    @staticmethod
    def _finished_entry(job: OtaJob, state: str, error: str | None):
        from edge_sdk.ota.store import Finished

        return (Finished(job.job_id, state, job.bundle.sha256, job.bundle.version, error, time.time()),)

    def _precheck(self, job: OtaJob) -> str | None:
        bundle = job.bundle
        if bundle.profile != self.profile.id:
            return (f"bundle {bundle.name} {bundle.version} is built for profile {bundle.profile!r}; this device is "
                    f"{self.profile.id!r}")
        if bundle.sha256 in self.store.record.blocked:
            return (f"bundle {bundle.name} {bundle.version} ({bundle.sha256[:12]}) already failed its health check "
                    "on this device; publish a new version")
        problem = self._version_problem(job, bundle.name, bundle.version)
        if problem is not None:
            return problem
        if job.url == MQTT_CHUNKS and self._chunks is None:
            return "the job asks for an MQTT chunk download but this agent has no MQTT chunk transport"
        free = shutil.disk_usage(self.root).free
        need = bundle.size + self._reserve
        if free < need:
            return (f"not enough free disk in {self.root}: the bundle needs {bundle.size} bytes plus a "
                    f"{self._reserve} byte reserve, {free} bytes are free")
        return None

    def _version_problem(self, job: OtaJob, name: str, version: str) -> str | None:
        active = self.slots.active
        try:
            newer = active is None or active.name != name or semver_key(version) > semver_key(active.version)
        except ValueError as exc:
            return f"bad version: {exc}"
        if newer:
            return None
        if not job.rollback:
            return (f"version {version} is not newer than the running {active.name} {active.version}; versions only "
                    "move forward unless the job is a signed rollback")
        if job.rollback_signature is None:
            return "the job asks for a rollback but carries no rollback signature"
        try:
            signer = self.trust.verify(rollback_statement(job.job_id, job.bundle), job.rollback_signature.encode(),
                                       f"rollback job {job.job_id}")
        except EdgeSDKError as exc:
            return f"rollback refused: {exc}"
        log.warning("job %s: signed rollback to %s %s (signer %s)", job.job_id, name, version, signer)
        return None

    # -- the state machine --------------------------------------------------------------------

    def _advance(self) -> None:
        """Run the current job from its persisted state until it ends."""
        steps = {
            states.DOWNLOADING: self._download,
            states.VERIFYING: self._verify,
            states.STAGED: self._activate,  # activating and health_check are settled by recover() on a restart
        }
        while (step := steps.get(self.store.record.state)) is not None:
            if self._cancel.is_set():
                raise Cancelled("stopping")
            try:
                step()
            except (Cancelled, KeyboardInterrupt):
                raise
            except EdgeSDKError as exc:
                self._fail_current(str(exc))

    def _part(self) -> Path:
        return self.download_dir / f"{self.store.record.job_id}.part"

    def _download(self) -> None:
        record = self.store.record
        job = record.job
        total = job.bundle.size
        last_report = [0.0]

        def progress(done: int, etag: str | None) -> None:
            self.store.update(bytes_done=done, etag=etag)
            now = time.monotonic()
            if now - last_report[0] >= 1.0 or done == total:
                last_report[0] = now
                self._progress(states.DOWNLOADING, done, None)

        if job.url == MQTT_CHUNKS:
            self._chunks.fetch(job.job_id, self._part(), total, record.bytes_done, progress, self._cancel)
        else:
            self._http.fetch(job.url, self._part(), total, record.bytes_done, record.etag, progress, self._cancel)
        self._move(states.VERIFYING, bytes_done=total)

    def _verify(self) -> None:
        record = self.store.record
        job = record.job
        part = self._part()
        staged = self.slots.bundle_path(record.slot)
        if not part.exists() and staged.exists() and file_sha256(staged) == job.bundle.sha256:
            # verified and moved into the slot, then the agent stopped before the state said so
            self._move(states.STAGED)
            return
        if not part.exists() or part.stat().st_size != job.bundle.size:
            raise OtaError(f"{part}: the download is missing or incomplete")
        digest = file_sha256(part)
        if digest != job.bundle.sha256:
            part.unlink()
            raise OtaError(f"downloaded bundle sha256 {digest[:16]}... does not match the job's "
                           f"{job.bundle.sha256[:16]}...: corrupted or tampered in transit")
        verified = open_bundle(part, trusted=self.trust, allow_unsigned=self.allow_unsigned, profile=self.profile)
        manifest = verified.manifest
        if (manifest.name, manifest.version) != (job.bundle.name, job.bundle.version):
            raise OtaError(f"the signed manifest says {manifest.name} {manifest.version}, the job "
                           f"{job.bundle.name} {job.bundle.version}")
        problem = self._version_problem(job, manifest.name, manifest.version)
        if problem is not None:
            raise OtaError(problem)
        self.slots.install(part, self.store.record.slot)
        self._staged_here = job.job_id
        self._move(states.STAGED)

    def _activate(self) -> None:
        """staged -> activating -> health_check -> committed | rolled_back, in one go (not resumable midway)."""
        record = self.store.record
        job = record.job
        path = self.slots.bundle_path(record.slot)
        if record.state == states.STAGED:
            # Staged by an earlier run of the agent: check the slot still holds it (this run just verified it).
            if self._staged_here != job.job_id and (not path.exists() or file_sha256(path) != job.bundle.sha256):
                raise OtaError(f"slot {record.slot} does not hold the staged bundle any more")
            self._move(states.ACTIVATING)
        model = self.load(path)
        try:
            model.warmup(1)
            self._move(states.HEALTH_CHECK)
            problem = golden_problem(model, self.policy) or self._run_install_command(path, job)
            if problem is not None:
                model.close()
                self._roll_back(problem)
                return
            before = self.host.sample()
            old = self.host.swap(model)
        except BaseException:
            model.close()
            raise
        result = watch(self.host, before, self.policy, self._cancel)
        if self._cancel.is_set() and result.ok:
            raise Cancelled("stopping during the health check")  # recover() rolls back on the next start
        if not result.ok:
            if old is not None:
                self.host.swap(old)
            model.close()
            self._roll_back(result.reason)
            return
        self.slots.set_active(SlotInfo(record.slot, model.name, model.version, job.bundle.sha256))
        self._finish(states.COMMITTED, None)
        if old is not None:
            old.close()
        log.info("job %s committed: %s %s runs from slot %s (health: %d frames, p50 %s ms)", job.job_id,
                 model.name, model.version, record.slot, result.frames, result.p50_after_ms)
        self._on_commit()

    def _run_install_command(self, path: Path, job: OtaJob) -> str | None:
        """Run the agent's install command on the verified, extracted bundle; why it failed, or ``None``.

        This is how a bundle reaches what the agent does not run itself: a gateway flashing the signed
        MCUboot image a bundle carries (``firmware/...``) onto a microcontroller with mcumgr, esptool or
        dfu-util, and checking that it came up. A non-zero exit or a timeout fails the health check.
        """
        if not self.install_command:
            return None
        import os
        import subprocess
        import tempfile

        active = self.slots.active
        with tempfile.TemporaryDirectory(prefix="edge-sdk-install-", dir=self.root) as tmp:
            extracted = Path(tmp) / "bundle"
            open_bundle(path, trusted=self.trust, allow_unsigned=self.allow_unsigned, profile=self.profile,
                        extract_to=extracted)
            env = {**os.environ, "EDGE_SDK_BUNDLE": str(path), "EDGE_SDK_BUNDLE_DIR": str(extracted),
                   "EDGE_SDK_JOB_ID": job.job_id, "EDGE_SDK_DEVICE_ID": self.device_id,
                   "EDGE_SDK_NAME": job.bundle.name, "EDGE_SDK_VERSION": job.bundle.version,
                   "EDGE_SDK_PREVIOUS_VERSION": active.version if active else ""}
            log.info("job %s: running the install command: %s", job.job_id, self.install_command)
            try:
                done = subprocess.run(self.install_command, shell=True, env=env, cwd=extracted,
                                      capture_output=True, text=True, timeout=self.install_timeout_s)
            except subprocess.TimeoutExpired:
                return f"install command did not finish within {self.install_timeout_s:g} s"
        for line in (done.stdout + done.stderr).splitlines()[-20:]:
            log.info("install command: %s", line)
        if done.returncode != 0:
            last = (done.stderr.strip() or done.stdout.strip()).splitlines()[-1:] or ["no output"]
            return f"install command exited with status {done.returncode}: {last[0][:500]}"
        return None

    def _roll_back(self, reason: str) -> None:
        log.warning("job %s rolled back: %s", self.store.record.job_id, reason)
        self._finish(states.ROLLED_BACK, reason, block=True)

    # -- bookkeeping --------------------------------------------------------------------------

    def _move(self, state: str, **changes) -> None:
        self.store.transition(state, **changes)
        self._entered(state)

    def _entered(self, state: str) -> None:
        record = self.store.record
        self._progress(state, record.bytes_done, None)
        hold = self._hold.get(state)
        if hold:  # fault-injection point for crash-safety tests: pause right after the state was persisted
            log.warning("holding %.1f s in state %s (--hold-at)", hold, state)
            if self._cancel.wait(hold):
                raise Cancelled("stopping")

    def _finish(self, state: str, error: str | None, block: bool = False) -> None:
        record = self.store.finish(state, error, block=block)
        done = record.job.bundle.size if state == states.COMMITTED and record.job else record.bytes_done
        self._progress(state, done, error)
        part = self.download_dir / f"{record.job_id}.part"
        part.unlink(missing_ok=True)

    def _fail_current(self, reason: str) -> None:
        if self.store.record.state == states.HEALTH_CHECK:  # the old model is back (or never left): a rollback
            self._roll_back(reason)
            return
        log.warning("job %s failed: %s", self.store.record.job_id, reason)
        self._finish(states.FAILED, reason)

    def _progress(self, state: str, done: int, error: str | None) -> None:
        job = self.store.record.job
        if job is not None:
            self._progress_for(job, state, done, error)

    def _progress_for(self, job: OtaJob, state: str, done: int, error: str | None) -> None:
        total = job.bundle.size
        message = OtaProgress(job.job_id, self.device_id, state, min(done, total), total,
                              error[:4096] if error else None, time.time())
        try:
            self._report(message)
        except Exception:  # noqa: BLE001 - reporting must never break the update itself
            log.exception("could not report OTA progress")
