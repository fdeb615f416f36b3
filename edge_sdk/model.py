"""``edge_sdk.load(bundle)`` and the :class:`Model` it returns.

A model is a verified bundle, the engine its device profile names, the
bundle's preprocessing and its decoder. ``predict`` takes a BGR frame (what
OpenCV gives you) and returns typed, immutable results in the frame's own
pixel coordinates; ``infer`` gives the raw engine outputs.
"""

from __future__ import annotations

import io
import logging
import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Mapping, Sequence

import numpy as np

from edge_sdk.bundle.manifest import Manifest
from edge_sdk.bundle.reader import VerifiedBundle, check_profile, open_bundle
from edge_sdk.errors import EdgeSDKError, EngineError
from edge_sdk.runtime import Engine, EngineConfig, TensorInfo, create_engine
from edge_sdk.vision.preprocess import PreprocessConfig, preprocess, preprocess_batch
from edge_sdk.vision.types import FrameTransform, Prediction

if TYPE_CHECKING:
    from device_profiles import DeviceProfile

log = logging.getLogger(__name__)

ENV_PROFILE = "EDGE_SDK_PROFILE"
_RETAIN = ("model", "labels")  # read once, in the verifying pass


@dataclass(frozen=True)
class StageTimes:
    """Milliseconds spent in each stage of the last ``predict`` call."""

    preprocess_ms: float = 0.0
    inference_ms: float = 0.0
    postprocess_ms: float = 0.0

    @property
    def total_ms(self) -> float:
        return self.preprocess_ms + self.inference_ms + self.postprocess_ms


def resolve_profile(profile: "DeviceProfile | str | os.PathLike | None", bundle_profile: str) -> "DeviceProfile":
    """The device's profile: the argument, else ``$EDGE_SDK_PROFILE``, else the one the bundle names."""
    from device_profiles import DeviceProfile, load_profile

    if isinstance(profile, DeviceProfile):
        return profile
    name = profile or os.environ.get(ENV_PROFILE)
    if name is None:
        log.info("no device profile given (argument or %s); using the bundle's own %r", ENV_PROFILE, bundle_profile)
        name = bundle_profile
    return load_profile(name)


class Model:
    """A loaded bundle ready to run. Use :func:`load` to make one; close it (or use ``with``) when done."""

    def __init__(self, bundle: VerifiedBundle, engine: Engine, profile: "DeviceProfile") -> None:
        self.bundle = bundle
        self.manifest: Manifest = bundle.manifest
        self.engine = engine
        self.profile = profile
        self.labels = self._labels()
        self.last_times = StageTimes()
        self._output_order = self._match_outputs()
        self._output_infos = [self.engine.outputs[i] for i in self._output_order]
        self._preprocess: PreprocessConfig | None = None
        self._decoder = None
        if self.manifest.task.kind != "raw" and len(self.manifest.inputs) == 1:
            from edge_sdk.vision.postprocess import make_decoder

            self._preprocess = PreprocessConfig.from_input_spec(self.manifest.inputs[0])
            self._decoder = make_decoder(self.manifest.task, self.labels, self._preprocess.input_size)

    # -- construction --------------------------------------------------------

    @classmethod
    def from_bundle(
        cls,
        bundle: VerifiedBundle,
        profile: "DeviceProfile",
        *,
        allow_cpu_fallback: bool | None = None,
        num_threads: int | None = None,
    ) -> "Model":
        manifest = bundle.manifest
        arena = manifest.compatibility.get("arena_bytes")
        config = EngineConfig.from_profile(
            profile,
            allow_cpu_fallback=allow_cpu_fallback,
            num_threads=num_threads,
            arena_bytes=arena if isinstance(arena, int) and arena > 0 else None,
        )
        engine = create_engine(manifest.engine, bundle.read(manifest.model), config)
        try:
            return cls(bundle, engine, profile)
        except BaseException:
            engine.close()
            raise

    def _labels(self) -> tuple[str, ...]:
        name = self.manifest.task.labels
        if name is None:
            return ()
        text = self.bundle.read(name).decode("utf-8", errors="replace")
        return tuple(line.strip() for line in text.splitlines() if line.strip())

    def _match_outputs(self) -> list[int]:
        """Engine output index for each manifest output (by name, else by position)."""
        engine_names = [o.name for o in self.engine.outputs]
        wanted = [o.name for o in self.manifest.outputs] or engine_names
        if all(name in engine_names for name in wanted):
            return [engine_names.index(name) for name in wanted]
        if len(wanted) != len(engine_names):
            raise EngineError(
                self.engine.name,
                f"the manifest lists {len(wanted)} outputs {wanted!r} but the model has {len(engine_names)} {engine_names!r}",
            )
        return list(range(len(engine_names)))

    # -- properties ----------------------------------------------------------

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def version(self) -> str:
        return self.manifest.version

    @property
    def inputs(self) -> tuple[TensorInfo, ...]:
        return self.engine.inputs

    @property
    def outputs(self) -> tuple[TensorInfo, ...]:
        return self.engine.outputs

    @property
    def provider(self) -> str:
        return self.engine.provider

    @property
    def batch_size(self) -> int | None:
        """The fixed batch size of the image input, or ``None`` when it is dynamic."""
        first = self.engine.inputs[0].shape
        return None if not first or first[0] == -1 else first[0]

    # -- running -------------------------------------------------------------

    def infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Raw engine outputs by name for raw inputs by name (no pre/post-processing)."""
        outputs = self.engine.run(feeds)
        return {info.name: value for info, value in zip(self.engine.outputs, outputs)}

    def prepare(self, frame: np.ndarray) -> tuple[np.ndarray, FrameTransform]:
        """Preprocess one BGR frame into a (1, ...) input tensor (what the pipeline runs off-thread)."""
        return preprocess(frame, self._require_vision())

    def prepare_batch(self, frames: Sequence[np.ndarray]) -> tuple[np.ndarray, list[FrameTransform]]:
        return preprocess_batch(list(frames), self._require_vision())

    def run_prepared(self, tensor: np.ndarray) -> list[np.ndarray]:
        """Run the engine on a prepared input tensor; dequantized float outputs in manifest order."""
        outputs = self.engine.run({self.engine.inputs[0].name: tensor})
        return [info.dequantize(outputs[i]) for i, info in zip(self._output_order, self._output_infos)]

    def decode(self, outputs: Sequence[np.ndarray], transforms: Sequence[FrameTransform]) -> list[Prediction]:
        """Decode a batch of dequantized outputs into one :class:`Prediction` per frame."""
        batch = len(transforms)
        predictions = []
        for i, transform in enumerate(transforms):
            sample = [o[i] if o.ndim and o.shape[0] == batch else o for o in outputs]
            predictions.append(self._decode_one(sample, transform, outputs))
        return predictions

    def predict(self, frame: np.ndarray) -> Prediction:
        """Run one BGR frame end to end; results are in the frame's pixel coordinates."""
        t0 = time.perf_counter()
        tensor, transform = self.prepare(frame)
        t1 = time.perf_counter()
        outputs = self.run_prepared(tensor)
        t2 = time.perf_counter()
        (prediction,) = self.decode(outputs, [transform])
        t3 = time.perf_counter()
        self.last_times = StageTimes((t1 - t0) * 1e3, (t2 - t1) * 1e3, (t3 - t2) * 1e3)
        return prediction

    def predict_batch(self, frames: Sequence[np.ndarray]) -> list[Prediction]:
        """Several frames in one engine call (the model's batch dimension must allow it)."""
        tensor, transforms = self.prepare_batch(frames)
        return self.decode(self.run_prepared(tensor), transforms)

    def warmup(self, runs: int = 3) -> None:
        """Run zeros through the engine so the first real frame does not pay for lazy initialisation."""
        feeds = {
            t.name: np.zeros([d if d > 0 else 1 for d in t.shape], dtype=t.dtype) for t in self.engine.inputs
        }
        for _ in range(runs):
            self.engine.run(feeds)

    def golden_check(self) -> float:
        """Run the bundle's golden input; return the worst error relative to its tolerance (<= 1 passes).

        Raises :class:`EdgeSDKError` when the bundle has no golden pair.
        """
        golden = self.manifest.golden
        if golden is None:
            raise EdgeSDKError(f"{self.bundle.path}: bundle has no golden input to check")
        feeds = {name: np.load(io.BytesIO(self.bundle.read(path)), allow_pickle=False)
                 for name, path in golden.inputs.items()}
        got = self.infer(feeds)
        worst = 0.0
        for name, path in golden.outputs.items():
            expected = np.load(io.BytesIO(self.bundle.read(path)), allow_pickle=False)
            if name not in got or got[name].shape != expected.shape:
                return float("inf")
            error = np.abs(got[name].astype(np.float64) - expected.astype(np.float64))
            allowed = golden.atol + golden.rtol * np.abs(expected.astype(np.float64))
            worst = max(worst, float(np.max(error / np.maximum(allowed, 1e-12))))
        return worst

    # -- internals -----------------------------------------------------------

    def _require_vision(self) -> PreprocessConfig:
        if self._preprocess is None:
            raise EdgeSDKError(
                f"{self.bundle.path}: this bundle's task is {self.manifest.task.kind!r} with "
                f"{len(self.manifest.inputs)} input(s); use model.infer() for raw tensors"
            )
        return self._preprocess

    def _decode_one(self, sample: list[np.ndarray], transform: FrameTransform, batch_outputs) -> Prediction:
        kind = self.manifest.task.kind
        result = self._decoder(sample)
        outputs = {o.name: v for o, v in zip(self.manifest.outputs, sample)} if self.manifest.outputs else {}
        if kind == "classification":
            return Prediction(kind, classes=tuple(result), outputs=outputs)
        if kind == "detection":
            return Prediction(kind, detections=tuple(_to_frame(d, transform) for d in result), outputs=outputs)
        if kind == "segmentation":
            from edge_sdk.vision.postprocess.segment import mask_to_frame
            from edge_sdk.vision.types import SegmentationMask

            return Prediction(kind, segmentation=SegmentationMask(mask_to_frame(result, transform), self.labels),
                              outputs=outputs)
        return Prediction(kind, outputs=outputs)

    def close(self) -> None:
        self.engine.close()

    def __enter__(self) -> "Model":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"<Model {self.name} {self.version} for {self.manifest.profile} on "
                f"{self.engine.name}/{self.provider}>")


def _to_frame(detection, transform: FrameTransform):
    from dataclasses import replace

    keypoints = tuple(transform.to_original_point(x, y) for x, y in detection.keypoints)
    return replace(detection, box=transform.to_original_box(detection.box), keypoints=keypoints)


def load(
    source: "str | os.PathLike | VerifiedBundle",
    *,
    profile: "DeviceProfile | str | os.PathLike | None" = None,
    trusted=None,
    allow_unsigned: bool = False,
    allow_cpu_fallback: bool | None = None,
    num_threads: int | None = None,
) -> Model:
    """Verify a bundle, check it was built for this device, and load it into its engine.

    ``profile`` is the device's profile (object, id or TOML path); without it
    ``$EDGE_SDK_PROFILE`` is used, and failing that the profile the bundle
    names. ``trusted`` is a :class:`~edge_sdk.bundle.TrustStore` or a directory
    of trusted public keys (default: the trusted-keys directory). Nothing is
    loaded unless verification passed.
    """
    if isinstance(source, VerifiedBundle):
        bundle = source
    elif profile is None and not os.environ.get(ENV_PROFILE):
        bundle = open_bundle(source, trusted=trusted, allow_unsigned=allow_unsigned, retain=_RETAIN)
    else:
        device = resolve_profile(profile, "")
        bundle = open_bundle(source, trusted=trusted, allow_unsigned=allow_unsigned, profile=device, retain=_RETAIN)
        return Model.from_bundle(bundle, device, allow_cpu_fallback=allow_cpu_fallback, num_threads=num_threads)
    device = resolve_profile(profile, bundle.manifest.profile)
    check_profile(bundle.manifest, device, str(bundle.path))
    return Model.from_bundle(bundle, device, allow_cpu_fallback=allow_cpu_fallback, num_threads=num_threads)
