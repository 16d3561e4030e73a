"""Bundle signatures: Ed25519 over the bytes of ``manifest.yaml``.

The manifest lists the sha256 of every other file of the bundle, so one signature
over it covers the whole bundle. The ``signature`` file is one line of text::

    ed25519 <key id> <base64 signature>

The key id (the first 16 hex digits of the sha256 of the raw public key) is only a
hint that lets the refusal say *which* key signed a bundle that no trusted key
verifies; the check itself always runs against the trusted keys.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from edge.bundle.manifest import MANIFEST, SIGNATURE
from edge.errors import EngineError

ALGORITHM = "ed25519"
#: the id of engines/demo-signing.pub, whose private key ships with the source: anyone
#: can sign with it, so a box that scores patients never trusts it
DEMO_KEY_ID = "a2d167b48410186e"
#: where scripts/install.sh puts the demo key's public half, and where it is in a checkout
DEMO_PUBLIC_KEY = "/opt/edge/engines/demo-signing.pub"
#: where a vendor's public keys go on a box
KEYS_DIR = "/etc/edge/keys"
#: the service reads engine.trusted_keys when it starts
RESTART = "A running service trusts it after: systemctl restart edge"


class NotTrusted(EngineError):
    """A bundle that no trusted key vouches for: unsigned, or signed by a key not trusted.

    Distinct from a bad signature (a trusted key's signature that does not match):
    ``--allow-unsigned`` may install the first kind as unsigned, never the second.
    """


@dataclass(frozen=True)
class TrustedKey:
    path: Path
    key: Ed25519PublicKey

    @property
    def key_id(self) -> str:
        return key_id(self.key)


def key_id(public_key: Ed25519PublicKey) -> str:
    """The first 16 hex digits of the sha256 of the raw 32-byte public key."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def generate_key(private_path: Path, public_path: Path) -> str:
    """Write a new Ed25519 key pair (PKCS#8 and SubjectPublicKeyInfo PEM); return its id."""
    private = Ed25519PrivateKey.generate()
    private_pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    private_path.write_bytes(private_pem)
    private_path.chmod(0o600)
    public_path.write_bytes(public_pem)
    return key_id(private.public_key())


def load_private_key(path: Path) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise EngineError(f"{path}: cannot read the signing key: {exc}") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise EngineError(f"{path}: not an Ed25519 private key")
    return key


def load_public_key(path: Path) -> TrustedKey:
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise EngineError(f"{path}: cannot read the trusted key: {exc}") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise EngineError(f"{path}: not an Ed25519 public key")
    return TrustedKey(path, key)


def sign_bundle(folder: Path, private_key_path: Path) -> str:
    """Sign ``folder/manifest.yaml`` and write ``folder/signature``; return the key id."""
    private = load_private_key(private_key_path)
    manifest = (folder / MANIFEST).read_bytes()
    signature = base64.b64encode(private.sign(manifest)).decode("ascii")
    ident = key_id(private.public_key())
    (folder / SIGNATURE).write_text(f"{ALGORITHM} {ident} {signature}\n", encoding="ascii")
    return ident


def verify_bundle(folder: Path, trusted: list[TrustedKey]) -> TrustedKey:
    """Check ``folder/signature`` against ``trusted``; return the key that verifies it.

    Raises
    ------
    EngineError
        When the bundle is unsigned, the signature file is malformed, it was made by
        a key that is not trusted, or it does not match the manifest's bytes.
    """
    path = folder / SIGNATURE
    if not path.is_file():
        raise NotTrusted(
            f"{folder}: the bundle is not signed (no {SIGNATURE} file)",
            "ask the engine's vendor for the signed bundle",
        )
    signer, signature = _read_signature(path)
    manifest = (folder / MANIFEST).read_bytes()
    by_id = {key.key_id: key for key in trusted}
    if signer not in by_id:
        raise _untrusted(path, signer, trusted)
    key = by_id[signer]
    try:
        key.key.verify(signature, manifest)
    except InvalidSignature:
        raise EngineError(
            f"{path}: bad signature: it does not match {MANIFEST} under trusted key {signer} "
            f"({key.path.name}); the manifest or the signature was altered after signing"
        ) from None
    return key


def _untrusted(path: Path, signer: str, trusted: list[TrustedKey]) -> NotTrusted:
    """The refusal of a signer no configured key matches, saying how to trust one."""
    listed = ", ".join(f"{key.key_id} ({key.path})" for key in trusted) or "no key"
    if signer == DEMO_KEY_ID:
        return NotTrusted(
            f"{path}: signed with the demo key {signer}, which is not a trusted key "
            f"(engine.trusted_keys lists {listed})",
            "the demo key's private half is public, so it proves nothing: on a test box "
            "only, trust it with the line  trusted_keys: "
            f"[{DEMO_PUBLIC_KEY}]  under engine: in the configuration "
            "(engines/demo-signing.pub in a source folder); never on a box that scores patients. "
            + RESTART,
        )
    return NotTrusted(
        f"{path}: signed with key {signer}, which is not a trusted key "
        f"(engine.trusted_keys lists {listed})",
        f"copy the vendor's public key (the .pub file of key {signer}) into {KEYS_DIR}/ and "
        f"list it under engine: in the configuration:  trusted_keys: [{KEYS_DIR}/VENDOR.pub]  "
        f"(its file name; keep the keys already listed). {RESTART}",
    )


def signer_of(folder: Path) -> str | None:
    """The key id a bundle's signature file names, without checking it; None if unsigned."""
    path = folder / SIGNATURE
    return _read_signature(path)[0] if path.is_file() else None


def _read_signature(path: Path) -> tuple[str, bytes]:
    parts = path.read_text(encoding="ascii", errors="replace").split()
    if len(parts) != 3 or parts[0] != ALGORITHM:
        raise EngineError(f"{path}: malformed: expected '{ALGORITHM} <key id> <base64>'")
    try:
        signature = base64.b64decode(parts[2], validate=True)
    except binascii.Error:
        raise EngineError(f"{path}: malformed: the signature is not valid base64") from None
    if len(signature) != 64:
        raise EngineError(
            f"{path}: malformed: an Ed25519 signature has 64 bytes, not {len(signature)}"
        )
    return parts[1], signature
