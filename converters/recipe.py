"""Device profile -> quantization recipe: the one place that decides what a target gets.

onnxruntime's ``get_qnn_qdq_config`` turns a target into a config the same
way. The profile says which quantization it prefers and accepts, the I/O
dtypes its accelerator needs and, for ONNX int8, the activation/weight types:
on x86 CPUs U8S8 (uint8 activations, int8 weights) runs about 1.6x faster
than float on MobileNetV2 while S8S8 runs slower than float; TensorRT wants
symmetric S8S8.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from converters.base import ConversionError, QuantRecipe

if TYPE_CHECKING:
    from device_profiles import DeviceProfile


def recipe_for(profile: "DeviceProfile", mode: str | None = None) -> QuantRecipe:
    """The recipe for ``profile``; ``mode`` overrides the profile's preferred quantization if it is allowed."""
    runtime = profile.runtime
    chosen = mode or runtime.quantization
    if chosen not in runtime.allowed_quantization:
        raise ConversionError(
            profile.id,
            f"quantization {chosen!r} is not allowed for this profile; allowed: {', '.join(runtime.allowed_quantization)}",
        )
    integer = chosen == "int8"
    return QuantRecipe(
        mode=chosen,
        input_dtype=runtime.input_dtype if integer else "float32",
        output_dtype=runtime.output_dtype if integer else "float32",
        activation_type=runtime.activation_type or "int8",
        weight_type=runtime.weight_type or "int8",
        per_channel=True,
        symmetric_activations=runtime.symmetric_activations,
    )


def float_fallback_allowed(profile: "DeviceProfile") -> bool:
    """Whether layers may stay in float: not on integer-only accelerators or microcontrollers."""
    return "float32" in profile.runtime.allowed_quantization and not (
        profile.accelerator is not None and profile.accelerator.kind == "edgetpu"
    )
