"""The edge-sdk command: help everywhere, JSON where scripts want it, clean errors and exit codes."""

from __future__ import annotations

import json
import stat
import subprocess
import sys


from conftest import craft_zip, zip_entries
from edge_sdk.cli.main import build_parser, main


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _all_command_paths():
    parser = build_parser()
    paths = []

    def walk(p, prefix):
        for action in p._actions:
            if action.__class__.__name__ == "_SubParsersAction":
                for name, sub in action.choices.items():
                    paths.append(prefix + [name])
                    walk(sub, prefix + [name])

    walk(parser, [])
    return paths


def test_every_command_has_help():
    paths = _all_command_paths()
    assert ["profiles", "list"] in paths and ["keys", "generate"] in paths and ["inspect"] in paths
    for path in [[]] + paths:
        proc = subprocess.run([sys.executable, "-m", "edge_sdk", *path, "--help"], capture_output=True, text=True,
                              timeout=60)
        assert proc.returncode == 0, (path, proc.stderr)
        assert "usage: edge-sdk" in proc.stdout


def test_bad_arguments_exit_2_with_usage():
    proc = subprocess.run([sys.executable, "-m", "edge_sdk", "inspect"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "the following arguments are required: bundle" in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "edge_sdk", "frobnicate"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "invalid choice: 'frobnicate'" in proc.stderr


def test_keys_generate_trust_list(capsys, tmp_path):
    code, out, _ = run(capsys, "keys", "generate", "--dir", str(tmp_path / "k"), "--trust",
                       "--trusted-dir", str(tmp_path / "t"), "--json")
    assert code == 0
    info = json.loads(out)
    assert stat.S_IMODE((tmp_path / "k" / "signing.key").stat().st_mode) == 0o600
    assert (tmp_path / "t" / f"{info['key_id']}.pub").is_file()
    code, out, err = run(capsys, "keys", "generate", "--dir", str(tmp_path / "k"))
    assert code == 1 and "refusing to overwrite" in err and out == ""
    code, out, _ = run(capsys, "keys", "list", "--trusted-dir", str(tmp_path / "t"), "--json")
    assert json.loads(out)["key_ids"] == [info["key_id"]]


def test_keys_default_locations_follow_xdg(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    code, out, _ = run(capsys, "keys", "generate", "--trust", "--json")
    info = json.loads(out)
    assert info["private_key"] == str(tmp_path / "cfg" / "edge-sdk" / "keys" / "signing.key")
    assert info["trusted_dir"] == str(tmp_path / "cfg" / "edge-sdk" / "trusted-keys")


def test_inspect_good_and_tampered(capsys, bundle, keys, tmp_path):
    code, out, _ = run(capsys, "inspect", str(bundle), "--trusted-dir", str(keys.trusted_dir), "--json")
    report = json.loads(out)
    assert code == 0 and report["verified"] and report["signer"] == keys.key.key_id
    assert report["manifest"]["profile"] == "generic-x86"
    code, out, _ = run(capsys, "inspect", str(bundle), "--trusted-dir", str(keys.trusted_dir))
    assert code == 0 and f"verified: yes, signed by trusted key {keys.key.key_id}" in out and "model.onnx" in out

    entries = [(n, d[:-1] + bytes([d[-1] ^ 0xFF]) if n == "model.onnx" else d) for n, d in zip_entries(bundle)]
    bad = craft_zip(tmp_path / "bad.edgepkg", entries)
    code, out, _ = run(capsys, "inspect", str(bad), "--trusted-dir", str(keys.trusted_dir))
    assert code == 1
    assert "verified: NO: file 'model.onnx' does not match its sha256" in out and "UNVERIFIED" in out
    code, out, _ = run(capsys, "inspect", str(bundle), "--trusted-dir", str(tmp_path / "nobody"), "--json")
    assert code == 1 and "not trusted" in json.loads(out)["error"]
    code, out, _ = run(capsys, "inspect", str(bundle), "--trusted-dir", str(keys.trusted_dir),
                       "--profile", "raspberry-pi-4", "--json")
    assert code == 1 and "raspberry-pi-4" in json.loads(out)["error"]


def test_inspect_not_a_bundle(capsys, tmp_path, keys):
    path = tmp_path / "x.edgepkg"
    path.write_bytes(b"garbage" * 100)
    code, out, _ = run(capsys, "inspect", str(path), "--trusted-dir", str(keys.trusted_dir))
    assert code == 1 and "not a readable zip container" in out and "manifest: unreadable" in out


def test_profiles_commands(capsys, tmp_path):
    code, out, _ = run(capsys, "profiles", "list", "--json")
    ids = [p["id"] for p in json.loads(out)]
    assert code == 0 and {"raspberry-pi-4", "coral-usb", "esp32-s3", "generic-x86"} <= set(ids)
    code, out, _ = run(capsys, "profiles", "list")
    assert "raspberry-pi-4" in out and "tflite-micro" in out
    code, out, _ = run(capsys, "profiles", "show", "coral-usb", "--json")
    shown = json.loads(out)
    assert shown["id"] == "coral-usb" and shown["runtime"]["input_dtype"] == "uint8"
    code, out, _ = run(capsys, "profiles", "show", "coral-usb")
    assert code == 0 and "edgetpu" in out
    code, _, err = run(capsys, "profiles", "show", "no-such-board")
    assert code == 1 and "no device profile named 'no-such-board'" in err

    bad = tmp_path / "bad.toml"
    bad.write_text("schema = 1\nid = 'bad'\n")
    from device_profiles import builtin_profiles_dir

    good = builtin_profiles_dir() / "raspberry-pi-4.toml"
    code, out, _ = run(capsys, "profiles", "validate", str(good), str(bad), "--json")
    results = json.loads(out)
    assert code == 1
    assert results[0]["valid"] and results[0]["id"] == "raspberry-pi-4"
    assert not results[1]["valid"] and str(bad) in results[1]["error"]
