"""The bundle format: writing, signing, verified opening, and every refusal."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import zipfile

import numpy as np
import pytest

from conftest import craft_zip, sample_files, sample_manifest, signed_entries, tree, zip_entries
from edge_sdk.bundle import (
    Manifest,
    SigningKey,
    TrustStore,
    VerifyLimits,
    generate_keypair,
    open_bundle,
    semver_key,
    write_bundle,
)
from edge_sdk.bundle.reader import describe_bundle
from edge_sdk.errors import (
    BundleError,
    BundleVerificationError,
    ProfileMismatchError,
    SignatureError,
    SigningKeyError,
)


# -- the happy path ----------------------------------------------------------


def test_round_trip_verifies_and_reads_every_file(bundle, keys):
    verified = open_bundle(bundle, trusted=keys.trust)
    assert verified.signer == keys.key.key_id
    assert verified.manifest == sample_manifest().with_files(verified.manifest.files)
    for name, data in sample_files().items():
        entry = verified.manifest.file(name)
        assert entry.size == len(data)
        assert entry.sha256 == hashlib.sha256(data).hexdigest()
        assert verified.read(name) == data
    roles = {e.name: e.role for e in verified.manifest.files}
    assert roles == {"model.onnx": "model", "labels.txt": "labels", "golden/image.npy": "golden",
                     "golden/probs.npy": "golden"}


def test_trusted_keys_directory_is_accepted_as_a_path(bundle, keys):
    assert open_bundle(bundle, trusted=keys.trusted_dir).signer == keys.key.key_id


def test_extract_writes_exactly_the_manifest_files(bundle, keys, tmp_path):
    target = tmp_path / "slot-a"
    verified = open_bundle(bundle, trusted=keys.trust, extract_to=target)
    assert verified.directory == target
    assert tree(target) == ["golden", "golden/image.npy", "golden/probs.npy", "labels.txt", "manifest.json", "model.onnx"]
    assert (target / "model.onnx").read_bytes() == sample_files()["model.onnx"]
    assert Manifest.from_bytes((target / "manifest.json").read_bytes()) == verified.manifest
    assert not [p for p in tmp_path.iterdir() if ".staging-" in p.name]


def test_writing_is_deterministic(tmp_path, keys):
    a = write_bundle(sample_manifest(), sample_files(), tmp_path / "a.edgepkg", keys.key)
    b = write_bundle(sample_manifest(), dict(reversed(list(sample_files().items()))), tmp_path / "b.edgepkg", keys.key)
    assert a.read_bytes() == b.read_bytes()
    c = write_bundle(sample_manifest(created="2026-01-02T03:04:06Z"), sample_files(), tmp_path / "c.edgepkg", keys.key)
    assert c.read_bytes() != a.read_bytes()


def test_entries_have_fixed_metadata_and_models_are_stored(bundle):
    with zipfile.ZipFile(bundle) as zf:
        infos = zf.infolist()
    assert [i.filename for i in infos[:2]] == ["manifest.json", "signature"]
    assert [i.filename for i in infos[2:]] == sorted(i.filename for i in infos[2:])
    for info in infos:
        assert info.date_time == (1980, 1, 1, 0, 0, 0)
        assert info.external_attr >> 16 == 0o100644
    methods = {i.filename: i.compress_type for i in infos}
    assert methods["model.onnx"] == zipfile.ZIP_STORED
    assert methods["labels.txt"] == zipfile.ZIP_DEFLATED


def test_files_can_come_from_paths_and_directory_output_uses_conventional_name(tmp_path, keys):
    model = tmp_path / "model.onnx"
    model.write_bytes(os.urandom(3000))
    files = sample_files() | {"model.onnx": model}
    out = write_bundle(sample_manifest(), files, tmp_path, keys.key)
    assert out.name == "digits-1.0.0-generic-x86.edgepkg"
    assert open_bundle(out, trusted=keys.trust).read("model.onnx") == model.read_bytes()


def test_writer_refuses_unsafe_names_and_unlisted_references(tmp_path, keys):
    with pytest.raises(BundleError, match=r"'\.\.'"):
        write_bundle(sample_manifest(), sample_files() | {"../evil": b"x"}, tmp_path / "x.edgepkg", keys.key)
    files = sample_files()
    del files["labels.txt"]
    with pytest.raises(BundleVerificationError, match="labels file 'labels.txt' is not among"):
        write_bundle(sample_manifest(), files, tmp_path / "x.edgepkg", keys.key)
    assert not list(tmp_path.glob("*.edgepkg")) and not list(tmp_path.glob(".*partial*"))


# -- signatures ---------------------------------------------------------------


def test_unsigned_bundle_is_refused_unless_allowed(tmp_path, keys):
    path = write_bundle(sample_manifest(), sample_files(), tmp_path / "u.edgepkg", None)
    with pytest.raises(SignatureError) as err:
        open_bundle(path, trusted=keys.trust)
    assert err.value.path == str(path) and "unsigned" in err.value.reason
    assert open_bundle(path, trusted=keys.trust, allow_unsigned=True).signer is None


def test_untrusted_signer_is_refused_with_its_key_id(tmp_path, keys):
    stranger = SigningKey.generate()
    path = write_bundle(sample_manifest(), sample_files(), tmp_path / "s.edgepkg", stranger)
    with pytest.raises(SignatureError, match=f"signed by key '{stranger.key_id}', which is not trusted"):
        open_bundle(path, trusted=keys.trust)
    with pytest.raises(SignatureError, match="not trusted"):
        open_bundle(path, trusted=TrustStore({}))


def test_edited_manifest_breaks_the_signature(bundle, tmp_path, keys):
    entries = zip_entries(bundle)
    manifest = json.loads(entries[0][1])
    manifest["version"] = "9.9.9"
    entries[0] = ("manifest.json", json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode())
    path = craft_zip(tmp_path / "edited.edgepkg", entries)
    with pytest.raises(SignatureError, match="signature does not match the manifest"):
        open_bundle(path, trusted=keys.trust)


@pytest.mark.parametrize(
    "signature, reason",
    [
        (b"not json", "not valid JSON"),
        (b'{"schema":1}', "exactly schema, algorithm, key_id and signature"),
        (b'{"schema":2,"algorithm":"ed25519","key_id":"x","signature":"AA=="}', "unsupported signature schema"),
        (b'{"schema":1,"algorithm":"ed25519","key_id":"x","signature":"!!"}', "not valid base64"),
        (b'{"schema":1,"algorithm":"ed25519","key_id":"x","signature":"AAAA"}', "64 bytes"),
    ],
)
def test_malformed_signature_files(bundle, tmp_path, keys, signature, reason):
    entries = [(n, signature if n == "signature" else d) for n, d in zip_entries(bundle)]
    path = craft_zip(tmp_path / "sig.edgepkg", entries)
    with pytest.raises(SignatureError, match=reason):
        open_bundle(path, trusted=keys.trust)


# -- content tampering ----------------------------------------------------------


def test_flipped_model_byte_is_caught_by_its_hash(bundle, tmp_path, keys):
    entries = zip_entries(bundle)
    entries = [(n, (bytes([d[0] ^ 1]) + d[1:]) if n == "model.onnx" else d) for n, d in entries]
    path = craft_zip(tmp_path / "t.edgepkg", entries)
    with pytest.raises(BundleVerificationError) as err:
        open_bundle(path, trusted=keys.trust, extract_to=tmp_path / "out")
    assert err.value.path == str(path)
    assert "'model.onnx' does not match its sha256" in err.value.reason
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if ".staging-" in p.name]


def test_failed_extraction_leaves_existing_slot_untouched(bundle, tmp_path, keys):
    slot = tmp_path / "slot"
    open_bundle(bundle, trusted=keys.trust, extract_to=slot)
    before = {p: p.read_bytes() for p in slot.rglob("*") if p.is_file()}
    entries = [(n, d[:-1] + bytes([d[-1] ^ 1]) if n == "golden/probs.npy" else d) for n, d in zip_entries(bundle)]
    bad = craft_zip(tmp_path / "bad.edgepkg", entries)
    with pytest.raises(BundleVerificationError, match="golden/probs.npy"):
        open_bundle(bad, trusted=keys.trust, extract_to=slot, overwrite=True)
    assert {p: p.read_bytes() for p in slot.rglob("*") if p.is_file()} == before
    with pytest.raises(BundleVerificationError, match="already exists"):
        open_bundle(bundle, trusted=keys.trust, extract_to=slot)
    open_bundle(bundle, trusted=keys.trust, extract_to=slot, overwrite=True)
    assert (slot / "model.onnx").read_bytes() == sample_files()["model.onnx"]


def test_size_mismatch_between_container_and_manifest(tmp_path, keys):
    manifest = sample_manifest().with_files(())
    files = sample_files()
    good = write_bundle(manifest, files, tmp_path / "g.edgepkg", keys.key)
    entries = [(n, d + b"x" if n == "labels.txt" else d) for n, d in zip_entries(good)]
    path = craft_zip(tmp_path / "grown.edgepkg", entries)
    with pytest.raises(BundleVerificationError, match="'labels.txt' is 21 bytes in the container, the manifest says 20"):
        open_bundle(path, trusted=keys.trust)


def test_lying_local_header_cannot_inflate_past_the_manifest(bundle, tmp_path, keys):
    """A deflated entry whose central directory claims the right size but whose data inflates further."""
    entries = zip_entries(bundle)
    labels = dict(entries)["labels.txt"]
    path = craft_zip(tmp_path / "long.edgepkg",
                     [(n, labels + b"\0" * 5000 if n == "labels.txt" else d) for n, d in entries],
                     compression=zipfile.ZIP_DEFLATED)
    # Patch the central directory's uncompressed size back to the manifest's value.
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo("labels.txt")
    cd_name = data.rfind(b"labels.txt")
    size_field = cd_name - 46 + 24
    assert int.from_bytes(data[size_field:size_field + 4], "little") == info.file_size
    data[size_field:size_field + 4] = len(labels).to_bytes(4, "little")
    path.write_bytes(bytes(data))
    with pytest.raises(BundleVerificationError, match="'labels.txt' (inflates to more than|holds more than) 20 bytes"):
        open_bundle(path, trusted=keys.trust)


# -- hostile containers ---------------------------------------------------------


def test_not_a_zip_empty_and_missing(tmp_path, keys):
    junk = tmp_path / "junk.edgepkg"
    junk.write_bytes(b"hello, I am not a zip file" * 10)
    with pytest.raises(BundleVerificationError, match="not a readable zip container"):
        open_bundle(junk, trusted=keys.trust)
    empty = tmp_path / "empty.edgepkg"
    empty.write_bytes(b"")
    with pytest.raises(BundleVerificationError, match="bundle file is empty"):
        open_bundle(empty, trusted=keys.trust)
    with pytest.raises(BundleVerificationError, match="does not exist"):
        open_bundle(tmp_path / "nope.edgepkg", trusted=keys.trust)
    with pytest.raises(BundleVerificationError, match="not a regular file"):
        open_bundle(tmp_path, trusted=keys.trust)


@pytest.mark.parametrize("keep", [0.1, 0.5, 0.9, 0.999])
def test_truncated_bundle(bundle, tmp_path, keys, keep):
    data = bundle.read_bytes()
    path = tmp_path / "trunc.edgepkg"
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(BundleVerificationError, match=str(path)):
        open_bundle(path, trusted=keys.trust, extract_to=tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "name, reason",
    [
        ("/etc/passwd", "absolute entry name"),
        ("../../evil.so", "'..' path segment"),
        ("golden/../../x", "'..' path segment"),
        ("a\\..\\b", "backslash"),
        ("a//b", "'empty' path segment"),
        (".hidden", "starts with '.'"),
    ],
)
def test_unsafe_entry_names_are_refused_before_anything_else(bundle, tmp_path, keys, name, reason):
    path = craft_zip(tmp_path / "evil.edgepkg", zip_entries(bundle) + [(name, b"pwned")])
    with pytest.raises(BundleVerificationError, match=reason):
        open_bundle(path, trusted=keys.trust, extract_to=tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert not (tmp_path / "evil.so").exists()


def test_symlink_entry_is_refused(bundle, tmp_path, keys):
    link = ("link", b"/etc/passwd", {"external_attr": (stat.S_IFLNK | 0o777) << 16})
    path = craft_zip(tmp_path / "link.edgepkg", zip_entries(bundle) + [link])
    with pytest.raises(BundleVerificationError, match="'link' is not a regular file .*links are refused"):
        open_bundle(path, trusted=keys.trust)


def test_directory_and_duplicate_and_unlisted_entries(bundle, tmp_path, keys):
    entries = zip_entries(bundle)
    with pytest.warns(UserWarning):  # zipfile itself warns about the duplicate name
        dup = craft_zip(tmp_path / "dup.edgepkg", entries + [("model.onnx", b"other")])
    with pytest.raises(BundleVerificationError, match="duplicate entry 'model.onnx'"):
        open_bundle(dup, trusted=keys.trust)
    extra = craft_zip(tmp_path / "extra.edgepkg", entries + [("payload.sh", b"#!/bin/sh")])
    with pytest.raises(BundleVerificationError, match="'payload.sh' is not listed in the manifest"):
        open_bundle(extra, trusted=keys.trust)
    missing = craft_zip(tmp_path / "missing.edgepkg", [e for e in entries if e[0] != "labels.txt"])
    with pytest.raises(BundleVerificationError, match="'labels.txt' listed in the manifest is missing"):
        open_bundle(missing, trusted=keys.trust)
    directory = craft_zip(tmp_path / "dir.edgepkg", entries + [("golden/", b"", {"external_attr": 0o40755 << 16})])
    with pytest.raises(BundleVerificationError, match="'golden/'|directory"):
        open_bundle(directory, trusted=keys.trust)


def test_zip_bomb_is_refused_by_ratio_and_total_size(bundle, tmp_path, keys):
    bomb = craft_zip(tmp_path / "bomb.edgepkg", zip_entries(bundle) + [("zeros.bin", b"\0" * (20 << 20))],
                     compression=zipfile.ZIP_DEFLATED)
    with pytest.raises(BundleVerificationError, match="'zeros.bin' claims 20971520 bytes .* zip bomb"):
        open_bundle(bomb, trusted=keys.trust)
    with pytest.raises(BundleVerificationError, match="exceed the limit of 1000 bytes"):
        open_bundle(bundle, trusted=keys.trust, limits=VerifyLimits(max_total_uncompressed=1000))
    with pytest.raises(BundleVerificationError, match="6 entries, more than the limit of 3"):
        open_bundle(bundle, trusted=keys.trust, limits=VerifyLimits(max_entries=3))


def test_encrypted_flag_and_unknown_compression_are_refused(bundle, tmp_path, keys):
    entries = zip_entries(bundle)
    path = craft_zip(tmp_path / "bz.edgepkg", entries[:-1] + [(entries[-1][0], entries[-1][1])],
                     compression=zipfile.ZIP_BZIP2)
    with pytest.raises(BundleVerificationError, match="compression method 12"):
        open_bundle(path, trusted=keys.trust)
    data = bytearray(bundle.read_bytes())
    cd = data.rfind(b"PK\x01\x02")  # the last central directory record: set its encryption bit
    data[cd + 8] |= 0x1
    path = tmp_path / "enc.edgepkg"
    path.write_bytes(bytes(data))
    with pytest.raises(BundleVerificationError, match="encrypted"):
        open_bundle(path, trusted=keys.trust)


# -- the manifest ---------------------------------------------------------------


def _manifest_dict(**changes):
    data = sample_manifest().with_files(()).to_dict()
    data.update(changes)
    return data


def _signed_bundle(tmp_path, keys, manifest_dict, files=None):
    files = sample_files() if files is None else files
    from edge_sdk.bundle.writer import _pin

    manifest_dict.setdefault("files", [])
    if not manifest_dict["files"]:
        manifest_dict["files"] = [_pin(n, d, "extra").to_dict() for n, d in sorted(files.items())]
    return craft_zip(tmp_path / "m.edgepkg", signed_entries(manifest_dict, files, keys.key))


@pytest.mark.parametrize(
    "changes, reason",
    [
        ({"schema": 2}, "manifest field 'schema': this edge-sdk reads manifest schema 1, the bundle has 2"),
        ({"surprise": 1}, "manifest field 'surprise': unknown field"),
        ({"version": "1.0"}, "manifest field 'version': expected a semantic version"),
        ({"name": "Bad Name"}, "manifest field 'name'"),
        ({"created": "yesterday"}, "manifest field 'created'"),
        ({"model": "other.onnx"}, "model file 'other.onnx' is not among the bundle's files"),
        ({"inputs": [{"name": "x", "shape": [1, True], "dtype": "float32", "layout": "NHWC",
                      "color_order": "RGB", "resize": "stretch", "mean": [0], "std": [1]}]},
         r"manifest field 'inputs\[0\].shape\[1\]': expected an integer, got bool True"),
        ({"inputs": [{"name": "x", "shape": [1], "dtype": "float128", "layout": "NHWC",
                      "color_order": "RGB", "resize": "stretch", "mean": [0], "std": [1]}]},
         "manifest field 'inputs\\[0\\].dtype': expected one of"),
        ({"task": {"kind": "magic", "params": {}}}, "manifest field 'task.kind'"),
        ({"accuracy": {"top1": float("nan")}}, "not valid UTF-8 JSON: NaN is not valid JSON"),
    ],
)
def test_invalid_manifest_fields_are_named(tmp_path, keys, changes, reason):
    path = _signed_bundle(tmp_path, keys, _manifest_dict(**changes))
    with pytest.raises(BundleVerificationError, match=reason):
        open_bundle(path, trusted=keys.trust)


def test_missing_required_field_and_non_json_manifest(tmp_path, keys):
    data = _manifest_dict()
    del data["profile"]
    with pytest.raises(BundleVerificationError, match="'profile': required field is missing"):
        open_bundle(_signed_bundle(tmp_path, keys, data), trusted=keys.trust)
    path = craft_zip(tmp_path / "nj.edgepkg", [("manifest.json", b"\xff\xfe"), ("signature", keys.key.sign(b"\xff\xfe"))])
    with pytest.raises(BundleVerificationError, match="not valid UTF-8 JSON"):
        open_bundle(path, trusted=keys.trust)


def test_huge_integer_in_manifest_is_a_bundle_error(tmp_path, keys):
    body = json.dumps(_manifest_dict(metadata={"big": 1})).replace('"big": 1', '"big": ' + "9" * 5000).encode()
    path = craft_zip(tmp_path / "big.edgepkg", [("manifest.json", body), ("signature", keys.key.sign(body))])
    with pytest.raises(BundleVerificationError, match="not valid UTF-8 JSON"):
        open_bundle(path, trusted=keys.trust)


def test_manifest_duplicate_files_and_reserved_names(tmp_path, keys):
    files = sample_files()
    data = _manifest_dict()
    data["files"] = [{"name": "model.onnx", "size": 1, "sha256": "0" * 64, "role": "model"}] * 2
    with pytest.raises(BundleVerificationError, match="'model.onnx' is listed more than once"):
        open_bundle(_signed_bundle(tmp_path, keys, data, files), trusted=keys.trust)
    data["files"] = [{"name": "signature", "size": 1, "sha256": "0" * 64, "role": "model"}]
    with pytest.raises(BundleVerificationError, match="reserved"):
        open_bundle(_signed_bundle(tmp_path, keys, data, files), trusted=keys.trust)


# -- profiles -------------------------------------------------------------------


def test_bundle_for_another_profile_is_refused(bundle, keys):
    with pytest.raises(ProfileMismatchError) as err:
        open_bundle(bundle, trusted=keys.trust, profile="raspberry-pi-4")
    assert (err.value.bundle_profile, err.value.device_profile) == ("generic-x86", "raspberry-pi-4")
    assert str(bundle) in str(err.value)
    assert open_bundle(bundle, trusted=keys.trust, profile="generic-x86").manifest.profile == "generic-x86"


def test_profile_object_also_checks_engine_and_format(bundle, keys):
    from device_profiles import load_profile

    x86 = load_profile("generic-x86")
    if (x86.runtime.engine, x86.runtime.format) == ("onnxruntime", "onnx"):
        assert open_bundle(bundle, trusted=keys.trust, profile=x86).signed
    with pytest.raises(ProfileMismatchError, match="coral-usb"):
        open_bundle(bundle, trusted=keys.trust, profile=load_profile("coral-usb"))


# -- keys ------------------------------------------------------------------------


def test_generate_keypair_modes_and_no_silent_overwrite(tmp_path):
    pair = generate_keypair(tmp_path / "k")
    assert stat.S_IMODE(pair.private_path.stat().st_mode) == 0o600
    assert pair.private_path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert pair.public_path.read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----")
    before = pair.private_path.read_bytes()
    with pytest.raises(SigningKeyError, match="refusing to overwrite"):
        generate_keypair(tmp_path / "k")
    assert pair.private_path.read_bytes() == before
    again = generate_keypair(tmp_path / "k", overwrite=True)
    assert again.key_id != pair.key_id
    assert stat.S_IMODE(again.private_path.stat().st_mode) == 0o600
    assert SigningKey.from_file(again.private_path).key_id == again.key_id


def test_bad_key_files(tmp_path):
    bad = tmp_path / "bad.key"
    bad.write_text("nope")
    with pytest.raises(SigningKeyError, match="not an unencrypted PEM private key"):
        SigningKey.from_file(bad)
    with pytest.raises(SigningKeyError, match="cannot read signing key"):
        SigningKey.from_file(tmp_path / "absent.key")
    (tmp_path / "trusted").mkdir()
    (tmp_path / "trusted" / "x.pub").write_text("garbage")
    with pytest.raises(SigningKeyError, match="x.pub: not a PEM public key"):
        TrustStore.from_dir(tmp_path / "trusted")


# -- inspection and versions -------------------------------------------------------


def test_describe_reports_verdict_and_keeps_manifest_for_diagnosis(bundle, tmp_path, keys):
    good = describe_bundle(bundle, trusted=keys.trust)
    assert good["verified"] and good["signer"] == keys.key.key_id and good["error"] is None
    assert {e["name"] for e in good["entries"]} >= {"manifest.json", "signature", "model.onnx"}
    entries = [(n, b"\0" * len(d) if n == "model.onnx" else d) for n, d in zip_entries(bundle)]
    bad = describe_bundle(craft_zip(tmp_path / "bad.edgepkg", entries), trusted=keys.trust)
    assert not bad["verified"] and "model.onnx" in bad["error"]
    assert bad["manifest"]["name"] == "digits"


def test_semver_ordering():
    versions = ["1.0.0-alpha", "1.0.0-alpha.1", "1.0.0-beta", "1.0.0-beta.2", "1.0.0-beta.11", "1.0.0-rc.1",
                "1.0.0", "1.0.1", "1.10.0", "2.0.0"]
    assert sorted(reversed(versions), key=semver_key) == versions
    with pytest.raises(ValueError):
        semver_key("01.0.0")


def test_golden_arrays_round_trip(bundle, keys):
    verified = open_bundle(bundle, trusted=keys.trust)
    import io

    image = np.load(io.BytesIO(verified.read("golden/image.npy")), allow_pickle=False)
    assert image.shape == (1, 8, 8, 1) and image.dtype == np.float32


def test_negative_local_header_offset_is_a_bundle_error(bundle, tmp_path, keys):
    """Found by the fuzzer: a bit flip that makes zipfile compute a negative header offset."""
    data = bytearray(bundle.read_bytes())
    eocd = data.rfind(b"PK\x05\x06")  # end of central directory: its offset field at +16
    offset = int.from_bytes(data[eocd + 16:eocd + 20], "little")
    data[eocd + 16:eocd + 20] = (offset + 0x10000).to_bytes(4, "little")  # zipfile then computes negative offsets
    path = tmp_path / "neg.edgepkg"
    path.write_bytes(bytes(data))
    with pytest.raises(BundleVerificationError, match="manifest.json"):
        open_bundle(path, trusted=keys.trust)
