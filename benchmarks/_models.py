"""The model the runtime benchmarks run: a float MobileNetV2 224x224 classifier, built here.

No download is possible (or wanted) on a benchmark machine, so the network is
``tf.keras.applications.MobileNetV2(weights=None)``: the real architecture
with seeded random weights, which cost exactly as much to run as trained
ones. It is converted once with ``tf.lite.TFLiteConverter`` (float32, no
optimisation) and cached under ``~/.cache/edge-sdk-bench/`` (or a
``cache_dir``); TensorFlow is imported only when the cache is cold.

:func:`mobilenet_v2_bundle` wraps the model into a ``.edgepkg`` for the
``raspberry-pi-4`` profile (LiteRT, tflite, NHWC float32 RGB input stretched
to 224x224 and normalised with mean 127.5 / std 127.5, a 1x1000 float32
output, classification with 1000 labels), signed with a freshly generated
key; the key and a trust store holding only its public half come back with it.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from edge_sdk.bundle import (  # noqa: E402
    InputSpec,
    Manifest,
    OutputSpec,
    SigningKey,
    TaskSpec,
    TrustStore,
    write_bundle,
)

#: Bump when the recipe below changes, so stale cached models are not reused.
RECIPE = 1
INPUT_SIZE = 224
NUM_CLASSES = 1000
PROFILE = "raspberry-pi-4"
DEFAULT_CACHE_DIR = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "edge-sdk-bench"


@dataclass(frozen=True)
class BenchModel:
    """A signed bundle, the plain ``.tflite`` inside it, and the keys that make it loadable."""

    tflite: Path
    bundle: Path
    key: SigningKey
    trusted: TrustStore
    manifest: Manifest


def mobilenet_v2_tflite(cache_dir: str | os.PathLike | None = None) -> Path:
    """The cached float32 MobileNetV2 224x224 ``.tflite``, converted on first use (about a minute)."""
    cache = Path(cache_dir) if cache_dir is not None else DEFAULT_CACHE_DIR
    path = cache / f"mobilenet_v2_{INPUT_SIZE}_float32-r{RECIPE}.tflite"
    if path.is_file() and path.stat().st_size > 0:
        return path
    cache.mkdir(parents=True, exist_ok=True)
    data = _convert_mobilenet_v2()
    tmp = path.with_name(f".{path.name}.partial-{os.getpid()}")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def _convert_mobilenet_v2() -> bytes:
    import logging

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    tf.keras.utils.set_random_seed(0)
    net = tf.keras.applications.MobileNetV2(
        input_shape=(INPUT_SIZE, INPUT_SIZE, 3), weights=None, classes=NUM_CLASSES, classifier_activation="softmax"
    )
    converter = tf.lite.TFLiteConverter.from_keras_model(net)
    with contextlib.redirect_stdout(io.StringIO()):  # Keras prints the exported signature; keep --json clean
        return converter.convert()


def _tensor_names(model: bytes) -> tuple[str, str]:
    """The model's own input and output tensor names, so the manifest matches the engine by name."""
    from edge_sdk.runtime.litert import _import_interpreter

    interpreter_cls, _, _ = _import_interpreter()
    interpreter = interpreter_cls(model_content=model)
    return interpreter.get_input_details()[0]["name"], interpreter.get_output_details()[0]["name"]


def mobilenet_v2_bundle(
    work_dir: str | os.PathLike, cache_dir: str | os.PathLike | None = None
) -> BenchModel:
    """A freshly signed ``raspberry-pi-4`` bundle of the cached MobileNetV2, written into ``work_dir``."""
    tflite = mobilenet_v2_tflite(cache_dir)
    model = tflite.read_bytes()
    input_name, output_name = _tensor_names(model)
    key = SigningKey.generate()
    trusted = TrustStore.from_keys([key.public_key])
    manifest = Manifest(
        name="mobilenet-v2-bench",
        version="1.0.0",
        created="2026-01-01T00:00:00Z",
        profile=PROFILE,
        engine="litert",
        format="tflite",
        model="model.tflite",
        inputs=(
            InputSpec(
                input_name, (1, INPUT_SIZE, INPUT_SIZE, 3), "float32", layout="NHWC", color_order="RGB",
                resize="stretch", mean=(127.5,), std=(127.5,),
            ),
        ),
        outputs=(OutputSpec(output_name, (1, NUM_CLASSES), "float32"),),
        task=TaskSpec("classification", labels="labels.txt"),
    )
    labels = "\n".join(f"class_{i:04d}" for i in range(NUM_CLASSES)).encode()
    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    bundle = write_bundle(manifest, {"model.tflite": tflite, "labels.txt": labels}, work / "mobilenet_v2.edgepkg", key)
    return BenchModel(tflite=tflite, bundle=bundle, key=key, trusted=trusted, manifest=manifest)


if __name__ == "__main__":  # python benchmarks/_models.py [cache_dir]: build (or find) the cached model
    print(mobilenet_v2_tflite(sys.argv[1] if len(sys.argv) > 1 else None))
