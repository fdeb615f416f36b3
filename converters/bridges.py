"""Bridges: turn a source model into one a backend can convert, when its format needs another toolchain.

The packager loads a source model, then calls :func:`bridge` with the
profile's ``runtime.format``; the result is what the backend converts. Most
pairs need no bridge (a Keras model goes straight to TFLite, an ONNX model
straight to ONNX). The ones that do are listed in :data:`BRIDGES`, keyed by
``(source kind, target format)``.

``("onnx", "tflite")``: ONNX -> TensorFlow SavedModel with onnx2tf, then our
own TFLite backend (our calibration, our quantization, our validation) takes
over. onnx2tf pins old TensorFlow, numpy, onnx and protobuf releases that
cannot live in the project's environment, so it runs as an isolated tool: its
own virtual environment under ``<cache>/tools/onnx2tf-<version>``
(``$EDGE_SDK_CACHE_DIR``, else ``~/.cache/edge-sdk``), installed from the
package index the first time it is needed (about 2.6 GB, about a minute) and
run as a subprocess. Only files cross the boundary: the cleaned ONNX model in,
a SavedModel directory out, which the project's TensorFlow loads.

onnx2tf transposes 4-D image inputs from NCHW to NHWC, so the bridged model's
input is NHWC whatever the ONNX model's layout was. The SavedModel's outputs
are named ``output_0``, ``output_1``... by onnx2tf, not after the ONNX graph.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from converters.base import ConversionError, SourceModel
from edge_sdk.runtime.base import default_cache_dir

log = logging.getLogger(__name__)

# The newest onnx2tf whose pinned dependencies (tensorflow 2.19.0, numpy 1.26.4, onnx 1.19.1,
# onnxruntime 1.23.0, protobuf 4.25.5, ...) all install for Python 3.11 from the package index.
ONNX2TF_VERSION = "1.29.24"
# What the tool's environment gets. onnx2tf's metadata pins everything it imports at run time
# for SavedModel output (checked by converting with -osd in a fresh environment), so nothing more.
TOOL_REQUIREMENTS = (f"onnx2tf=={ONNX2TF_VERSION}",)
INSTALL_TIMEOUT_S = 1800
CONVERT_TIMEOUT_S = 900
LOG_TAIL_LINES = 15
SAVED_MODEL_DIR = "onnx2tf_saved_model"
# onnx2tf checks its conversion op by op on sample images. For models whose inputs are all 4-D with 3
# channels it reads them from this file in its working directory, else downloads them from GitHub at every
# conversion; we write deterministic noise instead (what onnx2tf feeds other models), so no network is needed.
SAMPLE_DATA_FILE = "calibration_image_sample_data_20x128x128x3_float32.npy"
SAMPLE_DATA_SHAPE = (20, 128, 128, 3)

Progress = Callable[[str], None]
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_TF_NOISE = re.compile(r"^[WIE]\d{4} \d\d:\d\d:\d\d\.\d+ +\d+ \S+:\d+\] |^WARNING: All log messages before absl")


def tool_dir() -> Path:
    """Where onnx2tf's own virtual environment lives (one per onnx2tf version)."""
    return default_cache_dir() / "tools" / f"onnx2tf-{ONNX2TF_VERSION}"


def _venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def _tool_name() -> str:
    return f"onnx2tf {ONNX2TF_VERSION}"


def _clean_env(venv: Path | None = None) -> dict[str, str]:
    """The subprocess environment: nothing of the project's interpreter leaks in; the tool's scripts come first.

    onnx2tf runs the ``onnxsim`` script by name, so the tool's ``bin`` must lead ``PATH``.
    """
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if venv is not None:
        env["PATH"] = os.pathsep.join([str(_venv_python(venv).parent), env.get("PATH", os.defpath)])
    return env


def _tail(text: str, lines: int = LOG_TAIL_LINES) -> str:
    """The last meaningful lines of a tool's output: no colour codes, no TensorFlow C++ start-up chatter."""
    text = _ANSI.sub("", text)
    kept = [line for line in text.strip().splitlines() if line.strip() and not _TF_NOISE.match(line)][-lines:]
    return "\n".join("    " + line for line in kept)


# ---------------------------------------------------------------------------------------------- the tool


def ensure_onnx2tf(progress: Progress | None = None) -> Path:
    """The Python of onnx2tf's isolated environment, installing it first if it is missing.

    The environment is built in a temporary directory next to :func:`tool_dir`
    and renamed into place only once the install succeeded and ``onnx2tf``
    imports, so an interrupted or failed install leaves nothing half-made.
    Two processes installing at once both build; the first rename wins and
    the other's copy is discarded. Needs package-index access once.
    """
    target = tool_dir()
    python = _venv_python(target)
    if python.is_file():
        return python
    if progress is not None:
        progress(f"installing {_tool_name()} (once, into {target})")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        _build_venv(staging)
        _relocate_scripts(staging, target)
        try:
            staging.rename(target)
        except OSError:
            if not python.is_file():  # not another process's finished install: a real failure
                raise
            log.info("%s was installed by another process meanwhile", _tool_name())
        else:
            log.info("installed %s into %s", _tool_name(), target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return python


def _build_venv(venv: Path) -> None:
    env = _clean_env()
    # sys._base_executable: a venv made from inside the project's venv still bases on the real interpreter.
    base_python = getattr(sys, "_base_executable", None) or sys.executable
    _run_install([base_python, "-m", "venv", str(venv)], env, "creating its virtual environment")
    python = str(_venv_python(venv))
    _run_install([python, "-m", "pip", "install", "--no-input", *TOOL_REQUIREMENTS], env, "pip install")
    smoke = ("import onnx2tf, tensorflow; "
             f"assert onnx2tf.__version__ == {ONNX2TF_VERSION!r}, onnx2tf.__version__")
    _run_install([python, "-c", smoke], env, "importing onnx2tf after the install")
    if not (_venv_python(venv).parent / "onnxsim").is_file():  # onnx2tf runs it by name
        raise ConversionError(_tool_name(), f"the install has no 'onnxsim' script in {_venv_python(venv).parent}")


def _relocate_scripts(staging: Path, target: Path) -> None:
    """Point the console scripts' ``#!`` lines (onnxsim, pip...) at where the environment is about to live."""
    old, new = f"#!{staging}/".encode(), f"#!{target}/".encode()
    for script in _venv_python(staging).parent.iterdir():
        if script.is_file() and not script.is_symlink():
            with script.open("rb") as f:
                head = f.read(len(old))
            if head == old:
                script.write_bytes(new + script.read_bytes()[len(old):])


def _run_install(cmd: list[str], env: dict[str, str], what: str) -> None:
    try:
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired as exc:
        raise ConversionError(_tool_name(), f"installing it timed out after {INSTALL_TIMEOUT_S} s ({what}); "
                                            "it needs package-index access once") from exc
    except OSError as exc:
        raise ConversionError(_tool_name(), f"cannot install it ({what}): {exc}") from exc
    if done.returncode != 0:
        raise ConversionError(
            _tool_name(),
            f"installing it failed ({what}, exit code {done.returncode}); it needs access to the package index "
            f"once, to install {' '.join(TOOL_REQUIREMENTS)} into {tool_dir()}. Last lines:\n"
            f"{_tail(done.stdout + done.stderr)}",
        )


# ---------------------------------------------------------------------------------------------- ONNX -> TF


def onnx_to_saved_model(source: SourceModel, work_dir: Path, progress: Progress | None = None) -> Path:
    """Convert the (cleaned, shape-pinned) ONNX model ``source`` to a SavedModel under ``work_dir`` with onnx2tf.

    4-D inputs come out NHWC (onnx2tf's default transposition). onnx2tf's log
    is kept in ``work_dir/onnx2tf.log``.
    """
    if source.kind != "onnx":
        raise ConversionError(source.name, f"onnx2tf converts ONNX models, not {source.kind!r} ones")
    python = ensure_onnx2tf(progress)
    work_dir = Path(work_dir).resolve()  # onnx2tf runs in work_dir: give it absolute paths
    work_dir.mkdir(parents=True, exist_ok=True)
    model_path = work_dir / "model.onnx"
    model_path.write_bytes(source.obj.SerializeToString())
    out = work_dir / SAVED_MODEL_DIR
    shutil.rmtree(out, ignore_errors=True)
    log_path = work_dir / "onnx2tf.log"
    _write_sample_data(work_dir / SAMPLE_DATA_FILE)
    cmd = [str(python), "-m", "onnx2tf", "-i", str(model_path), "-o", str(out), "-osd", "-v", "info"]
    log.info("%s: running %s", source.name, " ".join(cmd))
    try:
        with log_path.open("w") as log_file:
            done = subprocess.run(cmd, cwd=work_dir, env=_clean_env(python.parent.parent), stdout=log_file,
                                  stderr=subprocess.STDOUT, timeout=CONVERT_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired as exc:
        raise ConversionError(source.name, f"{_tool_name()} did not finish within {CONVERT_TIMEOUT_S} s "
                                           f"(log: {log_path})") from exc
    if done.returncode != 0 or not (out / "saved_model.pb").is_file():
        why = f"exit code {done.returncode}" if done.returncode != 0 else "it wrote no saved_model.pb"
        raise ConversionError(
            source.name,
            f"{_tool_name()} cannot convert this ONNX model to TensorFlow ({why}); a TFLite target needs that "
            f"step. Target an ONNX Runtime profile instead, or simplify the model's unsupported operators. "
            f"Last lines of {log_path}:\n{_tail(log_path.read_text(errors='replace'))}",
        )
    return out


def _write_sample_data(path: Path) -> None:
    import numpy as np

    if not path.is_file():
        np.save(path, np.random.default_rng(0).random(SAMPLE_DATA_SHAPE, dtype=np.float32))


def onnx_to_tflite_source(source: SourceModel, work_dir: Path, progress: Progress | None = None) -> SourceModel:
    """The ONNX model as a SavedModel source the TFLite backend converts (input NHWC, outputs ``output_<i>``)."""
    from converters.tf_models import load_saved_model

    saved = onnx_to_saved_model(source, work_dir, progress)
    loaded = load_saved_model(saved)
    return dataclasses.replace(loaded, name=f"{source.name} (via {_tool_name()})")


# ---------------------------------------------------------------------------------------------- registry

# (source kind, target format) -> the function turning such a source into one the target's backend converts.
BRIDGES: dict[tuple[str, str], Callable[..., SourceModel]] = {
    ("onnx", "tflite"): onnx_to_tflite_source,
}
# What each backend converts directly.
NATIVE: dict[str, frozenset[str]] = {
    "tflite": frozenset({"keras", "saved_model", "tflite"}),
    "onnx": frozenset({"keras", "saved_model", "onnx"}),
}


def bridge(source: SourceModel, target_format: str, work_dir: Path, progress: Progress | None = None) -> SourceModel:
    """``source`` made convertible to ``target_format``: itself when the backend takes it directly."""
    if source.kind in NATIVE.get(target_format, frozenset()):
        return source
    convert = BRIDGES.get((source.kind, target_format))
    if convert is None:
        raise ConversionError(
            source.name,
            f"a {source.kind!r} model cannot be converted to {target_format!r}: no converter or bridge does that "
            f"(bridges: {', '.join(f'{a} -> {b}' for a, b in BRIDGES)}); export the model in a format the "
            f"profile's runtime takes",
        )
    return convert(source, Path(work_dir), progress)
