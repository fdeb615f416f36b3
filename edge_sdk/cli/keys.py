"""``edge-sdk keys generate|trust|list``: signing keys and the device's trusted keys."""

from __future__ import annotations

import argparse
from pathlib import Path

from edge_sdk.bundle.signing import TrustStore, default_key_dir, default_trusted_dir, generate_keypair
from edge_sdk.cli._args import add_json, add_trusted_dir, command_group
from edge_sdk.cli._output import emit_json, table


def register(subparsers: argparse._SubParsersAction) -> None:
    sub = command_group(
        subparsers,
        "keys",
        help="generate signing keys and manage trusted public keys",
        description="Bundles are signed with Ed25519. The private key stays on the packaging host; "
        "devices trust the public keys in their trusted-keys directory.",
    )

    p = sub.add_parser("generate", help="write a new Ed25519 key pair (<name>.key mode 0600, <name>.pub)")
    p.add_argument("--dir", type=Path, default=None, help=f"where to write the key pair (default: {default_key_dir()})")
    p.add_argument("--name", default="signing", help="file name stem (default: signing)")
    p.add_argument("--force", action="store_true", help="replace an existing key pair (devices will stop trusting the old one)")
    p.add_argument("--trust", action="store_true", help="also add the public key to the trusted-keys directory")
    add_trusted_dir(p)
    add_json(p)
    p.set_defaults(func=_generate)

    p = sub.add_parser("trust", help="add a publisher's public key to the trusted-keys directory")
    p.add_argument("public_key", type=Path, help="PEM public key file (.pub)")
    add_trusted_dir(p)
    add_json(p)
    p.set_defaults(func=_trust)

    p = sub.add_parser("list", help="list the trusted public keys")
    add_trusted_dir(p)
    add_json(p)
    p.set_defaults(func=_list)


def _generate(args: argparse.Namespace) -> int:
    pair = generate_keypair(args.dir or default_key_dir(), name=args.name, overwrite=args.force)
    trusted_dir = None
    if args.trust:
        trusted_dir = args.trusted_dir or default_trusted_dir()
        TrustStore({}).add_file(pair.public_path, trusted_dir)
    if args.json:
        emit_json(
            {
                "key_id": pair.key_id,
                "private_key": str(pair.private_path),
                "public_key": str(pair.public_path),
                "trusted_dir": str(trusted_dir) if trusted_dir else None,
            }
        )
        return 0
    print(f"key id:      {pair.key_id}")
    print(f"private key: {pair.private_path}  (mode 0600; keep it secret, back it up)")
    print(f"public key:  {pair.public_path}  (copy it into each device's trusted-keys directory)")
    if trusted_dir:
        print(f"trusted in:  {trusted_dir}")
    return 0


def _trust(args: argparse.Namespace) -> int:
    trusted_dir = args.trusted_dir or default_trusted_dir()
    key_id = TrustStore({}).add_file(args.public_key, trusted_dir)
    if args.json:
        emit_json({"key_id": key_id, "trusted_dir": str(trusted_dir)})
    else:
        print(f"trusted key {key_id} in {trusted_dir}")
    return 0


def _list(args: argparse.Namespace) -> int:
    trusted_dir = args.trusted_dir or default_trusted_dir()
    store = TrustStore.from_dir(trusted_dir)
    if args.json:
        emit_json({"trusted_dir": str(trusted_dir), "key_ids": list(store.key_ids)})
    else:
        print(f"trusted keys in {trusted_dir}:")
        table([(k,) for k in store.key_ids], ("key id",))
    return 0
