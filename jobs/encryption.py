"""Encryption at rest for the biometric files on the shared volume (uploaded photos, stage files).

AES-256-GCM (authenticated): each file is ``MAGIC | nonce (12 random bytes) | ciphertext+tag``, and
the associated data names what the file is (``<avatar id>/<view>``), so a file copied or renamed to
another job or view fails to open instead of being read as that job's photo. The key comes from the
environment (``UPLOAD_ENCRYPTION_KEY``, base64 of 32 bytes); it is never written to a log or a job
record. Workers decrypt into memory only.

Cost (2-core dev machine, medians, noisy): 0.5-2 ms per MB each way; 3 x 1.2 MB photos add 2-6 ms to
a POST, the 4.5 MB preprocess stage file ~3 ms to its save and ~3 ms to its load.
"""
from __future__ import annotations

import base64
import binascii
import os
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

MAGIC = b"AVE1"  # avatar encrypted, format 1
NONCE_BYTES = 12
KEY_BYTES = 32
KEY_FILE_NAME = "upload-encryption.key"


class EncryptionKeyError(ValueError):
    """The key is missing or malformed; the message says how to make one."""


class SealedFileError(ValueError):
    """A file could not be decrypted: not ours, altered, or sealed for another job/view or key."""


def generate_key() -> str:
    """A new random key in the form ``UPLOAD_ENCRYPTION_KEY`` takes."""
    return base64.b64encode(os.urandom(KEY_BYTES)).decode("ascii")


def decode_key(encoded: str) -> bytes:
    """The 32 key bytes from their base64 form, or ``EncryptionKeyError``."""
    if not encoded:
        raise EncryptionKeyError(
            "UPLOAD_ENCRYPTION_KEY is not set: uploads are encrypted at rest and need a key. Create one "
            "with: python -c \"import base64,os;print(base64.b64encode(os.urandom(32)).decode())\" "
            "and give the same value to the API and every worker.")
    try:
        key = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise EncryptionKeyError("UPLOAD_ENCRYPTION_KEY is not valid base64.") from None
    if len(key) != KEY_BYTES:
        raise EncryptionKeyError(f"UPLOAD_ENCRYPTION_KEY must decode to {KEY_BYTES} bytes, not {len(key)}.")
    return key


class FileCipher:
    """Seals and opens one file's bytes; ``context`` (the associated data) must match to open."""

    def __init__(self, key: bytes):
        self._aead = AESGCM(key)

    @classmethod
    def from_encoded(cls, encoded: str) -> "FileCipher":
        return cls(decode_key(encoded))

    def __repr__(self) -> str:  # never show the key
        return "FileCipher(AES-256-GCM)"

    def seal(self, data: bytes, context: str) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return MAGIC + nonce + self._aead.encrypt(nonce, data, context.encode())

    def open(self, sealed: bytes, context: str) -> bytes:
        if sealed[:len(MAGIC)] != MAGIC:
            raise SealedFileError(f"{context}: not an encrypted avatar file")
        start = len(MAGIC)
        nonce = sealed[start:start + NONCE_BYTES]
        try:
            return self._aead.decrypt(nonce, sealed[start + NONCE_BYTES:], context.encode())
        except InvalidTag:
            raise SealedFileError(f"{context}: decryption failed (altered, another file's, or another key)") \
                from None


def ensure_local_key(path: Path) -> str:
    """The key stored at ``path``, created (mode 0600, random) on first use; for ``avatar up``.

    A key file that others can read is tightened to 0600 rather than refused: it was ours to begin with.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        if path.stat().st_mode & 0o077:
            os.chmod(path, 0o600)
        encoded = path.read_text().strip()
        decode_key(encoded)  # fail here, naming the problem, rather than on the first upload
        return encoded
    encoded = generate_key()
    with os.fdopen(fd, "w") as fh:
        fh.write(encoded + "\n")
    return encoded
