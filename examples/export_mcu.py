"""Export a model for a microcontroller: int8 bundle -> C/C++ sources, a measured tensor arena, a fit table.

Trains the small digits CNN, packages it full-integer int8 (int8 input and output, as TFLite Micro wants) for
an ESP32-S3, and exports it with ``firmware_tools.export``: the model as an aligned C array, a
``MicroMutableOpResolver`` registering exactly the model's ops, a config header with the tensor arena size,
an example ``main.cc`` and a PlatformIO project for the board.

The arena is measured, not guessed: TFLite Micro's own interpreter bisects the smallest arena the model loads
and runs in (each probe in a child process), and the board's margin (alignment, optimized-kernel scratch) is
added. The example prints it next to the common "10x the model size" rule, the fit of model and arena in the
board's flash and RAM, and the TFLite Micro vs LiteRT agreement on real digits.

Needs: pip install 'edge-deploy-sdk[host,litert,tflm]' (TensorFlow, LiteRT, tflite-micro)

    python examples/export_mcu.py [--profile esp32-s3|stm32h747-disco|arduino-nano-33-ble] [--workdir DIR]
"""

from __future__ import annotations

import _common
from _common import heading, human_bytes, table


def main(args) -> int:
    from converters import package
    from converters.samples import DIGIT_LABELS, load_digits_split, train_digits_cnn
    from firmware_tools.export import export

    work = args.workdir
    key, trusted = _common.development_keys(work)

    heading(f"training the digits CNN ({args.epochs} epochs) and packaging it int8 for {args.profile}")
    split = load_digits_split()
    model = train_digits_cnn(split, epochs=args.epochs)
    calibration = list(zip(split.test_images[:200], split.test_labels[:200]))
    result = package(model, args.profile, calibration, output=work / "bundles", signing_key=key, name="digits",
                     labels=DIGIT_LABELS)
    spec = result.manifest.inputs[0]
    validation = result.report["gate"]["validation"]
    print(f"   {result.path} ({human_bytes(result.path.stat().st_size)})")
    print(f"   input {spec.dtype} {list(spec.shape)} (scale {spec.scale:.4g}, zero point {spec.zero_point}); "
          f"int8 accuracy {validation['quantized_accuracy']:.1%} vs float {validation['float_accuracy']:.1%} "
          f"on {validation['samples']} held-out digits")

    heading(f"exporting for {args.profile}")
    firmware = work / "firmware" / args.profile
    exported = export(result.path, firmware, trusted=trusted, overwrite=True,
                      validation_images=split.test_images[200:300], progress=lambda text: print(f"   .. {text}"))
    arena = exported.arena
    ram = _ram(args.profile)
    table([("smallest arena that runs the model", f"{arena.measured_bytes:,} B"),
           ("+ alignment and kernel scratch", f"{arena.margin_bytes:,} B"),
           ("= kTensorArenaSize in model_config.h", f"{arena.recommended_bytes:,} B"),
           ("TFLite Micro's recording allocator says", f"{arena.recorded_bytes:,} B"),
           ("the 10x-model-size rule would say", f"{arena.naive_bytes:,} B ({arena.naive_ratio:.0f}x more)"),
           (f"{args.profile} internal RAM", f"{ram:,} B ({arena.recommended_bytes / ram:.1%} used by the arena)")],
          ("tensor arena", "bytes"))
    print(f"   measured in {arena.probes} interpreter runs")
    print(f"   ops: {', '.join(exported.ops)} -> {', '.join(exported.methods)}")
    print(f"   {exported.verification.summary()}")
    print("\n" + exported.fit.table())

    heading("generated files")
    table([(str(f.relative_to(firmware)), human_bytes(f.stat().st_size)) for f in exported.files], ("file", "size"))

    heading("done")
    print(f"   firmware project: {firmware} (open it with PlatformIO: pio run -d {firmware})")
    print(f"   the same from the shell:\n     edge-sdk firmware export {result.path} -o {firmware} "
          f"--trusted-dir {trusted} --overwrite")
    return 0 if exported.fit.compatible and exported.verification.ok else 1


def _ram(profile_id: str) -> int:
    from device_profiles import load_profile

    return load_profile(profile_id).memory.ram_bytes


if __name__ == "__main__":
    p = _common.parser("export_mcu", __doc__)
    p.add_argument("--profile", default="esp32-s3", choices=("esp32-s3", "stm32h747-disco", "arduino-nano-33-ble"),
                   help="microcontroller profile (default esp32-s3)")
    p.add_argument("--epochs", type=int, default=3, help="training epochs (default 3)")
    _common.run(main, p.parse_args())
