"""``edge-sdk firmware export|arena|sign|verify``: the microcontroller path (needs the firmware extra).

``export`` turns an int8 bundle into C/C++ sources, an example and a PlatformIO
project with a measured tensor arena; ``arena`` only measures; ``sign`` and
``verify`` make and check MCUboot images with imgtool. ``firmware_tools`` is
imported inside each action, so ``edge-sdk --help`` stays fast.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from edge_sdk.cli._args import add_json, add_trusted_dir, command_group, positive_int
from edge_sdk.cli._output import emit_json, human_bytes, step, table


def _number(text: str) -> int:
    """Decimal or 0x-prefixed hexadecimal, as imgtool takes sizes."""
    try:
        value = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number such as 512 or 0x200, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {value}")
    return value


def _bundle_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bundle", type=Path, help=".edgepkg file (an int8 TFLite bundle)")
    parser.add_argument("--profile", default=None, help="microcontroller profile (default: the bundle's)")
    parser.add_argument("--allow-unsigned", action="store_true", help="accept an unsigned bundle (development only)")
    add_trusted_dir(parser)
    add_json(parser)


def register(subparsers: argparse._SubParsersAction) -> None:
    sub = command_group(
        subparsers,
        "firmware",
        help="export a bundle for a microcontroller (C sources, measured arena) and sign MCUboot images",
        description="The microcontroller path for TFLite Micro profiles (esp32-s3, stm32h747-disco, "
        "arduino-nano-33-ble). Needs pip install 'edge-deploy-sdk[firmware]'.",
    )

    p = sub.add_parser(
        "export",
        help="write C/C++ sources, an example and a PlatformIO project for a bundle",
        description="Verifies the bundle, lists the model's ops, measures the smallest tensor arena in TFLite Micro "
        "(bisection over real interpreter runs), checks the fit against the profile's flash and RAM (refusing a model "
        "that cannot fit unless --force), compares TFLite Micro with LiteRT, and writes src/model_data.h/.cc, "
        "src/model_ops.h, src/model_config.h, src/main.cc (and a sketch on Arduino boards), platformio.ini, "
        "README.md and firmware.json into DIR.",
    )
    _bundle_options(p)
    p.add_argument("-o", "--output", type=Path, required=True, metavar="DIR", help="directory to write into")
    p.add_argument("--force", action="store_true",
                   help="export even when the model does not fit or disagrees with LiteRT")
    p.add_argument("--overwrite", action="store_true", help="replace files of an earlier export in DIR")
    p.add_argument("--samples", type=Path, default=None, metavar="NPY",
                   help="validation images (.npy, N x H x W [x C] uint8) for the TFLite Micro vs LiteRT check")
    p.set_defaults(func=_export)

    p = sub.add_parser(
        "arena",
        help="measure the smallest tensor arena a bundle's model runs in",
        description="Bisects the smallest arena in which TFLite Micro loads and invokes the model (each probe in "
        "a child process), adds the board margin, and compares it with the 10x-model-size rule and the profile's RAM.",
    )
    _bundle_options(p)
    p.add_argument("--granularity", type=positive_int, default=16, help="bisection step in bytes (default 16)")
    p.set_defaults(func=_arena)

    p = sub.add_parser(
        "sign",
        help="wrap a firmware or model image as a signed MCUboot image (imgtool)",
        description="Runs imgtool sign: MCUboot header (inserted with --pad-header unless --no-pad-header), version, "
        "security counter for downgrade protection, hash and signature. Ed25519 keys from 'edge-sdk keys generate' "
        "and imgtool's own keys both work.",
    )
    p.add_argument("image", type=Path, help="firmware or model binary")
    p.add_argument("--key", type=Path, required=True, help="signing key (PEM)")
    p.add_argument("--version", required=True, help="MCUboot version: major.minor.revision[+build]")
    p.add_argument("--security-counter", type=_number, default=None, help="downgrade-protection counter")
    p.add_argument("-o", "--output", type=Path, required=True, help="signed image to write")
    p.add_argument("--profile", default=None, help="board profile: its flash alignment and size as defaults")
    p.add_argument("--header-size", type=_number, default=0x200, help="MCUboot header size (default 0x200)")
    p.add_argument("--no-pad-header", action="store_true",
                   help="the image was linked with room for the header already")
    p.add_argument("--align", type=int, choices=(1, 2, 4, 8, 16, 32), default=None,
                   help="flash write alignment (default: the profile's board, else 4)")
    p.add_argument("--slot-size", type=_number, default=None,
                   help="MCUboot slot size (default: the profile's flash size)")
    add_json(p)
    p.set_defaults(func=_sign)

    p = sub.add_parser("verify", help="check an MCUboot image's hash and signature (imgtool)",
                       description="Runs imgtool verify and prints the image's version and security counter; "
                       "exits 1 for a tampered image or another key.")
    p.add_argument("image", type=Path, help="signed MCUboot image")
    p.add_argument("--key", type=Path, required=True, help="signing key or its public key (PEM)")
    add_json(p)
    p.set_defaults(func=_verify)


def _profile(name: str | None):
    if name is None:
        return None
    from device_profiles import load_profile

    return load_profile(name)


def _samples(path: Path | None):
    if path is None:
        return None
    import numpy as np

    from edge_sdk.errors import EdgeSDKError

    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise EdgeSDKError(f"{path}: cannot read validation images: {exc}") from exc


def _export(args: argparse.Namespace) -> int:
    from firmware_tools.export import export

    result = export(args.bundle, args.output, profile=args.profile, trusted=args.trusted_dir,
                    allow_unsigned=args.allow_unsigned, force=args.force, overwrite=args.overwrite,
                    validation_images=_samples(args.samples), progress=step)
    if args.json:
        emit_json(result.to_dict())
        return 0
    arena = result.arena
    print(f"exported {args.bundle} for {result.profile} into {result.directory}")
    print(f"ops:      {', '.join(result.ops)} ({len(result.ops)} registered in model_ops.h)")
    print(f"arena:    {arena.recommended_bytes} bytes (measured {arena.measured_bytes} + margin {arena.margin_bytes}); "
          f"the 10x rule says {arena.naive_bytes} ({arena.naive_ratio:.1f}x more)")
    print(f"check:    {result.verification.summary()}")
    print(result.fit.table())
    print()
    table([(str(f.relative_to(result.directory)), human_bytes(f.stat().st_size)) for f in result.files],
          ("file", "size"))
    return 0


def _arena(args: argparse.Namespace) -> int:
    from device_profiles import load_profile
    from edge_sdk.bundle.reader import open_bundle
    from firmware_tools.arena import measure_arena
    from firmware_tools.fit import fit_report

    bundle = open_bundle(args.bundle, trusted=args.trusted_dir, allow_unsigned=args.allow_unsigned, retain=("model",))
    profile = load_profile(args.profile or bundle.manifest.profile)
    model = bundle.read(bundle.manifest.model)
    arena = measure_arena(model, profile, granularity=args.granularity, source=str(args.bundle),
                          progress=None if args.json else step)
    fit = fit_report(model, profile, arena)
    ram = profile.memory.ram_bytes
    if args.json:
        emit_json({"bundle": str(args.bundle), "profile": profile.id, "arena": arena.to_dict(), "ram_bytes": ram,
                   "arena_fraction_of_ram": round(arena.recommended_bytes / ram, 4),
                   "fits": [f.to_dict() for f in fit.fits], "compatible": fit.compatible})
        return 0 if fit.compatible else 1
    rows = [("measured (smallest working arena)", arena.measured_bytes),
            ("+ alignment", arena.alignment_bytes),
            (f"+ scratch ({arena.kernels or 'reference'} kernels)", arena.scratch_bytes),
            ("= recommended kTensorArenaSize", arena.recommended_bytes),
            ("TFLite Micro's recording allocator", arena.recorded_bytes),
            ("10x-model-size rule", arena.naive_bytes),
            (f"{profile.id} internal RAM", ram)]
    table([(what, f"{n:,} B") for what, n in rows], ("arena", "bytes"))
    print(f"\n{arena.probes} interpreter runs; the 10x rule is {arena.naive_ratio:.1f}x the recommended arena, "
          f"which takes {arena.recommended_bytes / ram:.1%} of {profile.id}'s RAM")
    print(fit.table())
    return 0 if fit.compatible else 1


def _sign(args: argparse.Namespace) -> int:
    from firmware_tools.mcuboot import sign_image

    info = sign_image(args.image, args.key, args.output, version=args.version,
                      security_counter=args.security_counter, header_size=args.header_size,
                      pad_header=not args.no_pad_header, align=args.align, slot_size=args.slot_size,
                      profile=_profile(args.profile))
    if args.json:
        emit_json(info.to_dict())
        return 0
    counter = "none" if info.security_counter is None else info.security_counter
    print(f"signed {args.image} -> {info.path}: version {info.version}, security counter {counter}, "
          f"{human_bytes(info.total_size)}")
    return 0


def _verify(args: argparse.Namespace) -> int:
    from firmware_tools.mcuboot import verify_image

    info = verify_image(args.image, args.key)
    if args.json:
        emit_json({"verified": True, **info.to_dict()})
        return 0
    counter = "none" if info.security_counter is None else info.security_counter
    print(f"verified {info.path}: version {info.version}, security counter {counter}")
    return 0
