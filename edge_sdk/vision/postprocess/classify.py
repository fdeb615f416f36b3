"""Classification: one score vector in, the top classes out.

The pure counterpart of pycoral's ``adapters/classify.get_classes_from_scores``,
plus the activation step: a model that ends in logits gets a softmax (or a
sigmoid, for multi-label heads) before its scores are compared.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Mapping, Sequence

import numpy as np

from edge_sdk.errors import EdgeSDKError
from edge_sdk.vision.postprocess.common import label_for, read_params, select_output, sigmoid, softmax
from edge_sdk.vision.types import Classification

ACTIVATIONS = ("auto", "softmax", "sigmoid", "none")


def is_distribution(scores: np.ndarray, tolerance: float = 1e-3) -> bool:
    """Whether ``scores`` already is a probability distribution: all in [0, 1], summing to 1."""
    if scores.size == 0:
        return False
    if np.any(scores < 0.0) or np.any(scores > 1.0):
        return False
    return abs(float(np.sum(scores, dtype=np.float64)) - 1.0) <= tolerance


#: How far one probability of an 8-bit quantized softmax (scale 1/256) may be from the true value: half a step.
QUANTIZED_PROBABILITY_ERROR = 1.0 / 512


def activate(scores: np.ndarray, activation: str) -> np.ndarray:
    """Apply ``activation`` ("auto" softmaxes anything that is not already a distribution).

    An int8/uint8 softmax output, dequantized, sums to 1 only within half a
    quantization step per class; "auto" accepts that as a distribution too
    (a confident 0.996 must not be softmaxed again into 0.23).
    """
    tolerance = max(1e-3, scores.size * QUANTIZED_PROBABILITY_ERROR)
    if activation == "softmax" or (activation == "auto" and not is_distribution(scores, tolerance)):
        return softmax(scores)
    if activation == "sigmoid":
        return sigmoid(scores)
    return scores


def top_classes(
    scores: np.ndarray, labels: tuple[str, ...], top_k: int, score_threshold: float
) -> tuple[Classification, ...]:
    """The ``top_k`` classes with ``score >= score_threshold``, best first (ties: lower index first)."""
    order = np.argsort(-scores, kind="stable")[:top_k]
    order = order[scores[order] >= score_threshold]
    return tuple(
        Classification(index=int(i), label=label_for(labels, int(i)), score=float(scores[i])) for i in order
    )


@dataclass(frozen=True)
class ClassificationDecoder:
    """Scores of one output -> ``tuple[Classification, ...]`` sorted by score, best first.

    Parameters (``task.params``): ``top_k`` (5), ``score_threshold`` (0.0),
    ``activation`` ("auto" | "softmax" | "sigmoid" | "none"; "auto" applies a
    softmax unless the vector already is a probability distribution),
    ``output`` (0, which model output holds the scores).
    """

    task_kind: ClassVar[str] = "classification"

    labels: tuple[str, ...] = ()
    top_k: int = 5
    score_threshold: float = 0.0
    activation: str = "auto"
    output: int = 0

    @classmethod
    def from_params(
        cls, params: Mapping[str, Any], labels: Sequence[str] = (), input_size: tuple[int, int] = (0, 0)
    ) -> "ClassificationDecoder":
        f = read_params(params)
        decoder = cls(
            labels=tuple(labels),
            top_k=f.int("top_k", 5, minimum=1),
            score_threshold=f.float("score_threshold", 0.0),
            activation=f.choice("activation", ACTIVATIONS, "auto"),
            output=f.int("output", 0, minimum=0),
        )
        f.done()
        return decoder

    def __call__(self, outputs: Sequence[np.ndarray]) -> tuple[Classification, ...]:
        raw = select_output(outputs, self.output, "classification")
        if raw.ndim > 1 and sum(d != 1 for d in raw.shape) > 1:
            raise EdgeSDKError(
                f"classification decoder: output #{self.output} has shape {raw.shape}; "
                "expected one score vector such as (C,) or (1, C)"
            )
        scores = activate(raw.reshape(-1), self.activation)
        return top_classes(scores, self.labels, self.top_k, self.score_threshold)
