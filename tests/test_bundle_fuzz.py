"""Property tests: random damage to a valid bundle is either harmless or a clean bundle error.

Every mutated bundle must end in exactly one of two ways: it verifies and
extracts to the *same* files as the original, or it raises a
:class:`~edge_sdk.errors.BundleError` and leaves nothing behind (no target
directory, no staging directory). Any other exception, or any partial output,
fails the test.
"""

from __future__ import annotations

import itertools
import json
import shutil
import tempfile
import zipfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import craft_zip, sample_files, sample_manifest, signed_entries, tree, zip_entries
from edge_sdk.bundle import SigningKey, TrustStore, open_bundle, write_bundle
from edge_sdk.errors import BundleError

KEY = SigningKey.generate()
TRUST = TrustStore.from_keys([KEY.public_key])
FUZZ = settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
_counter = itertools.count()


class Original(tuple):
    """(path, bytes, expected files) with a short repr, so failure reports stay readable."""

    def __repr__(self) -> str:
        return f"<original bundle {self[0].name}, {len(self[1])} bytes>"


@pytest.fixture(scope="module")
def original(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz")
    path = write_bundle(sample_manifest(), sample_files(), root / "original.edgepkg", KEY)
    reference = root / "reference"
    open_bundle(path, trusted=TRUST, extract_to=reference)
    expected = {p.relative_to(reference): p.read_bytes() for p in reference.rglob("*") if p.is_file()}
    return Original((path, path.read_bytes(), expected))


def _outcome(data: bytes, expected: dict) -> str:
    """Open ``data`` as a bundle; assert the all-or-nothing property; say which way it went."""
    work = Path(tempfile.mkdtemp(prefix="edge-fuzz-"))
    try:
        path = work / "mutant.edgepkg"
        path.write_bytes(data)
        target = work / "slot"
        try:
            verified = open_bundle(path, trusted=TRUST, extract_to=target)
        except BundleError as exc:
            assert str(path) in str(exc), f"error does not name the bundle: {exc}"
            assert not target.exists(), "a refused bundle left an extraction directory"
            assert tree(work) == ["mutant.edgepkg"], f"leftovers after refusal: {tree(work)}"
            return "refused"
        got = {p.relative_to(target): p.read_bytes() for p in target.rglob("*") if p.is_file()}
        assert got == expected, "an accepted mutant extracted different files"
        assert verified.signer == KEY.key_id
        return "accepted"
    finally:
        shutil.rmtree(work, ignore_errors=True)


@FUZZ
@given(flips=st.lists(st.tuples(st.integers(min_value=0), st.integers(0, 7)), min_size=1, max_size=4))
def test_bit_flips(original, flips):
    _path, data, expected = original
    mutant = bytearray(data)
    for position, bit in flips:
        mutant[position % len(mutant)] ^= 1 << bit
    _outcome(bytes(mutant), expected)


@FUZZ
@given(cut=st.integers(min_value=0))
def test_truncation(original, cut):
    _path, data, expected = original
    assert _outcome(data[: cut % len(data)], expected) == "refused"


@FUZZ
@given(tail=st.binary(min_size=1, max_size=64), head=st.binary(max_size=64))
def test_appended_and_prepended_bytes(original, tail, head):
    _path, data, expected = original
    _outcome(head + data + tail, expected)


_NAMES = st.one_of(
    st.sampled_from(["model.onnx", "labels.txt", "manifest.json", "signature", "golden/image.npy", "../x",
                     "/abs", "a/../../b", "evil.sh", "golden/", "x\\y", ""]),
    st.text(min_size=1, max_size=20),
)


@FUZZ
@given(data=st.data())
def test_entry_insert_remove_rename(original, data):
    path, _raw, expected = original
    entries = zip_entries(path)
    action = data.draw(st.sampled_from(["insert", "remove", "rename", "replace"]))
    index = data.draw(st.integers(0, len(entries) - 1))
    if action == "insert":
        entries.insert(index, (data.draw(_NAMES), data.draw(st.binary(max_size=256))))
    elif action == "remove":
        del entries[index]
    elif action == "rename":
        entries[index] = (data.draw(_NAMES), entries[index][1])
    else:
        entries[index] = (entries[index][0], data.draw(st.binary(max_size=256)))
    compression = data.draw(st.sampled_from([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED]))
    with tempfile.TemporaryDirectory() as tmp:
        try:
            mutant = craft_zip(Path(tmp) / "m.zip", entries, compression=compression).read_bytes()
        except (UnicodeEncodeError, ValueError):
            return  # zipfile itself cannot write this name; nothing to test
    _outcome(mutant, expected)


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)


def _paths(value, prefix=()):
    yield prefix
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _paths(v, prefix + (i,))


@FUZZ
@given(data=st.data(), resign=st.booleans())
def test_manifest_field_edits(original, data, resign):
    """Edit one manifest field; unsigned edits must break the signature, signed ones must still verify cleanly."""
    path, _raw, expected = original
    entries = dict(zip_entries(path))
    manifest = json.loads(entries["manifest.json"])
    target = data.draw(st.sampled_from([p for p in _paths(manifest) if p]))
    new_value = data.draw(_JSON)
    node = manifest
    for step in target[:-1]:
        node = node[step]
    if data.draw(st.booleans()) and isinstance(node, dict):
        node.pop(target[-1])
    else:
        node[target[-1]] = new_value
    files = {n: d for n, d in entries.items() if n not in ("manifest.json", "signature")}
    if resign:
        mutant_entries = signed_entries(manifest, files, KEY)
    else:
        body = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
        mutant_entries = [("manifest.json", body), ("signature", entries["signature"]), *sorted(files.items())]
    with tempfile.TemporaryDirectory() as tmp:
        mutant = craft_zip(Path(tmp) / "m.zip", mutant_entries).read_bytes()
    if resign:
        # A validly signed edit may be accepted; then the extracted files must still match their pins.
        work = Path(tempfile.mkdtemp(prefix="edge-fuzz-"))
        try:
            (work / "m.edgepkg").write_bytes(mutant)
            try:
                verified = open_bundle(work / "m.edgepkg", trusted=TRUST, extract_to=work / "slot")
            except BundleError:
                assert not (work / "slot").exists()
                return
            for entry in verified.manifest.files:
                assert (work / "slot" / entry.name).stat().st_size == entry.size
        finally:
            shutil.rmtree(work, ignore_errors=True)
    else:
        unchanged = body == entries["manifest.json"]
        outcome = _outcome(mutant, expected)
        assert outcome == ("accepted" if unchanged else "refused")
