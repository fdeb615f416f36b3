"""The OTA machinery in-process: transition table, persisted store, slots, downloads, pre-checks, health checks.

Real files, real bundles (ONNX digits classifiers signed with real keys), a real
HTTP server and a real Mosquitto broker (private, on a free port) for the MQTT
chunk transfer. The end-to-end runs with agent processes are in test_agent.py.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
import uuid
from pathlib import Path

import numpy as np
import pytest

from edge_sdk.agent import PipelineHost
from edge_sdk.bundle.signing import SigningKey, TrustStore
from edge_sdk.fleet import BundleServer, ChunkServer
from edge_sdk.fleet.rollout import plan_waves, parse_fraction, sign_rollback, RolloutError
from edge_sdk.mqtt import BundleRef, ChunkData, MqttClient, MqttConfig, OtaJob, OtaProgress
from edge_sdk.ota import (
    MAX_RESUMES,
    STATES,
    TERMINAL,
    TRANSITIONS,
    ChunkDownloader,
    HealthPolicy,
    HttpDownloader,
    OtaError,
    OtaManager,
    PipelineSample,
    SlotInfo,
    Slots,
    StateStore,
    TransitionError,
    file_sha256,
)
from edge_sdk.ota import states
from edge_sdk.ota.download import Cancelled
from edge_sdk.ota.health import watch
from mqtt_fixtures import mosquitto_broker_fixture  # noqa: F401  (the mosquitto_broker fixture)
from ota_fixtures import RESTART_OUTCOMES, bundle_variant, make_bundles, tampered_copy


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Keys, trusted dir and the digits bundles, built once for the module."""
    from edge_sdk.bundle.signing import generate_keypair

    root = tmp_path_factory.mktemp("ota")
    pair = generate_keypair(root / "keys")
    trusted = root / "trusted"
    TrustStore.from_dir(trusted).add_file(pair.public_path, trusted)
    key = SigningKey.from_file(pair.private_path)
    stranger = SigningKey.generate()
    bundles = make_bundles(root / "bundles", key)
    wrong_key = bundle_variant(bundles.v2, root / "bundles" / "digits-1.3.0-stranger.edgepkg", stranger,
                               version="1.3.0")  # signed by a key the device does not trust
    return {"root": root, "key": key, "trusted": trusted, "bundles": bundles, "wrong_key": wrong_key}


def _ref(path: Path, name="digits", version="1.1.0", profile="generic-x86") -> BundleRef:
    return BundleRef(name, version, file_sha256(path), path.stat().st_size, profile)


def _job(path: Path, url: str, **ref) -> OtaJob:
    return OtaJob(f"job-{uuid.uuid4().hex[:8]}", _ref(path, **ref), url, False, time.time())


class Device:
    """An OtaManager over a PipelineHost (no source: the host holds the model), as the agent wires it."""

    def __init__(self, root: Path, world, policy=HealthPolicy(window_s=0.2)) -> None:
        from device_profiles import load_profile

        self.progress: list[OtaProgress] = []
        self.host = PipelineHost(None)
        self.manager = OtaManager(root, "dev", load_profile("generic-x86"), TrustStore.from_dir(world["trusted"]),
                                  self.host, self.progress.append, policy=policy)

    def boot(self, initial: Path | None = None) -> "Device":
        if initial is not None and self.manager.slots.active is None:
            self.manager.install_initial(initial)
        self.manager.recover()
        model = self.manager.load_active()
        if model is not None:
            self.host.swap(model)
        return self

    def run(self, job: OtaJob) -> OtaProgress:
        self.manager._begin(job)  # the worker thread's body, run inline for determinism
        return self.progress[-1]

    def version(self) -> str:
        return self.host.running().version

    def close(self) -> None:
        self.host.stop()


# -- the transition table and the store ------------------------------------------------------


def test_transition_table_covers_every_state_and_only_ends_in_terminal_states():
    assert set(TRANSITIONS) == set(STATES)
    assert TERMINAL == {"committed", "rolled_back", "failed"}
    happy = ["idle", "downloading", "verifying", "staged", "activating", "health_check", "committed"]
    assert all(states.allowed(a, b) for a, b in zip(happy, happy[1:]))
    assert not states.allowed("downloading", "committed")  # no skipping verification
    assert not states.allowed("staged", "committed")
    assert not states.allowed("health_check", "failed")  # a model that served is rolled back, not "failed"
    assert states.allowed("health_check", "rolled_back")
    for terminal in TERMINAL:
        assert states.allowed(terminal, "downloading")


def test_state_store_persists_each_transition_atomically_and_rejects_illegal_ones(tmp_path, world):
    store = StateStore(tmp_path / "ota.json")
    job = _job(world["bundles"].v2, "http://127.0.0.1:1/x")
    store.transition("downloading", job=job, slot="b")
    store.update(bytes_done=100, etag='"abc"')
    with pytest.raises(TransitionError, match="downloading -> committed"):
        store.transition("committed")
    again = StateStore(tmp_path / "ota.json").record
    assert (again.state, again.job, again.slot, again.bytes_done, again.etag) == ("downloading", job, "b", 100, '"abc"')
    assert [p.name for p in tmp_path.iterdir()] == ["ota.json"]  # no temp file left behind
    store.transition("failed", error="x")
    assert StateStore(tmp_path / "ota.json").record.state == "failed"


def test_state_store_moves_a_corrupt_record_aside_and_starts_idle(tmp_path, caplog):
    (tmp_path / "ota.json").write_text('{"state": "downloading", "job": ')
    store = StateStore(tmp_path / "ota.json")
    assert store.record.state == "idle"
    assert any(p.name.startswith("ota.json.corrupt-") for p in tmp_path.iterdir())
    assert "not a valid OTA state record" in caplog.text


def test_slots_install_and_pointer_survive_a_reload(tmp_path, world):
    slots = Slots(tmp_path)
    assert slots.active is None and slots.inactive == "a"
    copy = tmp_path / "incoming.edgepkg"
    copy.write_bytes(world["bundles"].v1.read_bytes())
    path = slots.install(copy, "a")
    slots.set_active(SlotInfo("a", "digits", "1.0.0", file_sha256(path)))
    again = Slots(tmp_path)
    assert again.active == slots.active and again.inactive == "b"
    (tmp_path / "active.json").write_text("{not json")
    assert Slots(tmp_path).active is None


# -- downloads ---------------------------------------------------------------------------------


@pytest.fixture
def big_file(tmp_path) -> Path:
    path = tmp_path / "blob.bin"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 3 << 20, dtype=np.uint8).tobytes())
    return path


def test_bundle_server_answers_ranges_like_a_real_http_server(big_file):
    with BundleServer() as server:
        url = server.add(big_file)
        data = big_file.read_bytes()
        with urllib.request.urlopen(urllib.request.Request(url, headers={"Range": "bytes=10-19"})) as r:
            assert r.status == 206 and r.headers["Content-Range"] == f"bytes 10-19/{len(data)}"
            assert r.read() == data[10:20]
        with urllib.request.urlopen(urllib.request.Request(url, headers={"Range": "bytes=-5"})) as r:
            assert r.read() == data[-5:]
        stale = {"Range": "bytes=10-", "If-Range": '"some-other-version"'}
        with urllib.request.urlopen(urllib.request.Request(url, headers=stale)) as r:
            assert r.status == 200 and len(r.read()) == len(data)  # a changed file is sent whole
        with pytest.raises(urllib.error.HTTPError, match="416"):
            urllib.request.urlopen(urllib.request.Request(url, headers={"Range": f"bytes={len(data)}-"}))
        with pytest.raises(urllib.error.HTTPError, match="404"):
            urllib.request.urlopen(url.rsplit("/", 2)[0] + "/../../etc/passwd")


def test_http_download_resumes_from_the_verified_prefix(tmp_path, big_file):
    part = tmp_path / "dl" / "job.part"
    total = big_file.stat().st_size
    checkpoints: list[int] = []
    cancel = threading.Event()

    def progress(done, etag):
        checkpoints.append(done)
        if done >= total // 3:
            cancel.set()

    with BundleServer(rate_limit=2 << 20) as server:
        url = server.add(big_file)
        with pytest.raises(Cancelled):
            HttpDownloader().fetch(url, part, total, 0, None, progress, cancel)
        verified = checkpoints[-1]
        assert 0 < verified < total
        with open(part, "ab") as fh:  # bytes written after the last checkpoint are not trusted
            fh.write(b"garbage that was never fsynced")
        served_before = server.bytes_served
        HttpDownloader().fetch(url, part, total, verified, f'"{file_sha256(big_file)}"', lambda d, e: None,
                               threading.Event())
        assert server.requests[-1][1] == verified  # a Range request from the verified offset
        assert server.bytes_served - served_before == total - verified
    assert file_sha256(part) == file_sha256(big_file)


def test_http_download_starts_over_when_the_file_changed_and_refuses_an_oversized_answer(tmp_path, big_file):
    part = tmp_path / "job.part"
    part.write_bytes(b"x" * 1000)  # an earlier, different file's prefix
    with BundleServer() as server:
        url = server.add(big_file)
        HttpDownloader().fetch(url, part, big_file.stat().st_size, 1000, '"old-etag"', lambda d, e: None,
                               threading.Event())
        assert file_sha256(part) == file_sha256(big_file)
        with pytest.raises(OtaError, match="more than the job's 1000 bytes"):
            HttpDownloader().fetch(url, tmp_path / "small.part", 1000, 0, None, lambda d, e: None, threading.Event())
        with pytest.raises(OtaError, match="HTTP 404"):
            HttpDownloader().fetch(url + "x", tmp_path / "x.part", 10, 0, None, lambda d, e: None, threading.Event())


def test_mqtt_chunk_download_checks_every_chunk_and_ignores_strangers(mosquitto_broker, tmp_path, big_file):
    config = MqttConfig.from_url(mosquitto_broker.url, prefix="chunks")
    fleet, device = MqttClient(config), MqttClient(config)
    try:
        server = ChunkServer(fleet)
        server.add_job("job-1", big_file)

        class Transport:
            def request_chunk(self, request):
                device.publish(config.topics.ota_chunk_request("dev-1"), request.to_payload())

        downloader = ChunkDownloader(Transport(), chunk_bytes=128 * 1024, window=8)

        def on_chunk(topic, payload):
            downloader.deliver(ChunkData.from_payload(payload))

        device.subscribe(config.topics.ota_chunk_data("dev-1"), on_chunk)
        for c in (fleet, device):
            c.start()
            assert c.wait_connected(10)
        time.sleep(0.3)
        # a chunk of another job and a chunk nobody asked for are dropped
        downloader._job_id = "job-1"
        downloader.deliver(ChunkData("job-2", 0, b"x" * 10))
        downloader._job_id = None
        part = tmp_path / "job-1.part"
        done: list[int] = []
        downloader.fetch("job-1", part, big_file.stat().st_size, 0, lambda d, e: done.append(d), threading.Event())
        assert file_sha256(part) == file_sha256(big_file)
        assert done[-1] == big_file.stat().st_size and downloader.dropped >= 1
        assert server.served >= big_file.stat().st_size // (128 * 1024)
    finally:
        fleet.close()
        device.close()


# -- pre-checks and refusals (the running model keeps serving) -----------------------------------


@pytest.fixture
def device(tmp_path, world):
    d = Device(tmp_path / "device", world).boot(world["bundles"].v1)
    yield d
    d.close()


@pytest.fixture(scope="module")
def server(world):
    with BundleServer() as s:
        yield s


def test_refused_bundles_leave_the_running_model_serving(device, world, server, tmp_path):
    b = world["bundles"]
    truncated = tmp_path / "truncated.edgepkg"
    truncated.write_bytes(b.v2.read_bytes()[:-200])
    cases = {
        "tampered": (tampered_copy(b.v2, tmp_path / "tampered.edgepkg"), {}, "'model.onnx' does not match its sha256 in the manifest"),
        "truncated": (truncated, {}, "not a readable zip container"),
        "wrong key": (world["wrong_key"], {"version": "1.3.0"}, "not trusted here"),
        "wrong profile in the job": (b.other_profile, {"profile": "jetson-orin-nano"}, "built for profile "
                                     "'jetson-orin-nano'; this device is 'generic-x86'"),
        "wrong profile, lying job": (b.other_profile, {}, "built for profile 'jetson-orin-nano' but this device"),
        "downgrade": (b.v0_old, {"version": "0.9.0"}, "not newer than the running digits 1.0.0"),
        "disk": (b.v2, {}, "not enough free disk"),
    }
    image = np.full((8, 8, 3), 128, np.uint8)
    before = device.host.running().predict(image)
    for name, (path, ref, reason) in cases.items():
        job = _job(path, server.add(path), **ref)
        if name == "disk":
            job = OtaJob(job.job_id, BundleRef(*{**vars(job.bundle), "size": 1 << 60}.values()), job.url, False,
                         job.issued_at)
        final = device.run(job)
        assert final.state == "failed", name
        assert final.error and reason in final.error, f"{name}: {final.error}"
        assert device.version() == "1.0.0", name
        assert device.host.running().predict(image).classes == before.classes  # still serving, same answers
        assert device.manager.slots.active.version == "1.0.0"
    assert not list((device.manager.download_dir).glob("*.part"))  # failed downloads are cleaned up


def test_a_signed_rollback_is_accepted_and_an_unsigned_or_forged_one_refused(device, world, server):
    b = world["bundles"]
    url = server.add(b.v0_old)
    ref = _ref(b.v0_old, version="0.9.0")
    unsigned = OtaJob("rb-1", ref, url, True, time.time())
    assert "no rollback signature" in device.run(unsigned).error
    forged = OtaJob("rb-2", ref, url, True, time.time(), sign_rollback(SigningKey.generate(), "rb-2", ref))
    assert "not trusted here" in device.run(forged).error
    replayed = OtaJob("rb-3", ref, url, True, time.time(), sign_rollback(world["key"], "rb-2", ref))
    assert "does not match" in device.run(replayed).error  # a signature for another job id
    signed = OtaJob("rb-4", ref, url, True, time.time(), sign_rollback(world["key"], "rb-4", ref))
    assert device.run(signed).state == "committed"
    assert device.version() == "0.9.0"


def test_update_commits_into_the_other_slot_and_a_repeated_job_is_not_run_twice(device, world, server):
    b = world["bundles"]
    job = _job(b.v2, server.add(b.v2))
    final = device.run(job)
    assert final.state == "committed", final.error
    seen = [p.state for p in device.progress if p.job_id == job.job_id]
    assert seen == ["downloading", "downloading", "verifying", "staged", "activating", "health_check", "committed"]
    assert device.version() == "1.1.0"
    slots = device.manager.slots
    assert slots.active.slot == "b" and slots.active.sha256 == file_sha256(b.v2)
    assert file_sha256(slots.bundle_path("a")) == file_sha256(b.v1)  # the previous model stays as fallback
    count = len(device.progress)
    device.run(job)  # a retained job delivered again after a restart
    assert [p.state for p in device.progress[count:]] == ["committed"]
    assert device.manager.store.record.state == "committed"


def test_failed_golden_check_rolls_back_and_blocks_the_bundle(device, world, server):
    b = world["bundles"]
    job = _job(b.v3_broken, server.add(b.v3_broken), version="1.2.0")
    final = device.run(job)
    assert final.state == "rolled_back"
    assert "golden output mismatch" in final.error
    assert device.version() == "1.0.0" and device.manager.slots.active.version == "1.0.0"
    again = device.run(_job(b.v3_broken, job.url, version="1.2.0"))  # same bundle, new job id
    assert again.state == "failed" and "already failed its health check" in again.error


def test_health_window_rolls_back_a_model_that_breaks_the_live_pipeline(tmp_path, world, server):
    from edge_sdk.agent import PacedSource

    b = world["bundles"]
    d = Device(tmp_path / "live", world, policy=HealthPolicy(window_s=1.0, require_golden=False))
    d.host = PipelineHost(lambda: [PacedSource(str(b.images), fps=50)])
    d.manager.host = d.host
    d.boot(b.v1)
    try:
        time.sleep(0.5)
        frames_before = d.host.sample().frames_out
        # A bundle whose model wants another input size: every frame fails in the pipeline.
        from edge_sdk.bundle.manifest import InputSpec

        bad = bundle_variant(b.v2, tmp_path / "bad-input.edgepkg", world["key"], drop=("golden/image.npy",
                             "golden/probs.npy"), version="1.5.0", golden=None,
                             inputs=(InputSpec("image", (1, 8, 8, 3), "float32", std=(255.0,)),))
        final = d.run(_job(bad, server.add(bad), version="1.5.0"))
        assert final.state == "rolled_back", final.error
        assert "pipeline error" in final.error
        assert d.version() == "1.0.0"
        time.sleep(0.3)
        assert d.host.sample().frames_out > frames_before  # the old model is serving again
    finally:
        d.close()


def test_watch_fails_on_errors_on_stalls_and_on_slow_models():
    class Stats:
        def __init__(self, samples):
            self.samples = iter(samples)

        def sample(self):
            return next(self.samples)

    policy = HealthPolicy(window_s=0.05, max_latency_ratio=2.0, latency_slack_ms=1.0, min_frames=3)
    before = PipelineSample(100, 0, (10.0,) * 20, True)
    never = threading.Event()
    errors = Stats([PipelineSample(101, 2, (10.0,) * 21, True)] * 100)
    assert "2 pipeline error(s)" in watch(errors, before, policy, never, poll_s=0.01).reason
    stalled = Stats([PipelineSample(100, 0, (10.0,) * 20, True)] * 100)
    assert "no frame came out" in watch(stalled, before, policy, never, poll_s=0.01).reason
    slow = Stats([PipelineSample(110, 0, (10.0,) * 20 + (35.0,) * 10, True)] * 100)
    assert "latency p50 35.0 ms" in watch(slow, before, policy, never, poll_s=0.01).reason
    fine = Stats([PipelineSample(110, 0, (10.0,) * 20 + (12.0,) * 10, True)] * 100)
    assert watch(fine, before, policy, never, poll_s=0.01).ok


# -- restarts ---------------------------------------------------------------------------------


class _Died(BaseException):
    """Stands for the process dying: nothing after the raise point runs, nothing catches it."""


def _interrupted(tmp_path, world, server, state: str) -> tuple[Device, OtaJob]:
    """A device whose process died right after persisting ``state``; returns a fresh one on the same disk."""
    b = world["bundles"]
    d = Device(tmp_path / f"dev-{state}", world).boot(b.v1)
    job = _job(b.v2, server.add(b.v2))
    persisted = d.manager._entered

    def entered(new_state):
        persisted(new_state)
        if new_state == state:
            raise _Died

    d.manager._entered = entered
    with pytest.raises(_Died):
        d.manager._begin(job)
    d.close()
    return Device(tmp_path / f"dev-{state}", world), job


@pytest.mark.parametrize("state,outcome,version", RESTART_OUTCOMES)
def test_restart_in_each_state_resumes_or_rolls_back(tmp_path, world, server, state, outcome, version):
    d, job = _interrupted(tmp_path, world, server, state)
    try:
        assert d.manager.store.record.state == state
        d.boot()
        if outcome == "committed":
            assert d.manager._resume_pending
            d.manager._advance()
        final = d.progress[-1]
        assert (final.job_id, final.state) == (job.job_id, outcome), final.error
        assert d.version() == version and d.manager.slots.active.version == version
        assert file_sha256(d.manager.slots.bundle_path(d.manager.slots.active.slot)) == d.manager.slots.active.sha256
    finally:
        d.close()


def test_a_restart_between_staging_and_its_record_goes_on_from_staged(tmp_path, world, server):
    """Killed after the verified bundle was moved into its slot but before ``staged`` was written."""
    b = world["bundles"]
    d = Device(tmp_path / "dev", world).boot(b.v1)
    job = _job(b.v2, server.add(b.v2))
    install = d.manager.slots.install

    def install_then_die(source, slot):
        install(source, slot)
        raise _Died

    d.manager.slots.install = install_then_die
    with pytest.raises(_Died):
        d.manager._begin(job)
    d.close()
    again = Device(tmp_path / "dev", world)
    assert again.manager.store.record.state == "verifying"
    again.boot()
    again.manager._advance()
    assert again.progress[-1].state == "committed" and again.version() == "1.1.0"
    again.close()


def test_loop_guard_gives_up_after_repeated_restarts(tmp_path, world, server):
    d, job = _interrupted(tmp_path, world, server, "downloading")
    for _ in range(MAX_RESUMES):
        d.manager.recover()
        d.manager._resume_pending = False
    d.manager.recover()
    assert d.manager.store.record.state == "failed"
    assert "loop guard" in d.progress[-1].error
    d.close()


def test_a_restart_after_the_commit_pointer_moved_counts_as_committed(tmp_path, world, server):
    d, job = _interrupted(tmp_path, world, server, "health_check")
    slots = d.manager.slots
    slot = d.manager.store.record.slot
    slots.set_active(SlotInfo(slot, "digits", "1.1.0", file_sha256(slots.bundle_path(slot))))
    d.boot()
    assert d.progress[-1].state == "committed" and d.version() == "1.1.0"
    d.close()


# -- rollout planning ------------------------------------------------------------------------


def test_canary_waves_are_stable_and_never_take_every_device():
    devices = [f"cam-{i:03d}" for i in range(20)]
    waves = plan_waves(devices, 0.1, None)
    assert [len(w) for w in waves] == [2, 18]
    assert plan_waves(list(reversed(devices)), 0.1, None) == waves
    assert [len(w) for w in plan_waves(devices, 0.1, 5)] == [2, 5, 5, 5, 3]
    assert [len(w) for w in plan_waves(["a", "b"], 1.0, None)] == [1, 1]
    assert plan_waves(["a"], 0.5, None) == [["a"]]
    assert parse_fraction("10%", "x") == pytest.approx(0.1) and parse_fraction("0.25", "x") == 0.25
    with pytest.raises(RolloutError, match="between 0% and 100%"):
        parse_fraction("150%", "--canary")
    with pytest.raises(RolloutError, match="percentage"):
        parse_fraction("ten", "--canary")
    json.dumps(waves)
