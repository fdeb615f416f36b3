"""The microcontroller path end to end: the digits CNN packaged for each MCU profile, exported as C/C++
compiled and run with the system g++, the arena measured in the real tflite-micro interpreter, TFLite
Micro compared with LiteRT, MCUboot images signed and checked with the real imgtool."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tensorflow", reason="packaging the sample CNN needs the host extra (TensorFlow)")
pytest.importorskip("tflite_micro", reason="the firmware tools need tflite-micro")

from conftest import profile_variant  # noqa: E402
from converters.samples import DIGIT_LABELS, load_digits_split, train_digits_cnn  # noqa: E402
from device_profiles import load_profile  # noqa: E402
from edge_sdk.bundle import InputSpec, Manifest, OutputSpec, SigningKey, TaskSpec, TrustStore  # noqa: E402
from edge_sdk.bundle import generate_keypair, write_bundle  # noqa: E402
from edge_sdk.cli.main import main  # noqa: E402
from edge_sdk.errors import EngineError  # noqa: E402
from firmware_tools.arena import works  # noqa: E402
from firmware_tools.errors import FirmwareError, FitError, ImageError  # noqa: E402
from firmware_tools.export import export  # noqa: E402
from firmware_tools.mcuboot import read_image, sign_image, verify_image  # noqa: E402
from firmware_tools.ops import RESOLVER_METHODS, resolver_methods  # noqa: E402
from firmware_tools.verify import verify  # noqa: E402

MCU_PROFILES = ("esp32-s3", "stm32h747-disco", "arduino-nano-33-ble")
GXX = shutil.which("g++")
needs_gxx = pytest.mark.skipif(GXX is None, reason="no system C++ compiler (g++)")

HARNESS = r"""
#include <cstdint>
#include <cstdio>
#include <cstring>
#include "model_config.h"
#include "model_data.h"

int main() {
  std::printf("len %u\n", kModelDataLen);
  std::printf("aligned16 %d\n", static_cast<int>(reinterpret_cast<std::uintptr_t>(kModelData) % 16 == 0));
  std::printf("identifier %.4s\n", reinterpret_cast<const char*>(kModelData) + 4);
  std::printf("arena %zu measured %zu\n", kTensorArenaSize, kTensorArenaMeasuredSize);
  std::printf("example %u of %zu\n", kExampleInputLen, kInputs[0].elements);
  std::printf("labels %u of %zu\n", kLabelCount, kOutputs[0].elements);
  for (unsigned i = 0; i < kModelOpCount; ++i) std::printf("op %s\n", kModelOpNames[i]);
  std::printf("input %s %s scale %.9g zp %d\n", kInputs[0].name, kInputs[0].dtype, kInputs[0].scale,
              kInputs[0].zero_point);
  return kModelDataLen > 0 ? 0 : 1;
}
"""


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def split():
    return load_digits_split()


@pytest.fixture(scope="module")
def signer(tmp_path_factory):
    root = tmp_path_factory.mktemp("fw-keys")
    pair = generate_keypair(root / "keys")
    trusted = root / "trusted"
    TrustStore.from_dir(trusted).add_file(pair.public_path, trusted)
    return pair, trusted


@pytest.fixture(scope="module")
def bundles(tmp_path_factory, split, signer) -> dict[str, Path]:
    """The digits CNN (trained once, few epochs) packaged int8 for every MCU profile."""
    from converters import package

    root = tmp_path_factory.mktemp("fw-bundles")
    np.save(root / "calib.npy", split.test_images[:200])
    cnn = train_digits_cnn(split, epochs=3)
    key = SigningKey.from_file(signer[0].private_path)
    return {profile: package(cnn, profile, root / "calib.npy", output=root / profile, signing_key=key,
                             labels=DIGIT_LABELS, calibration_samples=200).path
            for profile in MCU_PROFILES}


@pytest.fixture(scope="module")
def exports(tmp_path_factory, bundles, signer, split):
    root = tmp_path_factory.mktemp("fw-exports")
    return {profile: export(path, root / profile, trusted=signer[1], validation_images=split.test_images[200:300])
            for profile, path in bundles.items()}


def _model(bundle: Path) -> bytes:
    with zipfile.ZipFile(bundle) as zf:
        return zf.read("model.tflite")


def _litert_ops(model: bytes) -> list[str]:
    """The model's op names as LiteRT's own interpreter reports them (independent of our parser)."""
    from ai_edge_litert.interpreter import Interpreter

    return [op["op_name"] for op in Interpreter(model_content=model)._get_ops_details()]


# --------------------------------------------------------------------------- export per profile


@pytest.mark.parametrize("profile", MCU_PROFILES)
def test_export_writes_sources_and_a_board_project(exports, bundles, profile):
    result = exports[profile]
    out = result.directory
    names = {str(p.relative_to(out)) for p in result.files}
    assert {"src/model_data.h", "src/model_data.cc", "src/model_ops.h", "src/model_config.h", "src/main.cc",
            "platformio.ini", "README.md", "firmware.json"} <= names
    assert all(p.is_file() for p in result.files)
    ini = (out / "platformio.ini").read_text()
    expected = {"esp32-s3": ("espressif32", "esp32-s3-devkitc-1", "espidf"),
                "stm32h747-disco": ("ststm32", "disco_h747xi", "mbed"),
                "arduino-nano-33-ble": ("nordicnrf52", "nano33ble", "arduino")}[profile]
    assert f"[env:{profile}]" in ini
    assert re.findall(r"^(?:platform|board|framework) = (\S+)$", ini, re.M) == list(expected)
    sketches = [p for p in result.files if p.suffix == ".ino"]
    assert len(sketches) == (1 if profile == "arduino-nano-33-ble" else 0)
    assert all("void setup()" in p.read_text() and "RunModel(kExampleInput" in p.read_text() for p in sketches)
    if profile == "esp32-s3":
        assert "espressif/esp-tflite-micro" in (out / "src" / "idf_component.yml").read_text()
        assert "idf_component_register" in (out / "src" / "CMakeLists.txt").read_text()
    # The C array holds exactly the bundle's model bytes.
    data = (out / "src" / "model_data.cc").read_text()
    array = data.split("kModelData[] = {", 1)[1].split("};", 1)[0]
    assert bytes(int(h, 16) for h in re.findall(r"0x([0-9a-f]{2})", array)) == _model(bundles[profile])
    assert "alignas(16) const unsigned char kModelData[]" in data
    config = (out / "src" / "model_config.h").read_text()
    assert f"constexpr size_t kTensorArenaSize = {result.arena.recommended_bytes};" in config
    assert 'constexpr const char* kModelProfile = "' + profile + '";' in config
    report = json.loads((out / "firmware.json").read_text())
    assert report["arena"]["recommended_bytes"] == result.arena.recommended_bytes
    assert report["fit"]["compatible"] and report["verification"]["ok"]


@needs_gxx
@pytest.mark.parametrize("profile", MCU_PROFILES)
def test_generated_sources_compile_and_run_with_the_system_compiler(exports, bundles, profile, tmp_path):
    result = exports[profile]
    src = result.directory / "src"
    flags = ["-std=c++17", "-Wall", "-Wextra", "-Werror", "-pedantic", f"-I{src}"]
    for header in ("model_config.h", "model_data.h"):
        subprocess.run([GXX, *flags, "-fsyntax-only", "-x", "c++", str(src / header)], check=True)
    (tmp_path / "harness.cc").write_text(HARNESS)
    exe = tmp_path / "harness"
    subprocess.run([GXX, *flags, "-o", str(exe), str(tmp_path / "harness.cc"), str(src / "model_data.cc")],
                   check=True, capture_output=True, text=True)
    out = subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout
    model = _model(bundles[profile])
    assert f"len {len(model)}\n" in out and "aligned16 1\n" in out and "identifier TFL3\n" in out
    assert f"arena {result.arena.recommended_bytes} measured {result.arena.measured_bytes}\n" in out
    assert "example 64 of 64\n" in out and "labels 10 of 10\n" in out
    # The compiled op list is exactly the model's op set, as LiteRT reads the flatbuffer.
    assert sorted(re.findall(r"^op (\S+)$", out, re.M)) == sorted(set(_litert_ops(model)))
    assert re.search(r"^input \S+ int8 scale 0\.0039\d+ zp -128$", out, re.M)


@pytest.mark.parametrize("profile", MCU_PROFILES)
def test_resolver_registers_exactly_the_models_ops(exports, bundles, profile):
    ops_h = (exports[profile].directory / "src" / "model_ops.h").read_text()
    registered = re.findall(r"resolver\.(Add\w+)\(\)", ops_h)
    wanted = {RESOLVER_METHODS[op] for op in _litert_ops(_model(bundles[profile]))}
    assert len(registered) == len(set(registered)) == len(wanted)
    assert set(registered) == wanted == {"AddConv2D", "AddMaxPool2D", "AddReshape", "AddFullyConnected", "AddSoftmax"}
    assert "tflite::MicroMutableOpResolver<kModelOpCount>" in ops_h
    assert f"kModelOpCount = {len(wanted)};" in (exports[profile].directory / "src" / "model_config.h").read_text()


def test_resolver_method_names_follow_tflite_micro_not_camel_case():
    assert resolver_methods(["BATCH_TO_SPACE_ND", "UNIDIRECTIONAL_SEQUENCE_LSTM", "PADV2", "L2_POOL_2D",
                             "TFLite_Detection_PostProcess", "RELU6"]) == (
        "AddBatchToSpaceNd", "AddUnidirectionalSequenceLSTM", "AddPadV2", "AddL2Pool2D", "AddDetectionPostprocess",
        "AddRelu6")
    with pytest.raises(FirmwareError) as err:
        resolver_methods(["CONV_2D", "NON_MAX_SUPPRESSION_V5", "RFFT2D"], "net.tflite")
    assert "net.tflite" in str(err.value) and "NON_MAX_SUPPRESSION_V5, RFFT2D" in str(err.value)


# --------------------------------------------------------------------------- arena


def test_measured_arena_works_and_one_step_less_does_not(exports, bundles):
    result = exports["arduino-nano-33-ble"]
    arena, model = result.arena, _model(bundles["arduino-nano-33-ble"])
    assert works(model, arena.recommended_bytes) and works(model, arena.measured_bytes)
    assert not works(model, arena.recommended_bytes - arena.margin_bytes - 16)
    assert arena.recommended_bytes - arena.margin_bytes == arena.measured_bytes
    assert arena.recorded_bytes >= arena.measured_bytes - arena.granularity
    assert arena.alignment_bytes == 16 and arena.kernels == "cmsis-nn" and arena.scratch_bytes > 0
    # conv2: 3x3 over 16 channels -> CMSIS-NN im2col of 2 * 144 int16 values
    assert arena.scratch_bytes == 2 * (16 * 3 * 3) * 2
    assert arena.naive_bytes == 10 * len(model) and arena.naive_ratio > 10
    assert arena.probes <= 16


def test_packaged_mcu_bundle_records_the_arena_and_the_runtime_uses_it(exports, bundles, signer):
    import edge_sdk

    with edge_sdk.load(bundles["esp32-s3"], trusted=signer[1]) as model:
        recorded = model.manifest.compatibility["arena_bytes"]
        assert recorded == exports["esp32-s3"].arena.recommended_bytes
        assert model.engine.arena_bytes == recorded
        assert model.golden_check() <= 1.0


# --------------------------------------------------------------------------- TFLM vs LiteRT


def test_tflite_micro_is_bit_exact_with_litert_reference_kernels(exports):
    check = exports["stm32h747-disco"].verification
    assert check.ok and (check.golden, check.validation, check.random) == (1, 100, 32)
    assert check.reference.top1_agreement == 1.0 and check.reference.max_lsb == 0
    assert check.optimized.samples == 133 and check.optimized.top1_agreement >= 0.9
    assert check.optimized.max_lsb is not None


def test_verification_refuses_an_arena_below_the_measured_one(exports, bundles):
    arena = exports["esp32-s3"].arena
    with pytest.raises(EngineError, match="arena"):
        verify(_model(bundles["esp32-s3"]), arena.measured_bytes - 16, random=2)


# --------------------------------------------------------------------------- refusals


@pytest.fixture(scope="module")
def large_bundle(tmp_path_factory, signer) -> Path:
    """An int8 Dense(1024 -> 640) model: 640 KiB of weights, more than the Nano 33 BLE's 512 KiB model partition."""
    import tensorflow as tf

    tf.keras.utils.set_random_seed(0)
    keras_model = tf.keras.Sequential([tf.keras.Input((1024,), batch_size=1), tf.keras.layers.Dense(640)])
    converter = tf.lite.TFLiteConverter.from_keras_model(keras_model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    rng = np.random.default_rng(0)
    converter.representative_dataset = lambda: ([rng.random((1, 1024), dtype=np.float32)] for _ in range(8))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = converter.inference_output_type = tf.int8
    model = converter.convert()
    manifest = Manifest(name="wide", version="1.0.0", created="2026-01-02T03:04:05Z", profile="arduino-nano-33-ble",
                        engine="tflite-micro", format="tflite", model="model.tflite",
                        inputs=(InputSpec("input", (1, 1024), "int8", layout="NC", scale=1 / 255, zero_point=-128),),
                        outputs=(OutputSpec("output", (1, 640), "int8"),), task=TaskSpec("raw"))
    root = tmp_path_factory.mktemp("fw-large")
    return write_bundle(manifest, {"model.tflite": model}, root / "wide.edgepkg",
                        SigningKey.from_file(signer[0].private_path))


def test_a_model_too_large_is_refused_with_the_fit_table_and_exported_with_force(large_bundle, signer, tmp_path):
    with pytest.raises(FitError) as err:
        export(large_bundle, tmp_path / "refused", trusted=signer[1])
    message = str(err.value)
    assert str(large_bundle) in message and "model storage on 'arduino-nano-33-ble'" in message
    assert re.search(r"model storage\s+\d+\.\d KiB\s+512\.0 KiB\s+FAIL", message)
    assert re.search(r"tensor arena \+ stack/heap \(internal SRAM\).*ok", message)
    assert "--force" in message and not (tmp_path / "refused").exists()
    result = export(large_bundle, tmp_path / "forced", trusted=signer[1], force=True)
    assert not result.fit.compatible and (tmp_path / "forced" / "src" / "model_data.cc").is_file()
    assert [f.name for f in result.fit.fits if not f.ok] == ["model storage"]


def test_ops_the_firmware_does_not_register_are_named(bundles, signer, tmp_path):
    profile = profile_variant("esp32-s3", runtime__ops=["CONV_2D", "RESHAPE", "FULLY_CONNECTED"])
    with pytest.raises(FitError) as err:
        export(bundles["esp32-s3"], tmp_path / "out", profile=profile, trusted=signer[1])
    assert "MAX_POOL_2D (1x)" in str(err.value) and "SOFTMAX (1x)" in str(err.value)
    assert "runtime.ops" in str(err.value)


def test_export_refuses_non_microcontroller_profiles_and_existing_files(bundles, exports, signer, tmp_path):
    with pytest.raises(FirmwareError, match="not TFLite Micro"):
        export(bundles["esp32-s3"], tmp_path / "pi", profile="raspberry-pi-4", trusted=signer[1])
    with pytest.raises(FirmwareError, match="would overwrite .*--overwrite"):
        export(bundles["esp32-s3"], exports["esp32-s3"].directory, trusted=signer[1])


# --------------------------------------------------------------------------- MCUboot


def test_mcuboot_image_signed_verified_and_tampering_rejected(bundles, signer, tmp_path):
    pair = signer[0]
    image = tmp_path / "model.bin"
    image.write_bytes(_model(bundles["stm32h747-disco"]))
    signed = tmp_path / "model.signed.bin"
    info = sign_image(image, pair.private_path, signed, version="1.2.3+4", security_counter=7,
                      profile=load_profile("stm32h747-disco"), slot_size=0x20000)
    assert (info.version, info.security_counter, info.header_size) == ("1.2.3+4", 7, 0x200)
    assert info.image_size == image.stat().st_size
    data = signed.read_bytes()
    assert data[0x200:0x200 + info.image_size] == image.read_bytes()  # the payload follows the padded header
    checked = verify_image(signed, pair.public_path)
    assert (checked.version, checked.security_counter) == ("1.2.3+4", 7)
    tampered = tmp_path / "tampered.bin"
    tampered.write_bytes(data[:0x300] + bytes([data[0x300] ^ 1]) + data[0x301:])
    with pytest.raises(ImageError) as err:
        verify_image(tampered, pair.public_path)
    assert str(tampered) in str(err.value) and "invalid hash" in str(err.value)
    other = generate_keypair(tmp_path / "other")
    with pytest.raises(ImageError, match=re.escape(str(signed))):
        verify_image(signed, other.public_path)
    with pytest.raises(ImageError, match=r"imgtool sign failed: Image size .* exceeds requested size 0x1000$"):
        sign_image(image, pair.private_path, tmp_path / "big.bin", version="1.0.0", slot_size=0x1000)
    with pytest.raises(ImageError, match="not an MCUboot version"):
        sign_image(image, pair.private_path, tmp_path / "v.bin", version="v1", slot_size=0x20000)
    with pytest.raises(ImageError, match="not an MCUboot image"):
        read_image(image)


# --------------------------------------------------------------------------- CLI


@pytest.mark.parametrize("argv", [["firmware"], ["firmware", "export"], ["firmware", "arena"], ["firmware", "sign"],
                                  ["firmware", "verify"]])
def test_cli_help(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([*argv, "--help"])
    assert exit_.value.code == 0
    assert "usage: edge-sdk firmware" in capsys.readouterr().out


def test_cli_export_arena_sign_verify_json(bundles, signer, tmp_path, capsys):
    bundle, trusted = bundles["arduino-nano-33-ble"], signer[1]
    assert main(["firmware", "export", str(bundle), "-o", str(tmp_path / "fw"), "--trusted-dir", str(trusted),
                 "--json"]) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert report["profile"] == "arduino-nano-33-ble" and report["verification"]["ok"]
    assert any(f.endswith(".ino") for f in report["files"]) and "==> measure the tensor arena" in captured.err
    assert main(["firmware", "arena", str(bundle), "--trusted-dir", str(trusted), "--json"]) == 0
    arena = json.loads(capsys.readouterr().out)
    assert arena["arena"]["recommended_bytes"] == report["arena"]["recommended_bytes"]
    assert arena["ram_bytes"] == 262144 and arena["compatible"]
    image = tmp_path / "fw.bin"
    image.write_bytes(b"\x01" * 4096)
    signed = tmp_path / "fw.signed.bin"
    key = signer[0].private_path
    assert main(["firmware", "sign", str(image), "--key", str(key), "--version", "2.0.1", "--security-counter", "3",
                 "--profile", "arduino-nano-33-ble", "-o", str(signed), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["security_counter"] == 3
    assert main(["firmware", "verify", str(signed), "--key", str(signer[0].public_path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {**json.loads(json.dumps(read_image(signed).to_dict())),
                                                  "verified": True}
    data = signed.read_bytes()
    signed.write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))  # always a change (setting 0x00 was not, 1 in 256)
    assert main(["firmware", "verify", str(signed), "--key", str(signer[0].public_path)]) == 1
    assert str(signed) in capsys.readouterr().err
    assert main(["firmware", "export", str(bundle), "-o", str(tmp_path / "fw"), "--trusted-dir", str(trusted)]) == 1
    assert "--overwrite" in capsys.readouterr().err


def test_cli_export_text_output(bundles, signer, tmp_path, capsys):
    assert main(["firmware", "export", str(bundles["esp32-s3"]), "-o", str(tmp_path / "fw"),
                 "--trusted-dir", str(signer[1])]) == 0
    out = capsys.readouterr().out
    assert "ops:      CONV_2D, MAX_POOL_2D, RESHAPE, FULLY_CONNECTED, SOFTMAX" in out
    naive = 10 * len(_model(bundles["esp32-s3"]))
    assert re.search(rf"arena:    \d+ bytes \(measured \d+ \+ margin \d+\); the 10x rule says {naive} ", out)
    assert "src/model_data.cc" in out and Counter(out.split())["FAIL"] == 0


# --------------------------------------------------------------------------- firmware through OTA jobs


def test_a_gateway_agent_flashes_the_signed_image_a_bundle_carries_and_rolls_back_a_bad_one(bundles, signer,
                                                                                            tmp_path):
    """An MCUboot image travels inside a bundle through an ordinary OTA job; the gateway's install command
    verifies it with imgtool and "flashes" it (a directory stands in for the board: no board exists here)."""
    from edge_sdk.agent import PipelineHost
    from edge_sdk.fleet import BundleServer, bundle_ref
    from edge_sdk.mqtt import OtaJob
    from edge_sdk.ota import HealthPolicy, OtaManager
    from ota_fixtures import bundle_variant

    pair, trusted = signer
    profile = load_profile("esp32-s3")
    key = SigningKey.from_file(pair.private_path)
    app = tmp_path / "app.bin"
    app.write_bytes(np.random.default_rng(3).integers(0, 256, 32 * 1024, dtype=np.uint8).tobytes())
    image = tmp_path / "app.signed.bin"
    sign_image(app, pair.private_path, image, version="1.1.0", security_counter=2, profile=profile,
               slot_size=0x100000)
    tampered = bytearray(image.read_bytes())
    tampered[0x200 + 1000] ^= 0x01  # inside the application, after the MCUboot header
    v110 = bundle_variant(bundles["esp32-s3"], tmp_path / "fw-1.1.0.edgepkg", key, version="1.1.0",
                          add={"firmware/app.signed.bin": image.read_bytes()})
    v120 = bundle_variant(bundles["esp32-s3"], tmp_path / "fw-1.2.0.edgepkg", key, version="1.2.0",
                          add={"firmware/app.signed.bin": bytes(tampered)})
    flash = tmp_path / "board"
    flash.mkdir()
    command = (f'"{sys.executable}" -m edge_sdk firmware verify firmware/app.signed.bin --key "{pair.public_path}"'
               f' && cp firmware/app.signed.bin "{flash}/slot1.bin"')
    progress = []
    host = PipelineHost(None)
    manager = OtaManager(tmp_path / "gateway", "esp32-cam-1", profile, TrustStore.from_dir(trusted), host,
                         progress.append, policy=HealthPolicy(window_s=0), install_command=command)
    manager.install_initial(bundles["esp32-s3"])
    host.swap(manager.load_active())
    try:
        with BundleServer() as server:
            for path, job_id in ((v110, "fw-1"), (v120, "fw-2")):
                ref = bundle_ref(path, trusted=trusted)
                manager._begin(OtaJob(job_id, ref, server.add(path), False, time.time()))
    finally:
        host.stop()
    first, second = ([p for p in progress if p.job_id == j][-1] for j in ("fw-1", "fw-2"))
    assert first.state == "committed", first.error
    assert (flash / "slot1.bin").read_bytes() == image.read_bytes()
    assert second.state == "rolled_back" and "install command exited with status 1" in second.error
    assert (flash / "slot1.bin").read_bytes() == image.read_bytes()  # the bad image never reached the board
    assert manager.slots.active.version == "1.1.0"
