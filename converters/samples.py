"""Sample models built from data that ships inside a pip package (scikit-learn's digits).

These give the quick start, the examples and the tests a real trained model
without any download: scikit-learn carries the 1,797 8x8 handwritten digits
of the UCI optical-recognition set in its wheel.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_sdk.errors import MissingDependencyError

DIGIT_LABELS = tuple(str(i) for i in range(10))


@dataclass(frozen=True)
class DigitsSplit:
    """Digits as 8-bit grayscale images (N, 8, 8, 1) scaled to 0..255, with labels."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray


def load_digits_split(test_fraction: float = 0.2, seed: int = 0) -> DigitsSplit:
    """scikit-learn's digits, shuffled with a fixed seed and split into train and test."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:
        raise MissingDependencyError("scikit-learn", "host", "the digits sample data") from exc
    digits = load_digits()
    images = np.clip(np.rint(digits.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)[..., None]
    labels = digits.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(labels))
    images, labels = images[order], labels[order]
    n_test = int(round(len(labels) * test_fraction))
    return DigitsSplit(images[n_test:], labels[n_test:], images[:n_test], labels[:n_test])


@dataclass(frozen=True)
class SoftmaxClassifier:
    """A multinomial logistic regression over flattened pixels scaled to 0..1."""

    weights: np.ndarray  # (features, classes) float32
    bias: np.ndarray  # (classes,) float32

    def predict_proba(self, images: np.ndarray) -> np.ndarray:
        x = images.reshape(len(images), -1).astype(np.float32) / np.float32(255.0)
        logits = x @ self.weights + self.bias
        logits -= logits.max(axis=1, keepdims=True)
        e = np.exp(logits)
        return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)

    def accuracy(self, images: np.ndarray, labels: np.ndarray) -> float:
        return float((self.predict_proba(images).argmax(axis=1) == labels).mean())


def train_softmax(split: DigitsSplit, epochs: int = 300, learning_rate: float = 0.5, l2: float = 1e-4) -> SoftmaxClassifier:
    """Full-batch gradient descent; deterministic for a given split."""
    x = split.train_images.reshape(len(split.train_images), -1).astype(np.float64) / 255.0
    y = np.eye(10)[split.train_labels]
    w = np.zeros((x.shape[1], 10))
    b = np.zeros(10)
    for _ in range(epochs):
        logits = x @ w + b
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        p /= p.sum(axis=1, keepdims=True)
        grad = p - y
        w -= learning_rate * (x.T @ grad / len(x) + l2 * w)
        b -= learning_rate * grad.mean(axis=0)
    return SoftmaxClassifier(w.astype(np.float32), b.astype(np.float32))


def softmax_to_onnx(
    model: SoftmaxClassifier,
    path: str | Path,
    input_name: str = "image",
    output_name: str = "probs",
    batch: int | None = 1,
) -> Path:
    """Write the classifier as an ONNX graph: (batch,8,8,1) float pixels -> (batch,10) probabilities.

    ``batch=None`` makes the batch dimension dynamic, so one call can run frames from several cameras.

    The graph takes pixels already normalised to 0..1 (the bundle's input spec
    records mean 0 / std 255), flattens, applies the dense layer and softmax.
    """
    try:
        import onnx
        from onnx import TensorProto, helper, numpy_helper
    except ImportError as exc:
        raise MissingDependencyError("onnx", "host", "writing ONNX models") from exc
    features, classes = model.weights.shape
    graph = helper.make_graph(
        nodes=[
            helper.make_node("Reshape", [input_name, "flat_shape"], ["flat"]),  # (batch, 64)
            helper.make_node("MatMul", ["flat", "weights"], ["matmul"]),
            helper.make_node("Add", ["matmul", "bias"], ["logits"]),
            helper.make_node("Softmax", ["logits"], [output_name], axis=-1),
        ],
        name="digits_softmax",
        inputs=[helper.make_tensor_value_info(input_name, TensorProto.FLOAT, [batch or "N", 8, 8, 1])],
        outputs=[helper.make_tensor_value_info(output_name, TensorProto.FLOAT, [batch or "N", classes])],
        initializer=[
            numpy_helper.from_array(np.array([-1, features], dtype=np.int64), "flat_shape"),
            numpy_helper.from_array(model.weights, "weights"),
            numpy_helper.from_array(model.bias, "bias"),
        ],
    )
    onnx_model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="edge-sdk")
    onnx_model.ir_version = 8
    onnx.checker.check_model(onnx_model)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(onnx_model, str(path))
    return path


def train_digits_cnn(split: DigitsSplit, epochs: int = 8, seed: int = 0, width: int = 16):
    """A small real CNN (conv-relu-conv-relu-pool-dense) trained on the digits, as a Keras model.

    Input (1, 8, 8, 1) float pixels scaled to 0..1 (mean 0 / std 255 in the
    bundle's input spec), output (1, 10) softmax. Trains in a few seconds on
    two cores; test accuracy is typically above 95%.
    """
    try:
        import tensorflow as tf
    except ImportError as exc:
        raise MissingDependencyError("tensorflow", "host", "training the sample CNN") from exc
    tf.keras.utils.set_random_seed(seed)
    model = tf.keras.Sequential(
        [
            tf.keras.Input(shape=(8, 8, 1), batch_size=1, name="image"),
            tf.keras.layers.Conv2D(width, 3, padding="same", activation="relu"),
            tf.keras.layers.Conv2D(width * 2, 3, padding="same", activation="relu"),
            tf.keras.layers.MaxPooling2D(2),
            tf.keras.layers.Flatten(),
            tf.keras.layers.Dense(64, activation="relu"),
            tf.keras.layers.Dense(10, activation="softmax", name="probs"),
        ],
        name="digits_cnn",
    )
    model.compile(optimizer=tf.keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    x = split.train_images.astype(np.float32) / 255.0
    # Train with batches of 32 on a copy whose batch dimension is free, then carry the weights over.
    trainer = tf.keras.Sequential([tf.keras.Input(shape=(8, 8, 1))] + [layer for layer in model.layers])
    trainer.compile(optimizer=tf.keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy")
    trainer.fit(x, split.train_labels, epochs=epochs, batch_size=32, verbose=0, shuffle=True)
    return model


def npy_bytes(array: np.ndarray) -> bytes:
    """An array as ``.npy`` file bytes (how bundles carry golden tensors)."""
    import io

    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def softmax_bundle(
    classifier: SoftmaxClassifier,
    split: DigitsSplit,
    output: str | Path,
    signing_key,
    *,
    version: str = "1.0.0",
    profile: str = "generic-x86",
    name: str = "digits",
    golden_from: SoftmaxClassifier | None = None,
    extra_bytes: int = 0,
    metadata: dict | None = None,
) -> Path:
    """The softmax classifier as a signed ONNX bundle, with its golden input and expected output.

    ``golden_from`` computes the expected golden output with another
    classifier: a bundle whose model disagrees with its own golden pair, the
    way a broken build would (for health-check tests and the demo's rollback).
    ``extra_bytes`` adds that much incompressible payload (to make a download
    long enough to interrupt). The profile must run ONNX models.
    """
    import tempfile

    from edge_sdk.bundle import GoldenSpec, InputSpec, Manifest, OutputSpec, TaskSpec, write_bundle
    from edge_sdk.bundle.writer import utc_timestamp

    output = Path(output)
    golden_in = split.test_images[:1].astype(np.float32) / np.float32(255.0)
    golden_out = (golden_from or classifier).predict_proba(split.test_images[:1])
    manifest = Manifest(
        name=name,
        version=version,
        created=utc_timestamp(),
        profile=profile,
        engine="onnxruntime",
        format="onnx",
        model="model.onnx",
        inputs=(InputSpec("image", (1, 8, 8, 1), "float32", layout="NHWC", color_order="GRAY", resize="stretch",
                          mean=(0.0,), std=(255.0,)),),
        outputs=(OutputSpec("probs", (1, 10), "float32"),),
        task=TaskSpec("classification", labels="labels.txt", decoder="classification", params={"top_k": 3}),
        golden=GoldenSpec({"image": "golden/image.npy"}, {"probs": "golden/probs.npy"}, atol=1e-5, rtol=1e-4),
        quantization={"mode": "float32"},
        accuracy={"float_top1": round(classifier.accuracy(split.test_images, split.test_labels), 4),
                  "samples": int(len(split.test_labels))},
        metadata={"dataset": "scikit-learn digits", "trainer": "softmax regression", **(metadata or {})},
    )
    with tempfile.TemporaryDirectory(prefix="edge-sdk-softmax-") as tmp:
        model = softmax_to_onnx(classifier, Path(tmp) / "model.onnx")
        files = {
            "model.onnx": model.read_bytes(),
            "labels.txt": ("\n".join(DIGIT_LABELS) + "\n").encode(),
            "golden/image.npy": npy_bytes(golden_in),
            "golden/probs.npy": npy_bytes(golden_out),
        }
    if extra_bytes:
        files["extra/padding.bin"] = np.random.default_rng(1).integers(0, 256, extra_bytes, np.uint8).tobytes()
    return write_bundle(manifest, files, output, signing_key)
