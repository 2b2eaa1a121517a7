"""channels.wechat.crypto against Tencent's published vectors (DESIGN.md), and every way a
ciphertext can be wrong ending in the one error type the route maps."""
from __future__ import annotations

import base64
import json

import pytest

from channels.wechat.crypto import (BadCiphertext, CryptoError, WeChatCipher, WrongAppId, seal, signature,
                                    signature_ok, timestamp_fresh)

TOKEN = "AAAAA"
AES_KEY = "A" * 43
APPID = "wxba5fad812f8e6fb9"
SAFE_TIMESTAMP, SAFE_NONCE = "1714112445", "415670741"
SAFE_ENCRYPT = (
    "+qdx1OKCy+5JPCBFWw70tm0fJGb2Jmeia4FCB7kao+/Q5c/ohsOzQHi8khUOb05JCpj0JB4RvQMkUyus8TPxLKJGQqcvZqzDpVz"
    "azhZv6JsXUnnR8XGT740XgXZUXQ7vJVnAG+tE8NUd4yFyjPy7GgiaviNrlCTj+l5kdfMuFUPpRSrfMZuMcp3Fn2Pede2IuQrKEY"
    "wKSqFIZoNqJ4M8EajAsjLY2km32IIjdf8YL/P50F7mStwntrA2cPDrM1kb6mOcfBgRtWygb3VIYnSeOBrebufAlr7F9mFUPAJGj04="
)
SAFE_MSG_SIGNATURE = "046e02f8204d34f8ba5fa3b1db94908f3df2e9b3"
REPLY_ENCRYPT = "ELGduP2YcVatjqIS+eZbp80MNLoAUWvzzyJxgGzxZO/5sAvd070Bs6qrLARC9nVHm48Y4hyRbtzve1L32tmxSQ=="
REPLY_SIGNATURE = "1b9339964ed2e271e7c7b6ff2b0ef902fc94dea1"


@pytest.fixture
def cipher() -> WeChatCipher:
    return WeChatCipher(AES_KEY, APPID)


def _flip(encrypt_b64: str, index: int) -> str:
    raw = bytearray(base64.b64decode(encrypt_b64))
    raw[index] ^= 0x01
    return base64.b64encode(bytes(raw)).decode()


# --- the official vectors -------------------------------------------------------------------------

def test_url_check_vector():
    assert signature(TOKEN, "1714036504", "1514711492") == "f464b24fc39322e44b38aa78f5edd27bd1441696"
    assert signature_ok("f464b24fc39322e44b38aa78f5edd27bd1441696", TOKEN, "1714036504", "1514711492")


def test_plaintext_push_vector():
    assert signature_ok("899cf89e464efb63f54ddac96b0a0a235f53aa78", TOKEN, "1714037059", "486452656")


def test_safe_mode_vector_signature_and_plaintext(cipher):
    assert signature(TOKEN, SAFE_TIMESTAMP, SAFE_NONCE, SAFE_ENCRYPT) == SAFE_MSG_SIGNATURE
    assert signature_ok(SAFE_MSG_SIGNATURE, TOKEN, SAFE_TIMESTAMP, SAFE_NONCE, SAFE_ENCRYPT)
    plain = cipher.decrypt(SAFE_ENCRYPT)
    assert len(plain) == 167
    assert plain.startswith(b'{"ToUserName":"gh_97417a04a28d",')
    assert plain.endswith(b'"Event":"debug_demo","debug_str":"hello world"}')
    assert json.loads(plain)["CreateTime"] == 1714112445


def test_encrypted_reply_vector(cipher):
    message = b'{"demo_resp":"good luck"}'
    assert cipher.encrypt(message, b"707722b803182950") == REPLY_ENCRYPT
    assert seal(TOKEN, cipher, message, "1713424427", "415670741", b"707722b803182950") == (
        REPLY_ENCRYPT, REPLY_SIGNATURE)
    assert cipher.decrypt(REPLY_ENCRYPT) == message


# --- signatures -----------------------------------------------------------------------------------

def test_signature_sorts_its_parts():
    assert signature("b", "a", "c") == signature("c", "b", "a")


@pytest.mark.parametrize("given", [None, "", "not-hex", "f464b24f", "z" * 40, "ｆ" * 40,
                                   "899cf89e464efb63f54ddac96b0a0a235f53aa78"])
def test_signature_ok_refuses_missing_malformed_and_wrong(given):
    assert not signature_ok(given, TOKEN, "1714036504", "1514711492")


def test_signature_ok_accepts_upper_case_hex_and_refuses_a_missing_part():
    assert signature_ok("F464B24FC39322E44B38AA78F5EDD27BD1441696", TOKEN, "1714036504", "1514711492")
    assert not signature_ok("f464b24fc39322e44b38aa78f5edd27bd1441696", TOKEN, None, "1514711492")


@pytest.mark.parametrize("timestamp,fresh", [("1000", True), ("700", True), ("1300", True), ("699", False),
                                             ("1301", False), ("", False), (None, False), ("12a", False),
                                             ("-5", False), ("１０００", False)])
def test_timestamp_fresh(timestamp, fresh):
    assert timestamp_fresh(timestamp, 300, now=1000.0) is fresh


def test_timestamp_check_off_with_zero():
    assert timestamp_fresh("1", 0, now=1e9)


# --- the cipher -----------------------------------------------------------------------------------

def test_round_trip_with_random_prefix(cipher):
    message = "你好，世界".encode() * 50
    first, second = cipher.encrypt(message), cipher.encrypt(message)
    assert first != second
    assert cipher.decrypt(first) == cipher.decrypt(second) == message


def test_empty_message_round_trips(cipher):
    assert cipher.decrypt(cipher.encrypt(b"")) == b""


@pytest.mark.parametrize("key", ["A" * 42, "A" * 44, "", "!" * 43, "A" * 40 + "==="])
def test_a_key_that_is_not_32_bytes_is_refused(key):
    with pytest.raises(ValueError):
        WeChatCipher(key, APPID)


def test_random_prefix_must_be_16_bytes(cipher):
    with pytest.raises(ValueError):
        cipher.encrypt(b"x", b"short")


def test_wrong_appid(cipher):
    with pytest.raises(WrongAppId):
        WeChatCipher(AES_KEY, "wx0000000000000000").decrypt(SAFE_ENCRYPT)


def test_wrong_key_is_a_crypto_error():
    other = WeChatCipher("B" * 43, APPID)
    with pytest.raises(BadCiphertext):
        other.decrypt(SAFE_ENCRYPT)


@pytest.mark.parametrize("encrypt", [
    "", "   ", "not base64!", "QUFB", "é" * 44,
    base64.b64encode(b"\x00" * 16).decode(),           # one AES block, not a 32-byte padded one
    base64.b64encode(b"\x00" * 48).decode(),
    SAFE_ENCRYPT[:-4],                                 # cut short
    SAFE_ENCRYPT + "AAAA",
])
def test_malformed_ciphertext(cipher, encrypt):
    with pytest.raises(BadCiphertext):
        cipher.decrypt(encrypt)


@pytest.mark.parametrize("index", [0, 5, 31, 100, -33, -1])
def test_tampered_ciphertext_raises_only_crypto_errors(cipher, index):
    # A flipped bit lands in the random prefix (no error: the signature check catches that),
    # the length, the message, the appid or the padding; it must never be another exception.
    try:
        cipher.decrypt(_flip(SAFE_ENCRYPT, index))
    except CryptoError:
        pass


def test_tampered_last_block_is_bad_padding(cipher):
    with pytest.raises(BadCiphertext):
        cipher.decrypt(_flip(SAFE_ENCRYPT, -17))         # flips the padding byte of the last block


def _framed(framed: bytes) -> str:
    """A ciphertext of any plaintext, padded properly: to reach the checks after the padding."""
    from cryptography.hazmat.primitives import padding
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    key = base64.b64decode(AES_KEY + "=")
    padder = padding.PKCS7(256).padder()
    enc = Cipher(algorithms.AES(key), modes.CBC(key[:16])).encryptor()
    return base64.b64encode(enc.update(padder.update(framed) + padder.finalize()) + enc.finalize()).decode()


@pytest.mark.parametrize("framed", [
    b"short",                                                   # no room for the header
    b"r" * 16 + (10_000).to_bytes(4, "big") + b"hi" + APPID.encode(),   # length past the end
    b"r" * 16 + (0xFFFFFFFF).to_bytes(4, "big"),
])
def test_length_field_out_of_range(cipher, framed):
    with pytest.raises(BadCiphertext):
        cipher.decrypt(_framed(framed))


def test_appid_after_the_message_must_match_exactly(cipher):
    longer = b"r" * 16 + (2).to_bytes(4, "big") + b"hi" + APPID.encode() + b"x"
    with pytest.raises(WrongAppId):
        cipher.decrypt(_framed(longer))


def test_errors_never_echo_the_ciphertext(cipher):
    with pytest.raises(CryptoError) as caught:
        cipher.decrypt(SAFE_ENCRYPT[:-4])
    assert SAFE_ENCRYPT[:20] not in str(caught.value)
