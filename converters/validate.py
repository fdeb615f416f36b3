"""Float vs quantized: run both converted models on held-out samples and measure what quantization cost.

Both models run in edge-sdk's own engines (the same code the device runs),
so the numbers are the device's numbers. Measured, per task:

* every task: per-output cosine similarity and max / mean absolute error of
  the dequantized outputs;
* classification: top-1 agreement, and top-1 accuracy of each model when the
  samples carry labels;
* detection: the float model's detections matched to the quantized model's
  (greedy, same class, IoU >= 0.5): recall and mean matched IoU;
* segmentation: pixel agreement of the class maps;
* speed: median latency of each model on this host, so a quantized model that
  is slower than float (small models, wrong quantization types) is reported.

``accuracy_drop`` is the number the accuracy gate compares with
``--max-accuracy-drop``, in points (percent): the top-1 accuracy drop when
labels are known, else ``100 * (1 - agreement)`` for the task's agreement
measure (top-1 agreement, detection recall, pixel agreement, or worst output
cosine similarity for raw outputs).
"""

from __future__ import annotations

import logging
import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from converters.base import Converted
from converters.calibration import Samples
from edge_sdk.bundle.manifest import TaskSpec
from edge_sdk.runtime import EngineConfig, create_engine
from edge_sdk.runtime.base import TensorInfo

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OutputAgreement:
    name: str
    cosine: float
    max_abs_error: float
    mean_abs_error: float

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "cosine": round(self.cosine, 6), "max_abs_error": round(self.max_abs_error, 6),
                "mean_abs_error": round(self.mean_abs_error, 6)}


@dataclass(frozen=True)
class ValidationReport:
    task: str
    samples: int
    accuracy_drop: float  # points
    measure: str  # what accuracy_drop was computed from
    outputs: tuple[OutputAgreement, ...]
    top1_agreement: float | None = None
    float_accuracy: float | None = None
    quantized_accuracy: float | None = None
    detection_recall: float | None = None
    detection_mean_iou: float | None = None
    pixel_agreement: float | None = None
    float_latency_ms: float = 0.0
    quantized_latency_ms: float = 0.0
    extra: dict = field(default_factory=dict)

    @property
    def quantized_is_slower(self) -> bool:
        return self.quantized_latency_ms > self.float_latency_ms * 1.05

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "task": self.task,
            "samples": self.samples,
            "accuracy_drop_points": round(self.accuracy_drop, 4),
            "measure": self.measure,
            "outputs": [o.to_dict() for o in self.outputs],
            "float_latency_ms": round(self.float_latency_ms, 4),
            "quantized_latency_ms": round(self.quantized_latency_ms, 4),
            "speedup": round(self.float_latency_ms / self.quantized_latency_ms, 4) if self.quantized_latency_ms else None,
            "quantized_is_slower": self.quantized_is_slower,
        }
        for key in ("top1_agreement", "float_accuracy", "quantized_accuracy", "detection_recall",
                    "detection_mean_iou", "pixel_agreement"):
            value = getattr(self, key)
            if value is not None:
                data[key] = round(value, 6)
        return data


class Runner:
    """A converted model in edge-sdk's engine, fed float tensors, returning dequantized float outputs."""

    def __init__(self, converted: Converted, engine: str, num_threads: int = 1) -> None:
        self.engine = create_engine(engine, converted.model, EngineConfig(num_threads=num_threads))
        self._input: TensorInfo = self.engine.inputs[0]
        self._outputs = self.engine.outputs

    def feed(self, tensor: np.ndarray) -> np.ndarray:
        """A float input tensor as the engine takes it (quantized when the model has integer input)."""
        return self._input.quantize(tensor)

    def run_raw(self, tensor: np.ndarray) -> list[np.ndarray]:
        return self.engine.run({self._input.name: self.feed(tensor)})

    def __call__(self, tensor: np.ndarray) -> list[np.ndarray]:
        return [out.dequantize(value) for value, out in zip(self.run_raw(tensor), self._outputs)]

    def close(self) -> None:
        self.engine.close()


def validate(
    reference: Converted,
    candidate: Converted,
    samples: Samples,
    engine: str,
    task: TaskSpec,
    labels: Sequence[str] = (),
    input_size: tuple[int, int] = (0, 0),
    num_threads: int = 1,
) -> ValidationReport:
    """Run ``reference`` (float) and ``candidate`` (quantized) on ``samples`` and compare."""
    float_run = Runner(reference, engine, num_threads)
    quant_run = Runner(candidate, engine, num_threads)
    try:
        float_out, float_times = _run_all(float_run, samples)
        quant_out, quant_times = _run_all(quant_run, samples)
    finally:
        float_run.close()
        quant_run.close()
    names = [o.name for o in candidate.outputs]
    outputs = tuple(_agreement(names[i] if i < len(names) else str(i), [f[i] for f in float_out],
                               [q[i] for q in quant_out]) for i in range(len(float_out[0])))
    common = dict(task=task.kind, samples=len(samples), outputs=outputs,
                  float_latency_ms=statistics.median(float_times), quantized_latency_ms=statistics.median(quant_times))
    measure = _TASK_MEASURES.get(task.kind, _raw_measure)
    return measure(float_out, quant_out, samples, task, labels, input_size, common)


def _run_all(run: Runner, samples: Samples) -> tuple[list[list[np.ndarray]], list[float]]:
    outputs, times = [], []
    run(samples.tensors[0])  # warm-up
    for tensor in samples.tensors:
        start = time.perf_counter()
        outputs.append(run(tensor))
        times.append((time.perf_counter() - start) * 1e3)
    return outputs, times


def _agreement(name: str, floats: list[np.ndarray], quants: list[np.ndarray]) -> OutputAgreement:
    a = np.concatenate([f.ravel() for f in floats]).astype(np.float64)
    b = np.concatenate([q.ravel() for q in quants]).astype(np.float64)
    denom = np.linalg.norm(a) * np.linalg.norm(b)
    cosine = float(a @ b / denom) if denom > 0 else float(np.array_equal(a, b))
    diff = np.abs(a - b)
    return OutputAgreement(name, cosine, float(diff.max()), float(diff.mean()))


def _truth(samples: Samples, labels: Sequence[str]) -> np.ndarray | None:
    """The samples' true classes as model output indices, or ``None`` when they cannot be known.

    Class folders are matched to the model's labels by name (folder ``cat`` is the class labelled ``cat``,
    wherever it sits in the label list). Without labels, the sorted folder names are taken as the classes in
    order, which holds for folders named ``0`` .. ``9`` and for label lists that are themselves sorted.
    """
    if samples.labels is None:
        return None
    names = samples.label_names
    if labels and names:
        if not set(names) <= set(labels):
            log.warning("calibration class folders %s are not all among the model's labels; measuring float vs "
                        "quantized agreement instead of accuracy", sorted(set(names) - set(labels))[:5])
            return None
        position = {label: i for i, label in enumerate(labels)}
        return np.asarray([position[names[i]] for i in samples.labels])
    return np.asarray(samples.labels)


def _classification(float_out, quant_out, samples: Samples, task, labels, input_size, common) -> ValidationReport:
    f_top = np.array([int(np.argmax(o[0])) for o in float_out])
    q_top = np.array([int(np.argmax(o[0])) for o in quant_out])
    agreement = float((f_top == q_top).mean())
    truth = _truth(samples, labels)
    if truth is not None:
        f_acc, q_acc = float((f_top == truth).mean()), float((q_top == truth).mean())
        return ValidationReport(**common, accuracy_drop=100.0 * (f_acc - q_acc), measure="top-1 accuracy drop",
                                top1_agreement=agreement, float_accuracy=f_acc, quantized_accuracy=q_acc)
    return ValidationReport(**common, accuracy_drop=100.0 * (1.0 - agreement), measure="100 - top-1 agreement",
                            top1_agreement=agreement)


def _detection(float_out, quant_out, samples: Samples, task, labels, input_size, common) -> ValidationReport:
    from edge_sdk.vision.postprocess import make_decoder

    decoder = make_decoder(task, tuple(labels), input_size)
    matched, total, ious = 0, 0, []
    for f, q in zip(float_out, quant_out):
        f_dets = list(decoder([o[0] for o in f]))
        q_dets = list(decoder([o[0] for o in q]))
        total += len(f_dets)
        used: set[int] = set()
        for det in f_dets:
            best, best_iou = None, 0.5
            for j, other in enumerate(q_dets):
                if j in used or other.index != det.index:
                    continue
                iou = det.box.iou(other.box)
                if iou >= best_iou:
                    best, best_iou = j, iou
            if best is not None:
                used.add(best)
                matched += 1
                ious.append(best_iou)
    recall = matched / total if total else 1.0
    return ValidationReport(**common, accuracy_drop=100.0 * (1.0 - recall),
                            measure="100 - recall of the float model's detections (IoU >= 0.5)",
                            detection_recall=recall, detection_mean_iou=float(np.mean(ious)) if ious else None,
                            extra={"float_detections": total})


def _segmentation(float_out, quant_out, samples: Samples, task, labels, input_size, common) -> ValidationReport:
    from edge_sdk.vision.postprocess import make_decoder

    decoder = make_decoder(task, tuple(labels), input_size)
    agree = [float((decoder([o[0] for o in f]) == decoder([o[0] for o in q])).mean())
             for f, q in zip(float_out, quant_out)]
    pixel = float(np.mean(agree))
    return ValidationReport(**common, accuracy_drop=100.0 * (1.0 - pixel), measure="100 - pixel agreement",
                            pixel_agreement=pixel)


def _raw_measure(float_out, quant_out, samples: Samples, task, labels, input_size, common) -> ValidationReport:
    worst = min(o.cosine for o in common["outputs"])
    return ValidationReport(**common, accuracy_drop=100.0 * (1.0 - worst), measure="100 * (1 - worst output cosine)")


_TASK_MEASURES = {"classification": _classification, "detection": _detection, "segmentation": _segmentation}
