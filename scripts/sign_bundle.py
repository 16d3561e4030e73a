"""Sign an engine bundle, or make a signing key pair.

    scripts/sign-bundle BUNDLE --key PRIVATE.pem       write BUNDLE/signature
    scripts/sign-bundle --new-key PRIVATE.pem PUBLIC.pem

The signature is Ed25519 over the bytes of BUNDLE/manifest.yaml, which lists the
sha256 of every other file; see engines/README.md. Boxes accept it when PUBLIC.pem
is listed in their configuration's engine.trusted_keys.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from edge.bundle.manifest import load_bundle
from edge.engines.signing import generate_key, load_public_key, sign_bundle, verify_bundle
from edge.errors import EngineError


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", type=Path, nargs="?", help="bundle folder to sign")
    parser.add_argument("--key", type=Path, help="Ed25519 private key (PEM, PKCS#8)")
    parser.add_argument("--check", type=Path, help="public key to verify the result with")
    parser.add_argument("--new-key", type=Path, nargs=2, metavar=("PRIVATE", "PUBLIC"))
    args = parser.parse_args()
    try:
        if args.new_key:
            private, public = args.new_key
            print(f"key {generate_key(private, public)}: {private} (keep secret), {public}")
            return 0
        if args.bundle is None or args.key is None:
            parser.error("BUNDLE and --key are needed to sign")
        bundle = load_bundle(args.bundle)  # never sign files that do not match the manifest
        key_id = sign_bundle(args.bundle, args.key)
        print(f"signed {bundle.manifest.name} {bundle.manifest.version} with key {key_id}")
        if args.check:
            verify_bundle(args.bundle, [load_public_key(args.check)])
            print(f"verified with {args.check}")
    except EngineError as exc:
        print(f"sign-bundle: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
