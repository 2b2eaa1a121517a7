"""WeChat's push signatures and its AES "safe mode" (DESIGN.md "Channels, hand-off and delivery").

    signature(*parts) -> str                  sha1 hex of the sorted parts joined
    signature_ok(given, *parts) -> bool       constant time; False for a missing or malformed one
    timestamp_fresh(timestamp, max_age_s, now=None) -> bool
    WeChatCipher(encoding_aes_key, appid)     .decrypt(encrypt_b64) -> bytes, .encrypt(message) -> str
    seal(token, cipher, message, timestamp, nonce) -> (Encrypt, MsgSignature)   an encrypted reply

The URL check and plaintext pushes sign [token, timestamp, nonce]; safe and compatible mode sign
[token, timestamp, nonce, Encrypt] as `msg_signature`. Check the signature before decrypting:
it covers the ciphertext, so a forged body never reaches the cipher and the two decrypt errors
cannot become a padding oracle. The cipher takes its key and appid at construction, like
wechatpy's crypto split, so the caller holds one per configured account.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
import time

from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

_SHA1_HEX = re.compile(r"^[0-9a-fA-F]{40}$")
# WeChat pads to 32 bytes, not AES's 16: PKCS#7 with a 256-bit block.
_PAD_BITS = 256
_RANDOM_LEN, _LENGTH_LEN = 16, 4


class CryptoError(ValueError):
    """A push that cannot be opened; the message is short and never carries the ciphertext."""


class BadCiphertext(CryptoError):
    pass


class WrongAppId(CryptoError):
    pass


def signature(*parts: str) -> str:
    return hashlib.sha1("".join(sorted(parts)).encode("utf-8")).hexdigest()


def signature_ok(given: str | None, *parts: str) -> bool:
    if not given or not isinstance(given, str) or not _SHA1_HEX.match(given):
        return False
    if not all(isinstance(part, str) for part in parts):
        return False
    return hmac.compare_digest(given.lower(), signature(*parts))


def timestamp_fresh(timestamp: str | None, max_age_s: float, now: float | None = None) -> bool:
    """Whether the push's `timestamp` query value is within max_age_s of now, either way (a clock
    ahead of ours is as suspect as a replay); max_age_s <= 0 turns the check off."""
    if max_age_s <= 0:
        return True
    if not timestamp or not timestamp.isascii() or not timestamp.isdigit() or len(timestamp) > 12:
        return False
    return abs((time.time() if now is None else now) - int(timestamp)) <= max_age_s


class WeChatCipher:
    def __init__(self, encoding_aes_key: str, appid: str):
        try:
            key = base64.b64decode((encoding_aes_key or "") + "=", validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("EncodingAESKey is not base64") from None
        if len(key) != 32:
            raise ValueError("EncodingAESKey must decode to 32 bytes (43 characters)")
        if not appid:
            raise ValueError("appid is required")
        self._key = key
        self._appid = appid.encode("utf-8")

    def _cipher(self) -> Cipher:
        return Cipher(algorithms.AES(self._key), modes.CBC(self._key[:16]))

    def decrypt(self, encrypt_b64: str) -> bytes:
        plain = _unpad(self._decrypt_blocks(_b64_ciphertext(encrypt_b64)))
        message, appid = _unframe(plain)
        if not hmac.compare_digest(appid, self._appid):
            raise WrongAppId("the push is for another appid")
        return message

    def encrypt(self, message: bytes, random16: bytes | None = None) -> str:
        prefix = secrets.token_bytes(_RANDOM_LEN) if random16 is None else random16
        if len(prefix) != _RANDOM_LEN:
            raise ValueError("the random prefix must be 16 bytes")
        framed = prefix + len(message).to_bytes(_LENGTH_LEN, "big") + message + self._appid
        padder = padding.PKCS7(_PAD_BITS).padder()
        encryptor = self._cipher().encryptor()
        blocks = encryptor.update(padder.update(framed) + padder.finalize()) + encryptor.finalize()
        return base64.b64encode(blocks).decode("ascii")

    def _decrypt_blocks(self, blocks: bytes) -> bytes:
        decryptor = self._cipher().decryptor()
        return decryptor.update(blocks) + decryptor.finalize()


def _b64_ciphertext(encrypt_b64: str) -> bytes:
    if not encrypt_b64 or not isinstance(encrypt_b64, str) or not encrypt_b64.isascii():
        raise BadCiphertext("Encrypt is empty or not base64")
    try:
        blocks = base64.b64decode(encrypt_b64, validate=True)
    except (binascii.Error, ValueError):
        raise BadCiphertext("Encrypt is not base64") from None
    # Padded to 32 bytes, so anything else was cut or made up.
    if not blocks or len(blocks) % (_PAD_BITS // 8):
        raise BadCiphertext("Encrypt has a wrong length")
    return blocks


def _unpad(padded: bytes) -> bytes:
    unpadder = padding.PKCS7(_PAD_BITS).unpadder()
    try:
        return unpadder.update(padded) + unpadder.finalize()
    except ValueError:
        raise BadCiphertext("bad padding") from None


def _unframe(plain: bytes) -> tuple[bytes, bytes]:
    """16 random bytes, a 4-byte big-endian length, the message, the appid."""
    header = _RANDOM_LEN + _LENGTH_LEN
    if len(plain) < header:
        raise BadCiphertext("plaintext too short")
    length = int.from_bytes(plain[_RANDOM_LEN:header], "big")
    if length > len(plain) - header:
        raise BadCiphertext("length field out of range")
    return plain[header:header + length], plain[header + length:]


def seal(token: str, cipher: WeChatCipher, message: bytes, timestamp: str, nonce: str,
         random16: bytes | None = None) -> tuple[str, str]:
    """An encrypted passive reply: (Encrypt, MsgSignature) to send with TimeStamp and Nonce."""
    encrypted = cipher.encrypt(message, random16)
    return encrypted, signature(token, timestamp, nonce, encrypted)
