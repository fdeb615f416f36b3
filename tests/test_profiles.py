"""Device profiles: the built-in files, the schema's validation, and how names are found."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from device_profiles import (
    DeviceProfile,
    builtin_profiles_dir,
    list_profiles,
    load_profile,
    profile_search_path,
    validate_file,
)
from edge_sdk.errors import ProfileError, ProfileNotFoundError

BUILTIN_IDS = {
    "raspberry-pi-4",
    "raspberry-pi-5",
    "jetson-nano",
    "jetson-orin-nano",
    "coral-usb",
    "coral-dev-board",
    "esp32-s3",
    "stm32h747-disco",
    "arduino-nano-33-ble",
    "generic-x86",
}
MCU_IDS = {"esp32-s3", "stm32h747-disco", "arduino-nano-33-ble"}
CORAL_IDS = {"coral-usb", "coral-dev-board"}


# --------------------------------------------------------------------------- helpers


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a TOML basic string for these ASCII values
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(value)


def to_toml(data: dict[str, Any]) -> str:
    """Enough of a TOML writer for profiles: scalars, arrays and one level of tables."""
    lines = [f"{k} = {_toml_value(v)}" for k, v in data.items() if not isinstance(v, dict)]
    for key, table in data.items():
        if isinstance(table, dict):
            lines.append(f"\n[{key}]")
            lines.extend(f"{k} = {_toml_value(v)}" for k, v in table.items())
    return "\n".join(lines) + "\n"


def base_profile(profile_id: str = "test-board") -> dict[str, Any]:
    """A valid LiteRT profile to mutate."""
    return {
        "schema": 1,
        "id": profile_id,
        "name": "Test board",
        "source": "made up for tests",
        "cpu": {"architecture": "aarch64", "model": "Cortex-A72", "cores": 4, "frequency_mhz": 1800},
        "memory": {"ram_bytes": 4 << 30, "storage_bytes": 1 << 30},
        "runtime": {
            "engine": "litert",
            "format": "tflite",
            "quantization": "int8",
            "allowed_quantization": ["int8", "float32"],
            "input_dtype": "float32",
            "output_dtype": "float32",
            "num_threads": 4,
            "delegates": ["xnnpack"],
            "static_shapes": True,
            "fallback_to_cpu": True,
        },
        "compute": {"gops": 14.0},
    }


def mcu_profile(profile_id: str = "test-mcu") -> dict[str, Any]:
    """A valid TFLite Micro profile to mutate."""
    return {
        "schema": 1,
        "id": profile_id,
        "name": "Test MCU",
        "cpu": {"architecture": "armv7e-m", "model": "Cortex-M4F", "cores": 1, "frequency_mhz": 64},
        "memory": {"ram_bytes": 256 << 10, "storage_bytes": 512 << 10, "flash_bytes": 1 << 20},
        "runtime": {
            "engine": "tflite-micro",
            "format": "tflite",
            "quantization": "int8",
            "allowed_quantization": ["int8"],
            "input_dtype": "int8",
            "output_dtype": "int8",
            "num_threads": 1,
            "delegates": [],
            "ops": ["CONV_2D", "SOFTMAX"],
            "optimized_kernels": "cmsis-nn",
        },
        "compute": {"gops": 0.04},
    }


def write(directory: Path, data: dict[str, Any], stem: str | None = None) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{stem or data['id']}.toml"
    path.write_text(to_toml(data), encoding="utf-8")
    return path


def expect_error(path: Path, key: str | None, *fragments: str) -> ProfileError:
    with pytest.raises(ProfileError) as info:
        validate_file(path)
    err = info.value
    message = str(err)
    assert str(path) in message
    assert err.path == str(path)
    if key is not None:
        assert err.key == key
        assert repr(key) in message
    for fragment in fragments:
        assert fragment in message, message
    return err


@pytest.fixture(autouse=True)
def _no_user_profiles(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EDGE_SDK_PROFILES_PATH", raising=False)


# --------------------------------------------------------------------------- the built-in profiles


def test_builtin_directory_holds_exactly_the_documented_profiles() -> None:
    stems = {p.stem for p in builtin_profiles_dir().glob("*.toml")}
    assert stems == BUILTIN_IDS
    assert [p.id for p in list_profiles()] == sorted(BUILTIN_IDS)


@pytest.mark.parametrize("profile_id", sorted(BUILTIN_IDS))
def test_builtin_loads_round_trips_and_names_its_sources(profile_id: str) -> None:
    path = builtin_profiles_dir() / f"{profile_id}.toml"
    profile = load_profile(profile_id)
    assert profile.id == profile_id == path.stem
    assert Path(profile.path) == path
    assert profile.source.strip() and profile.description.strip()
    data = profile.to_dict()
    assert "path" not in data
    again = DeviceProfile.from_dict(json.loads(json.dumps(data)), profile.path)
    assert again == profile
    assert again.to_dict() == data
    assert validate_file(path) == profile


@pytest.mark.parametrize("profile_id", sorted(MCU_IDS))
def test_microcontrollers_are_tflite_micro_full_integer(profile_id: str) -> None:
    p = load_profile(profile_id)
    assert p.is_microcontroller
    assert (p.runtime.engine, p.runtime.format) == ("tflite-micro", "tflite")
    assert p.runtime.quantization == "int8" and p.runtime.allowed_quantization == ("int8",)
    assert (p.runtime.input_dtype, p.runtime.output_dtype) == ("int8", "int8")
    assert p.runtime.num_threads == 1 and p.runtime.delegates == ()
    assert p.accelerator is None
    assert p.memory.flash_bytes is not None and p.memory.storage_bytes <= p.memory.flash_bytes
    assert {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "SOFTMAX", "RESHAPE"} <= p.supported_ops
    assert "SIN" not in p.supported_ops  # float-only kernel, not in an int8 resolver


def test_microcontroller_figures() -> None:
    nano = load_profile("arduino-nano-33-ble")
    assert (nano.cpu.model, nano.cpu.frequency_mhz) == ("Cortex-M4F", 64)
    assert (nano.memory.ram_bytes, nano.memory.flash_bytes) == (256 * 1024, 1024 * 1024)
    esp = load_profile("esp32-s3")
    assert (esp.cpu.architecture, esp.cpu.cores, esp.cpu.frequency_mhz) == ("xtensa-lx7", 2, 240)
    assert (esp.memory.ram_bytes, esp.memory.external_ram_bytes) == (512 * 1024, 8 << 20)
    assert esp.runtime.optimized_kernels == "esp-nn"
    stm = load_profile("stm32h747-disco")
    assert (stm.cpu.frequency_mhz, stm.memory.ram_bytes) == (480, 1 << 20)
    assert stm.runtime.optimized_kernels == "cmsis-nn"


@pytest.mark.parametrize("profile_id", sorted(CORAL_IDS))
def test_coral_is_edgetpu_only_with_uint8_io(profile_id: str) -> None:
    p = load_profile(profile_id)
    assert (p.runtime.engine, p.runtime.format, p.runtime.quantization) == ("litert", "tflite", "int8")
    assert p.runtime.allowed_quantization == ("int8",)
    assert (p.runtime.input_dtype, p.runtime.output_dtype) == ("uint8", "uint8")
    assert p.runtime.delegates == ("edgetpu",) and p.runtime.fallback_to_cpu is False
    assert p.accelerator is not None and p.accelerator.kind == "edgetpu"
    assert p.accelerator.parameter_cache_bytes == 8 * 1024 * 1024
    assert p.accelerator.peak_tops == 4.0
    assert "CONV_2D" in p.accelerator.ops and "DEPTHWISE_CONV_2D" in p.accelerator.ops
    for unsupported in ("GATHER", "HARD_SWISH", "DEQUANTIZE"):
        assert unsupported not in p.accelerator.ops
    # Without CPU fallback, the Edge TPU's list is what a model may use.
    assert p.supported_ops == frozenset(p.accelerator.ops)


def test_jetson_and_x86_runtime_choices() -> None:
    orin = load_profile("jetson-orin-nano")
    assert (orin.runtime.engine, orin.runtime.quantization) == ("onnxruntime", "fp16")
    assert orin.runtime.delegates == ("tensorrt", "cuda", "cpu")
    assert "int8" in orin.runtime.allowed_quantization
    assert (orin.runtime.activation_type, orin.runtime.weight_type) == ("int8", "int8")
    assert orin.runtime.symmetric_activations is True
    assert (orin.cpu.model, orin.cpu.cores) == ("Cortex-A78AE", 6)
    nano = load_profile("jetson-nano")
    assert nano.runtime.delegates == ("tensorrt", "cuda", "cpu")
    assert "int8" not in nano.runtime.allowed_quantization  # Maxwell has no fast int8
    assert (nano.cpu.model, nano.cpu.cores, nano.cpu.frequency_mhz) == ("Cortex-A57", 4, 1430)
    x86 = load_profile("generic-x86")
    assert (x86.cpu.architecture, x86.cpu.cores, x86.runtime.quantization) == ("x86_64", 4, "int8")
    assert (x86.runtime.activation_type, x86.runtime.weight_type) == ("uint8", "int8")
    assert x86.runtime.delegates == ("cpu",) and x86.accelerator is None
    pi4, pi5 = load_profile("raspberry-pi-4"), load_profile("raspberry-pi-5")
    assert (pi4.cpu.model, pi4.cpu.frequency_mhz, pi5.cpu.model, pi5.cpu.frequency_mhz) == (
        "Cortex-A72", 1800, "Cortex-A76", 2400)
    assert pi4.runtime.delegates == ("xnnpack",) and pi4.supported_ops is None


# --------------------------------------------------------------------------- validation


def _set(data: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    target = data
    for part in parents:
        target = target[part]
    target[last] = value


def _delete(data: dict[str, Any], dotted: str) -> None:
    *parents, last = dotted.split(".")
    target = data
    for part in parents:
        target = target[part]
    del target[last]


@pytest.mark.parametrize(
    ("dotted", "value", "key", "fragments"),
    [
        # unknown keys, at the top and nested: named, with the allowed ones listed
        ("colour", "red", "colour", ("unknown key 'colour'", "allowed keys in the top level", "runtime")),
        ("memory.ram_byte", 4, "memory.ram_byte", ("unknown key 'ram_byte'", "[memory]", "ram_bytes")),
        ("runtime.threads", 2, "runtime.threads", ("unknown key 'threads'", "num_threads")),
        # wrong types, quoting the value given
        ("cpu.cores", True, "cpu.cores", ("expected an integer", "True")),
        ("cpu.cores", "4", "cpu.cores", ("expected an integer", "'4'")),
        ("memory.ram_bytes", 4.5, "memory.ram_bytes", ("expected an integer", "4.5")),
        ("compute.gops", "fast", "compute.gops", ("expected a number", "'fast'")),
        ("runtime.static_shapes", 1, "runtime.static_shapes", ("expected true or false", "1")),
        ("runtime.delegates", "xnnpack", "runtime.delegates", ("expected an array", "'xnnpack'")),
        ("runtime.delegates", ["xnnpack", 3], "runtime.delegates[1]", ("expected a string", "3")),
        ("cpu", 3, "cpu", ("expected a table", "3")),
        # impossible values
        ("memory.ram_bytes", -1, "memory.ram_bytes", ("at least 1", "-1")),
        ("memory.storage_bytes", 0, "memory.storage_bytes", ("at least 1", "0")),
        ("cpu.cores", 0, "cpu.cores", ("at least 1", "0")),
        ("compute.gops", 0, "compute.gops", ("greater than 0",)),
        ("compute.gops", float("nan"), "compute.gops", ("finite",)),
        ("id", "Raspberry_Pi", "id", ("not a valid id",)),
        ("schema", 2, "schema", ("unsupported schema version 2",)),
        # closed sets list what is allowed
        ("cpu.architecture", "arm64", "cpu.architecture", ("'arm64' is not one of", "aarch64", "x86_64")),
        ("runtime.engine", "tensorflow", "runtime.engine", ("'tensorflow' is not one of", "litert")),
        ("runtime.input_dtype", "int4", "runtime.input_dtype", ("'int4' is not one of", "uint8")),
        # combinations
        ("runtime.format", "onnx", "runtime.format", ("engine 'litert' runs 'tflite' models, not 'onnx'",)),
        ("runtime.delegates", ["tensorrt"], "runtime.delegates[0]", ("'tensorrt' is not one of", "xnnpack")),
        ("runtime.delegates", ["xnnpack", "xnnpack"], "runtime.delegates[1]", ("listed twice",)),
        ("runtime.delegates", ["gpu"], "runtime.delegates[0]", ("needs an [accelerator] of kind 'gpu'",)),
        ("runtime.quantization", "fp16", "runtime.quantization", ("'fp16' is not in allowed_quantization",)),
        ("runtime.allowed_quantization", [], "runtime.allowed_quantization", ("at least one",)),
        ("runtime.input_dtype", "uint8", "runtime.input_dtype", ("full-integer", "'float32'")),
        ("runtime.num_threads", 8, "runtime.num_threads", ("8 threads on a 4-core CPU",)),
        ("runtime.activation_type", "uint8", "runtime.activation_type", ("only applies to ONNX int8",)),
        ("runtime.ops", ["conv2d"], "runtime.ops[0]", ("not a tflite operator name",)),
        ("runtime.optimized_kernels", "cmsis-nn", "runtime.optimized_kernels", ("only applies to engine",)),
    ],
)
def test_invalid_value_names_file_and_dotted_key(
    tmp_path: Path, dotted: str, value: Any, key: str, fragments: tuple[str, ...]
) -> None:
    data = base_profile()
    _set(data, dotted, value)
    if isinstance(value, float) and value != value:  # nan: TOML spells it nan
        path = tmp_path / "test-board.toml"
        path.write_text(to_toml(base_profile()).replace("gops = 14.0", "gops = nan"), encoding="utf-8")
    else:
        path = write(tmp_path, data, stem="test-board")
    expect_error(path, key, *fragments)


@pytest.mark.parametrize(
    ("dotted", "key"),
    [
        ("name", "name"),
        ("schema", "schema"),
        ("cpu.architecture", "cpu.architecture"),
        ("memory.ram_bytes", "memory.ram_bytes"),
        ("runtime.engine", "runtime.engine"),
        ("compute.gops", "compute.gops"),
        ("compute", "compute"),
    ],
)
def test_missing_key_is_named(tmp_path: Path, dotted: str, key: str) -> None:
    data = base_profile()
    _delete(data, dotted)
    expect_error(write(tmp_path, data, stem="test-board"), key, "missing")


_TABLE_KEYS = {
    "": set(base_profile()) | {"description", "accelerator"},
    "cpu": set(base_profile()["cpu"]),
    "memory": {"ram_bytes", "storage_bytes", "external_ram_bytes", "flash_bytes"},
    "runtime": set(base_profile()["runtime"]) | {"activation_type", "weight_type", "symmetric_activations",
                                                 "ops", "optimized_kernels"},
    "compute": {"gops"},
}


@settings(max_examples=60, deadline=None)
@given(table=st.sampled_from(sorted(_TABLE_KEYS)), key=st.from_regex(r"[a-z][a-z_]{0,15}", fullmatch=True))
def test_any_unknown_key_is_rejected_by_name(table: str, key: str) -> None:
    if key in _TABLE_KEYS[table]:
        return
    data = base_profile()
    (data[table] if table else data)[key] = 1
    dotted = f"{table}.{key}" if table else key
    with pytest.raises(ProfileError) as info:
        DeviceProfile.from_dict(data, "user.toml")
    assert info.value.key == dotted
    assert f"unknown key {key!r}" in str(info.value) and str(info.value).startswith("user.toml: ")


def test_bool_is_not_an_integer_anywhere(tmp_path: Path) -> None:
    data = base_profile()
    data["memory"]["ram_bytes"] = False
    expect_error(write(tmp_path, data), "memory.ram_bytes", "expected an integer, got False (a boolean)")


def test_integers_are_accepted_where_floats_are_expected(tmp_path: Path) -> None:
    data = base_profile()
    data["compute"]["gops"] = 14
    profile = validate_file(write(tmp_path, data))
    assert profile.compute.gops == 14.0 and isinstance(profile.compute.gops, float)


def test_onnx_engine_rules(tmp_path: Path) -> None:
    data = base_profile()
    data["runtime"].update(engine="onnxruntime", format="onnx", delegates=["cpu"])
    # int8 in ONNX needs the activation and weight types spelled out
    expect_error(write(tmp_path, data), "runtime.activation_type", "required key is missing", "'uint8'")
    data["runtime"].update(activation_type="uint8", weight_type="int8")
    assert validate_file(write(tmp_path, data)).runtime.weight_type == "int8"
    data["runtime"]["delegates"] = ["cpu", "cuda"]
    expect_error(write(tmp_path, data), "runtime.delegates", "must come last")
    data["runtime"]["delegates"] = []
    expect_error(write(tmp_path, data), "runtime.delegates", "at least one execution provider")
    data["runtime"]["delegates"] = ["xnnpack"]
    expect_error(write(tmp_path, data), "runtime.delegates[0]", "'xnnpack' is not one of", "tensorrt, cuda, cpu")


def test_microcontroller_rules(tmp_path: Path) -> None:
    data = mcu_profile()
    assert validate_file(write(tmp_path, data)).supported_ops == {"CONV_2D", "SOFTMAX"}
    bad = copy.deepcopy(data)
    bad["runtime"]["allowed_quantization"] = ["int8", "fp16"]
    bad["runtime"]["input_dtype"] = bad["runtime"]["output_dtype"] = "float32"
    expect_error(write(tmp_path, bad), "runtime.allowed_quantization[1]", "cannot run 'fp16'")
    bad = copy.deepcopy(data)
    bad["cpu"]["cores"] = 2
    bad["runtime"]["num_threads"] = 2
    expect_error(write(tmp_path, bad), "runtime.num_threads", "single-threaded")
    bad = copy.deepcopy(data)
    bad["runtime"]["delegates"] = ["xnnpack"]
    expect_error(write(tmp_path, bad), "runtime.delegates[0]", "'xnnpack' is not one of", "(none allowed)")
    bad = copy.deepcopy(data)
    del bad["memory"]["flash_bytes"]
    expect_error(write(tmp_path, bad), "memory.flash_bytes", "required key is missing")
    bad = copy.deepcopy(data)
    bad["memory"]["storage_bytes"] = 2 << 20
    expect_error(write(tmp_path, bad), "memory.storage_bytes", "larger than the flash")
    bad = copy.deepcopy(data)
    bad["runtime"]["optimized_kernels"] = "esp-nn"
    expect_error(write(tmp_path, bad), "runtime.optimized_kernels", "'armv7e-m'")


def test_edgetpu_rules(tmp_path: Path) -> None:
    data = base_profile()
    data["runtime"].update(allowed_quantization=["int8"], input_dtype="uint8", output_dtype="uint8",
                           delegates=["edgetpu"], fallback_to_cpu=False)
    data["accelerator"] = {"kind": "edgetpu", "name": "Edge TPU", "ops": ["CONV_2D"], "parameter_cache_bytes": 8 << 20}
    profile = validate_file(write(tmp_path, data))
    assert profile.supported_ops == {"CONV_2D"}
    fallback = copy.deepcopy(data)
    fallback["runtime"]["fallback_to_cpu"] = True
    assert validate_file(write(tmp_path, fallback)).supported_ops is None  # other ops may run on the CPU
    bad = copy.deepcopy(data)
    bad["runtime"]["delegates"] = ["xnnpack"]
    expect_error(write(tmp_path, bad), "accelerator.kind", "'edgetpu' delegate")
    bad = copy.deepcopy(data)
    bad["runtime"].update(input_dtype="float32", output_dtype="float32")
    expect_error(write(tmp_path, bad), "accelerator.kind", "integer I/O")
    bad = copy.deepcopy(data)
    bad["accelerator"]["kind"] = "tpu"
    expect_error(write(tmp_path, bad), "accelerator.kind", "'tpu' is not one of", "edgetpu, gpu, npu")
    bad = copy.deepcopy(data)
    bad["accelerator"]["cache"] = 1
    expect_error(write(tmp_path, bad), "accelerator.cache", "unknown key", "parameter_cache_bytes")


def test_toml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text('schema = 1\nid = "broken"\nname = \n', encoding="utf-8")
    err = expect_error(path, None, "invalid TOML", "line 3")
    assert err.key is None


def test_unreadable_inputs(tmp_path: Path) -> None:
    expect_error(tmp_path / "absent.toml", None, "not found")
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"schema = 1\nname = \"\xff\"\n")
    expect_error(binary, None, "not UTF-8")


def test_from_dict_errors_without_a_file() -> None:
    data = base_profile()
    data["cpu"]["cores"] = -2
    with pytest.raises(ProfileError) as info:
        DeviceProfile.from_dict(data)
    assert str(info.value).startswith("<dict>: key 'cpu.cores'")


def test_path_is_not_part_of_equality(tmp_path: Path) -> None:
    a = validate_file(write(tmp_path / "a", base_profile()))
    b = validate_file(write(tmp_path / "b", base_profile()))
    assert a.path != b.path and a == b and hash(a) == hash(b)


def test_edited_file_is_read_again(tmp_path: Path) -> None:
    data = base_profile()
    path = write(tmp_path, data)
    assert validate_file(path).compute.gops == 14.0
    data["compute"]["gops"] = 41.0  # same length on disk: a size/mtime cache could miss it
    write(tmp_path, data)
    assert validate_file(path).compute.gops == 41.0


# --------------------------------------------------------------------------- finding profiles


def test_unknown_name_lists_known_profiles() -> None:
    with pytest.raises(ProfileNotFoundError) as info:
        load_profile("raspberry-pi-9")
    err = info.value
    assert isinstance(err, ProfileError)
    assert err.name == "raspberry-pi-9" and set(err.known) == BUILTIN_IDS
    assert "raspberry-pi-9" in str(err) and "jetson-nano" in str(err)


def test_search_dirs_override_and_add(tmp_path: Path) -> None:
    mine = base_profile("raspberry-pi-4")
    mine["name"] = "My overclocked Pi"
    write(tmp_path, mine)
    write(tmp_path, base_profile("lab-board"))
    assert load_profile("raspberry-pi-4", [tmp_path]).name == "My overclocked Pi"
    assert load_profile("raspberry-pi-4").name != "My overclocked Pi"
    assert load_profile("lab-board", [tmp_path]).path == str(tmp_path / "lab-board.toml")
    found = {p.id: p for p in list_profiles([tmp_path])}
    assert set(found) == BUILTIN_IDS | {"lab-board"}
    assert found["raspberry-pi-4"].name == "My overclocked Pi"
    assert [p.id for p in list_profiles([tmp_path])] == sorted(found)


def test_environment_path_overrides_and_adds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    override = base_profile("coral-usb")
    override["name"] = "Coral on my laptop"
    write(first, base_profile("env-board"))
    write(second, override)
    monkeypatch.setenv("EDGE_SDK_PROFILES_PATH", os.pathsep.join([str(first), str(tmp_path / "missing"), str(second)]))
    assert load_profile("env-board").id == "env-board"
    assert load_profile("coral-usb").name == "Coral on my laptop"
    assert {p.id for p in list_profiles()} == BUILTIN_IDS | {"env-board"}
    assert profile_search_path()[:2] == [first, second]  # the missing entry is skipped
    # explicit search_dirs come before the environment
    explicit = tmp_path / "explicit"
    explicit_override = base_profile("coral-usb")
    explicit_override["name"] = "Explicit"
    write(explicit, explicit_override)
    assert load_profile("coral-usb", [explicit]).name == "Explicit"


def test_broken_user_file_fails_listing(tmp_path: Path) -> None:
    data = base_profile("half-done")
    del data["compute"]
    path = write(tmp_path, data)
    with pytest.raises(ProfileError) as info:
        list_profiles([tmp_path])
    assert info.value.path == str(path) and info.value.key == "compute"


def test_file_in_a_profiles_directory_must_be_named_after_its_id(tmp_path: Path) -> None:
    path = write(tmp_path, base_profile("real-id"), stem="other-name")
    with pytest.raises(ProfileError) as info:
        load_profile("other-name", [tmp_path])
    assert info.value.key == "id" and str(path) in str(info.value) and "real-id.toml" in str(info.value)
    # loaded by path, any file name will do
    assert validate_file(path).id == "real-id"
    assert load_profile(path).id == "real-id"
    assert load_profile(str(path)).id == "real-id"


def test_path_arguments_are_not_looked_up_by_name(tmp_path: Path) -> None:
    with pytest.raises(ProfileError) as info:
        load_profile("raspberry-pi-4.toml")  # a relative path that does not exist here
    assert not isinstance(info.value, ProfileNotFoundError) and "not found" in str(info.value)


def test_explicit_search_dir_must_exist(tmp_path: Path) -> None:
    with pytest.raises(ProfileError) as info:
        load_profile("raspberry-pi-4", [tmp_path / "nope"])
    assert str(tmp_path / "nope") in str(info.value) and "does not exist" in str(info.value)
