"""Setup the examples share, kept out of the way so each example shows only its own concept.

Nothing here is part of edge-sdk's API: it makes a work directory, a development signing key the
"device" trusts, and folders of real digit images (scikit-learn's handwritten digits) where an
example needs files a user would already have. Copy it along with an example.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Callable, Sequence

from edge_sdk.cli._output import human_bytes, table  # noqa: F401  (re-exported for the examples)

# TensorFlow's C++ start-up chatter is not what the examples are about (set before TensorFlow loads).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def heading(text: str) -> None:
    """A step of the example, as a visible line on standard output."""
    print(f"\n== {text}", flush=True)


def parser(name: str, description: str) -> argparse.ArgumentParser:
    """An argument parser with ``--workdir`` (default ``./example-output/<name>``)."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", type=Path, default=Path("example-output") / name,
                   help=f"where keys, models, bundles and outputs go (default: example-output/{name})")
    return p


def run(main: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> None:
    """Run ``main(args)`` and exit with its code; an edge-sdk error becomes one line on stderr and exit 1."""
    from edge_sdk.errors import EdgeSDKError

    args.workdir = args.workdir.absolute()
    args.workdir.mkdir(parents=True, exist_ok=True)
    try:
        code = main(args)
    except EdgeSDKError as exc:
        print(f"{Path(sys.argv[0]).name}: error: {exc}", file=sys.stderr)
        code = 1
    sys.exit(code)


def development_keys(workdir: Path) -> tuple[Path, Path]:
    """(signing key file, trusted-keys directory): a key pair made once per work directory, then reused.

    The same as ``edge-sdk keys generate --dir WORKDIR/keys`` followed by
    ``edge-sdk keys trust WORKDIR/keys/signing.pub --trusted-dir WORKDIR/trusted-keys``.
    """
    from edge_sdk.bundle.signing import TrustStore, generate_keypair

    key_dir, trusted_dir = workdir / "keys", workdir / "trusted-keys"
    if not (key_dir / "signing.key").exists():
        generate_keypair(key_dir)
    TrustStore({}).add_file(key_dir / "signing.pub", trusted_dir)
    return key_dir / "signing.key", trusted_dir


def write_images(folder: Path, images: Sequence, labels: Sequence[int] | None = None, size: int | None = None) -> Path:
    """Images as PNG files in ``folder`` (in a subfolder per label when ``labels`` are given), optionally scaled
    up to ``size`` x ``size`` pixels (nearest neighbour, so the pixels stay the dataset's own)."""
    import cv2
    import numpy as np

    folder.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(images):
        image = np.squeeze(np.asarray(image, dtype=np.uint8))
        if size is not None:
            image = cv2.resize(image, (size, size), interpolation=cv2.INTER_NEAREST)
        target = folder / str(labels[i]) if labels is not None else folder
        target.mkdir(exist_ok=True)
        cv2.imwrite(str(target / f"{i:04d}.png"), image)
    return folder
