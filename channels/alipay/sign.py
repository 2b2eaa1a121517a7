"""Alipay's RSA2 signatures: keys, the signed text of calls and notifications, gateway responses.

    load_private_key(pem) / load_public_key(pem)     PEM or the console's bare base64 body
    sign_content(params, *, drop=("sign",)) -> str    sorted raw `k=v` joined with `&`
    rsa2_sign(content, private_key) -> str            SHA256withRSA, PKCS#1 v1.5, base64
    rsa2_verify(content, signature_b64, public_key) -> bool   SHA-256 only; False, never raises
    NOTIFY_GATEWAY, NOTIFY_PAYMENT                    the two notification variants
    verify_notification(fields, public_key, variant) -> bool
    response_text(raw_body, method) -> (object_text, sign)    the exact signed substring
    verify_response(raw_body, method, public_key) -> dict     raises SignatureInvalid

Sources: Alipay's signing doc (parameters but `sign`, empty ones dropped, sorted, raw values);
the official SDK alipay/alipay-sdk-python-all `alipay/aop/api/util/SignatureUtils.py` and
`DefaultAlipayClient.__parse_response`; fzlee/alipay `alipay/__init__.py`
(`_get_string_to_be_signed`); the Java SDK's `AlipaySignature.rsaCheckV1/V2`
(`getSignCheckContentV1` drops `sign` and `sign_type`, `V2` only `sign`).
"""
from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from json.decoder import JSONDecodeError, scanstring
from typing import Iterable, Mapping

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

# Alipay's RSA2 asks for 2048-bit keys; anything shorter is a misconfiguration, not a choice.
MIN_KEY_BITS = 2048
# Charsets the open platform declares; an unknown one cannot be the text Alipay signed.
_CHARSETS = {"utf-8": "utf-8", "utf8": "utf-8", "gbk": "gbk", "gb2312": "gbk", "gb18030": "gb18030"}
_JSON_WS = " \t\n\r"
_B64 = re.compile(r"^[A-Za-z0-9+/]+={0,2}$")
_DECODER = json.JSONDecoder()


class SignatureInvalid(ValueError):
    """A signature that is missing or does not verify; the message never carries the payload."""


class ResponseMalformed(SignatureInvalid):
    """A gateway body with no response object to verify (not JSON, or not Alipay's shape)."""


# --- keys -------------------------------------------------------------------------------------

def _key_bytes(text: str) -> tuple[bytes, bool]:
    """(bytes, is_pem). Env vars often carry PEMs with literal `\\n`; the console shows bare base64."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError("empty key")
    text = text.strip().replace("\\n", "\n")
    if "-----BEGIN" in text:
        return text.encode("ascii", "replace"), True
    body = "".join(text.split())
    if not _B64.match(body):
        raise ValueError("a key must be PEM or the base64 body of one")
    try:
        return base64.b64decode(body, validate=True), False
    except (binascii.Error, ValueError):
        raise ValueError("a key must be PEM or the base64 body of one") from None


def _checked_size(key):
    if key.key_size < MIN_KEY_BITS:
        raise ValueError(f"RSA key of {key.key_size} bits; RSA2 needs at least {MIN_KEY_BITS}")
    return key


def load_private_key(pem: str) -> rsa.RSAPrivateKey:
    """An unencrypted RSA private key: PKCS#1 or PKCS#8, PEM or bare base64 DER."""
    data, is_pem = _key_bytes(pem)
    try:
        if is_pem:
            key = serialization.load_pem_private_key(data, password=None)
        else:
            key = serialization.load_der_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise ValueError("not an unencrypted RSA private key (PKCS#1 or PKCS#8, PEM or base64)") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError("not an RSA private key")
    return _checked_size(key)


def load_public_key(pem: str) -> rsa.RSAPublicKey:
    """An RSA public key: SubjectPublicKeyInfo or PKCS#1, PEM or bare base64 DER."""
    data, is_pem = _key_bytes(pem)
    if is_pem and b"CERTIFICATE" in data:
        raise ValueError("a certificate, not a public key (public-key-certificate mode is not supported)")
    try:
        if is_pem:
            key = serialization.load_pem_public_key(data)
        else:
            key = serialization.load_der_public_key(data)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise ValueError("not an RSA public key (SPKI or PKCS#1, PEM or base64)") from None
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError("not an RSA public key")
    return _checked_size(key)


def public_key_body(key: rsa.RSAPublicKey | rsa.RSAPrivateKey | str) -> str:
    """The bare base64 SPKI body, as the console shows a public key (the check answer carries it)."""
    if isinstance(key, str):
        key = load_public_key(key)
    if isinstance(key, rsa.RSAPrivateKey):
        key = key.public_key()
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(der).decode("ascii")


def _private(key) -> rsa.RSAPrivateKey:
    return load_private_key(key) if isinstance(key, str) else key


def _public(key) -> rsa.RSAPublicKey:
    return load_public_key(key) if isinstance(key, str) else key


# --- signing ----------------------------------------------------------------------------------

def sign_content(params: Mapping[str, str], *, drop: Iterable[str] = ("sign",)) -> str:
    """The text RSA2 signs: raw values (not URL-encoded), empty ones out, sorted by key."""
    dropped = set(drop)
    items = sorted((k, v) for k, v in params.items() if k not in dropped and v not in (None, ""))
    return "&".join(f"{k}={v}" for k, v in items)


def charset_encoding(charset: str | None) -> str | None:
    """The Python codec for a charset Alipay declares, or None for one it does not use."""
    return _CHARSETS.get((charset or "utf-8").strip().lower())


def rsa2_sign(content: str, private_key, *, charset: str = "utf-8") -> str:
    """SHA256withRSA (PKCS#1 v1.5) over `content` in `charset`, base64 without line breaks."""
    encoding = charset_encoding(charset)
    if encoding is None:
        raise ValueError("unsupported charset")
    signature = _private(private_key).sign(content.encode(encoding), padding.PKCS1v15(), hashes.SHA256())
    return base64.b64encode(signature).decode("ascii")


def rsa2_verify(content: str, signature_b64: str | None, public_key, *, charset: str = "utf-8") -> bool:
    """True only for an RSA2 signature over `content`. The hash is fixed to SHA-256, so a SHA-1
    ("RSA") signature fails; the official SDK's `verify_with_rsa` accepts whichever hash the
    signature names. A malformed signature or text is False; only an unusable key raises."""
    key = _public(public_key)
    encoding = charset_encoding(charset)
    if encoding is None or not isinstance(content, str) or not isinstance(signature_b64, str):
        return False
    try:
        signature = base64.b64decode(signature_b64.strip(), validate=True)
        data = content.encode(encoding)
    except (binascii.Error, ValueError, UnicodeError):
        return False
    if len(signature) != (key.key_size + 7) // 8:
        return False
    try:
        key.verify(signature, data, padding.PKCS1v15(), hashes.SHA256())
    except (InvalidSignature, ValueError):
        return False
    return True


# --- notifications ----------------------------------------------------------------------------

@dataclass(frozen=True)
class NotifyVariant:
    name: str
    drop: tuple[str, ...]
    default_charset: str


# 生活号 message gateway (`alipay.service.check`, `alipay.mobile.public.message.notify`): every field
# but `sign` is signed, `sign_type` included (Java SDK rsaCheckV2, what Alipay's 生活号 demo uses).
# Its form defaults to GBK (the 服务窗 doc: "编码方式为GBK").
NOTIFY_GATEWAY = NotifyVariant("gateway", ("sign",), "GBK")
# Payment-style async notifications: `sign` and `sign_type` both out (Alipay's 异步通知验签 doc,
# rsaCheckV1).
NOTIFY_PAYMENT = NotifyVariant("payment", ("sign", "sign_type"), "utf-8")


def verify_notification(fields: Mapping[str, str], public_key, variant: NotifyVariant) -> bool:
    """Whether Alipay signed these form fields (as decoded with their own `charset`).

    Only `sign_type=RSA2` is taken. The text signed drops empty values, as Alipay's signing doc
    says; the Java SDK's check keeps them (`k=`), so with empty fields that form is tried too:
    an empty field carries nothing an attacker could use either way."""
    if not isinstance(variant, NotifyVariant):
        raise TypeError("variant must be NOTIFY_GATEWAY or NOTIFY_PAYMENT")
    if fields.get("sign_type") != "RSA2" or not fields.get("sign"):
        return False
    if any(not isinstance(v, str) for v in fields.values()):
        return False
    charset = fields.get("charset") or variant.default_charset
    sign = fields["sign"]
    if rsa2_verify(sign_content(fields, drop=variant.drop), sign, public_key, charset=charset):
        return True
    if not any(v == "" for k, v in fields.items() if k not in variant.drop):
        return False
    kept = "&".join(f"{k}={v}" for k, v in sorted(fields.items()) if k not in variant.drop)
    return rsa2_verify(kept, sign, public_key, charset=charset)


# --- gateway responses ------------------------------------------------------------------------

def response_key(method: str) -> str:
    """`alipay.system.oauth.token` → `alipay_system_oauth_token_response`."""
    return method.replace(".", "_") + "_response"


def _skip_ws(raw: str, i: int) -> int:
    while i < len(raw) and raw[i] in _JSON_WS:
        i += 1
    return i


def _top_members(raw: str) -> list[tuple[str, int, int]]:
    """(key, start, end) of each top-level member's value, positions into `raw`.

    The JSON module's own scanners find where each value ends, so braces or quotes inside
    strings, escapes and nesting cannot shift the cut (fzlee's brace counter and the official
    SDK's regex both can be fooled by a `}` inside a string or a member after the response)."""
    i = _skip_ws(raw, 0)
    if i >= len(raw) or raw[i] != "{":
        raise ResponseMalformed("the gateway's answer is not a JSON object")
    members: list[tuple[str, int, int]] = []
    i = _skip_ws(raw, i + 1)
    if i < len(raw) and raw[i] == "}":
        return _finish(raw, i, members)
    while True:
        if i >= len(raw) or raw[i] != '"':
            raise ResponseMalformed("malformed JSON in the gateway's answer")
        key, i = scanstring(raw, i + 1, True)
        i = _skip_ws(raw, i)
        if i >= len(raw) or raw[i] != ":":
            raise ResponseMalformed("malformed JSON in the gateway's answer")
        start = _skip_ws(raw, i + 1)
        _, end = _DECODER.raw_decode(raw, start)
        members.append((key, start, end))
        i = _skip_ws(raw, end)
        if i < len(raw) and raw[i] == ",":
            i = _skip_ws(raw, i + 1)
            continue
        if i < len(raw) and raw[i] == "}":
            return _finish(raw, i, members)
        raise ResponseMalformed("malformed JSON in the gateway's answer")


def _finish(raw: str, i: int, members: list[tuple[str, int, int]]) -> list[tuple[str, int, int]]:
    if _skip_ws(raw, i + 1) != len(raw):
        raise ResponseMalformed("trailing data after the gateway's JSON")
    keys = [k for k, _, _ in members]
    if len(keys) != len(set(keys)):
        # Two `sign`s or two response objects: which one a JSON parser keeps is not ours to guess.
        raise ResponseMalformed("duplicate keys in the gateway's answer")
    return members


def response_text(raw_body: str, method: str) -> tuple[str, str | None]:
    """The response object's text exactly as received (the signed bytes) and the `sign` value.

    Takes `<method>_response`, else `error_response` (the gateway's shape for some failures,
    e.g. a bad auth code for `alipay.system.oauth.token`)."""
    if not isinstance(raw_body, str):
        raise ResponseMalformed("the gateway's answer must be text")
    try:
        members = _top_members(raw_body)
    except (JSONDecodeError, RecursionError):
        raise ResponseMalformed("malformed JSON in the gateway's answer") from None
    spans = {k: (s, e) for k, s, e in members}
    key = response_key(method) if response_key(method) in spans else "error_response"
    if key not in spans:
        raise ResponseMalformed("no response object in the gateway's answer")
    start, end = spans[key]
    text = raw_body[start:end]
    if not text.startswith("{"):
        raise ResponseMalformed("the response is not an object (encrypted responses are not supported)")
    sign = None
    if "sign" in spans:
        s, e = spans["sign"]
        value = json.loads(raw_body[s:e])
        sign = value if isinstance(value, str) else None
    return text, sign


def verify_response(raw_body: str, method: str, public_key) -> dict:
    """The verified response object (parsed from the very text that was verified)."""
    text, sign = response_text(raw_body, method)
    if not sign:
        raise SignatureInvalid("the gateway's answer is not signed")
    if not rsa2_verify(text, sign, public_key):
        raise SignatureInvalid("the gateway's answer does not verify")
    return json.loads(text)
