"""Encryption at rest for what must be kept whole: the account documents of the built-in store.

Rules need an account's real values, so it cannot be masked; it is sealed instead (AES-256-GCM,
the row's key bound in as associated data, so a sealed document moved to another row does not
open). A copy of the database, a backup or a scan of its file shows no name, ID or phone number.

The key: HC_DATA_KEY (base64 of 32 bytes; give every instance the same one), else a key file
generated once under var/secrets/ (readable by the owner only), which every process on this
machine shares.
"""
from __future__ import annotations

import base64
import json
import os
import secrets
import threading
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from core.settings import Settings

SEALED_KEY = "sealed"     # a stored document {"sealed": 1, "n": nonce, "c": ciphertext}
KEY_FILE = Path("secrets") / "data.key"

_lock = threading.Lock()
_keys: dict[str, bytes] = {}


class SealError(ValueError):
    """A sealed value that does not open with this key (wrong key, altered, or another row's)."""


def _decode_key(text: str) -> bytes:
    key = base64.b64decode(text.strip(), validate=True)
    if len(key) != 32:
        raise ValueError("HC_DATA_KEY must be base64 of 32 bytes")
    return key


def data_key(settings: Settings) -> bytes:
    if settings.data_key:
        return _decode_key(settings.data_key)
    path = settings.var_dir / KEY_FILE
    with _lock:
        cached = _keys.get(str(path))
        if cached is not None:
            return cached
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            # O_EXCL: two processes starting at once agree on one key (the loser reads it).
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                pass
            else:
                with os.fdopen(fd, "w") as f:
                    f.write(base64.b64encode(secrets.token_bytes(32)).decode() + "\n")
        key = _decode_key(path.read_text())
        _keys[str(path)] = key
        return key


def seal(value: Any, key: bytes, *, bound_to: str) -> dict:
    nonce = secrets.token_bytes(12)
    plain = json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()
    cipher = AESGCM(key).encrypt(nonce, plain, bound_to.encode())
    return {SEALED_KEY: 1, "n": base64.b64encode(nonce).decode(), "c": base64.b64encode(cipher).decode()}


def is_sealed(stored: Any) -> bool:
    return isinstance(stored, dict) and stored.get(SEALED_KEY) == 1 and "c" in stored


def unseal(stored: dict, key: bytes, *, bound_to: str) -> Any:
    try:
        nonce, cipher = base64.b64decode(stored["n"]), base64.b64decode(stored["c"])
        plain = AESGCM(key).decrypt(nonce, cipher, bound_to.encode())
    except Exception as exc:  # InvalidTag, bad base64, missing fields: all "does not open"
        raise SealError("sealed value does not open with this key") from exc
    return json.loads(plain)
