"""channels/alipay/sign.py: keys, sign_content, RSA2, the two notification variants, responses."""
from __future__ import annotations

import base64
import json
import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from channels.alipay.sign import (
    NOTIFY_GATEWAY,
    NOTIFY_PAYMENT,
    ResponseMalformed,
    SignatureInvalid,
    load_private_key,
    load_public_key,
    public_key_body,
    response_key,
    response_text,
    rsa2_sign,
    rsa2_verify,
    sign_content,
    verify_notification,
    verify_response,
)

DATA = Path(__file__).parent / "data" / "alipay"
FZLEE_PRIVATE = DATA / "fzlee_app_private_key.pem"
FZLEE_PUBLIC = DATA / "fzlee_app_public_key.pem"

# A fixed call's sign_content and its RSA2 signature with fzlee/alipay's public test key,
# computed with `openssl dgst -sha256 -sign fzlee_app_private_key.pem | base64 -w0`.
VECTOR_CONTENT = (
    'app_id=2021000000000000&biz_content={"to_user_id":"2088000000000001","msg_type":"text",'
    '"text":{"content":"您的健康码为绿码"}}&charset=utf-8&format=JSON'
    "&method=alipay.open.public.message.custom.send&sign_type=RSA2&timestamp=2026-12-01 10:00:00&version=1.0"
)
VECTOR_SIGN = (
    "TbcJpFeoqxxwJCCsTNNAo9At/+BJ0l5Gk8mvIULtjT0hZ6ro7ysHO53SE54V726/Np1V3hiJHawqi46IBBT1TPsa99WVVeRi"
    "Iiz3bKuYTvmLrFiP4Pt0TKdCX0rdZTesm++BMW+6NAJJknTtyg/lS5UhLPRlgD5AVXTgDsjVLBwgXPQBBXk7qAM2hy2qehMj"
    "jvYwN+DOLdzLMU+aYRdZWv05r+Br7LCQzVsYzqtqUK/OE6UXcJj4Mb3Hy7XeUNQBxZju5vhgTpgz2J2TdpjJqVf4kA0uCYCW"
    "53OV+dpdVrie7iPOomUK0dzFDguiz9RMK0BPoUQgdDbVM+b0fwiWfQ=="
)


@pytest.fixture(scope="module")
def key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def other_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _pem(key, fmt) -> str:
    return key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption()).decode()


def _body(pem: str) -> str:
    return "".join(line for line in pem.splitlines() if not line.startswith("-----"))


def _pub_pem(key, fmt=serialization.PublicFormat.SubjectPublicKeyInfo) -> str:
    return key.public_key().public_bytes(serialization.Encoding.PEM, fmt).decode()


# --- keys ---------------------------------------------------------------------------------------

def test_private_key_pkcs1_pkcs8_pem_and_bare(key):
    n = key.private_numbers().public_numbers.n
    pkcs1 = _pem(key, serialization.PrivateFormat.TraditionalOpenSSL)
    pkcs8 = _pem(key, serialization.PrivateFormat.PKCS8)
    escaped = pkcs8.replace("\n", "\\n")       # a PEM squeezed into one env-var line
    for text in (pkcs1, pkcs8, _body(pkcs1), _body(pkcs8), escaped, "  " + _body(pkcs8) + "\n"):
        assert load_private_key(text).private_numbers().public_numbers.n == n


def test_public_key_spki_pkcs1_pem_and_bare(key):
    n = key.public_key().public_numbers().n
    spki = _pub_pem(key)
    pkcs1 = _pub_pem(key, serialization.PublicFormat.PKCS1)
    for text in (spki, pkcs1, _body(spki), _body(pkcs1)):
        assert load_public_key(text).public_numbers().n == n
    assert public_key_body(spki) == _body(spki)
    assert public_key_body(key) == _body(spki)


@pytest.mark.parametrize("text", ["", "   ", "not a key", "QUJD",
                                  "-----BEGIN PRIVATE KEY-----\nQUJD\n-----END PRIVATE KEY-----"])
def test_garbage_is_a_clear_value_error(text):
    with pytest.raises(ValueError):
        load_private_key(text)
    with pytest.raises(ValueError):
        load_public_key(text)


def test_wrong_kinds_of_key_are_refused(key):
    ec_key = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(ValueError, match="RSA"):
        load_private_key(_pem(ec_key, serialization.PrivateFormat.PKCS8))
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    with pytest.raises(ValueError, match="2048"):
        load_private_key(_pem(small, serialization.PrivateFormat.PKCS8))
    with pytest.raises(ValueError, match="2048"):
        load_public_key(_pub_pem(small))
    encrypted = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.BestAvailableEncryption(b"pw")).decode()
    with pytest.raises(ValueError, match="unencrypted"):
        load_private_key(encrypted)
    # A private key is not a public key, whatever the caller hoped.
    with pytest.raises(ValueError):
        load_public_key(_pem(key, serialization.PrivateFormat.PKCS8))


def test_error_messages_never_carry_the_key(key):
    broken = _body(_pem(key, serialization.PrivateFormat.PKCS8))[:-12] + "AAAAAAAAAAAA"
    with pytest.raises(ValueError) as info:
        load_private_key(broken)
    assert broken[:20] not in str(info.value)


# --- sign_content and the vector ----------------------------------------------------------------

def test_sign_content_sorts_drops_sign_and_empty_values_keeps_raw():
    params = {"b": "2", "a": "x&y=z 中文", "c": "", "d": None, "sign": "S", "sign_type": "RSA2"}
    assert sign_content(params) == "a=x&y=z 中文&b=2&sign_type=RSA2"
    assert sign_content(params, drop=("sign", "sign_type")) == "a=x&y=z 中文&b=2"
    # Ordering is by key bytes, so "app_id" < "biz_content" < "charset" and "a" < "a_b" < "ab".
    assert sign_content({"ab": "3", "a_b": "2", "a": "1"}) == "a=1&a_b=2&ab=3"


def test_fzlee_vector():
    private = load_private_key(FZLEE_PRIVATE.read_text())
    assert rsa2_sign(VECTOR_CONTENT, private) == VECTOR_SIGN
    assert rsa2_verify(VECTOR_CONTENT, VECTOR_SIGN, load_public_key(FZLEE_PUBLIC.read_text()))
    # The same text rebuilt from fields, as a call signs them.
    fields = dict(item.split("=", 1) for item in VECTOR_CONTENT.split("&"))
    assert sign_content({**fields, "sign": "old", "notify_url": ""}) == VECTOR_CONTENT


@pytest.mark.skipif(shutil.which("openssl") is None, reason="no openssl here")
def test_fzlee_vector_against_openssl(tmp_path):
    content = tmp_path / "content.txt"
    content.write_bytes(VECTOR_CONTENT.encode("utf-8"))
    out = subprocess.run(["openssl", "dgst", "-sha256", "-sign", str(FZLEE_PRIVATE), str(content)],
                         capture_output=True, check=True).stdout
    assert base64.b64encode(out).decode() == VECTOR_SIGN


def test_independent_pkcs1v15_primitive_matches(key):
    # The same signature straight from the primitive, so rsa2_sign adds nothing of its own.
    expected = key.sign(VECTOR_CONTENT.encode(), padding.PKCS1v15(), hashes.SHA256())
    assert rsa2_sign(VECTOR_CONTENT, key) == base64.b64encode(expected).decode()


# --- verify -------------------------------------------------------------------------------------

def test_verify_is_false_on_anything_malformed(key, other_key):
    public = key.public_key()
    good = rsa2_sign("hello", key)
    assert rsa2_verify("hello", good, public)
    assert rsa2_verify("hello", " " + good + "\n", public)
    for bad in (None, "", "!!!", "aGVsbG8=", good[:-4], good + "AAAA", 12345):
        assert rsa2_verify("hello", bad, public) is False
    assert rsa2_verify("hellO", good, public) is False
    assert rsa2_verify("hello", good, other_key.public_key()) is False
    assert rsa2_verify(None, good, public) is False
    assert rsa2_verify("hello", good, public, charset="latin-9") is False


def test_sha1_signature_is_refused(key):
    sha1 = base64.b64encode(key.sign(b"hello", padding.PKCS1v15(), hashes.SHA1())).decode()
    assert rsa2_verify("hello", sha1, key.public_key()) is False


def test_charset_is_part_of_what_is_signed(key):
    text = "健康码"
    gbk = rsa2_sign(text, key, charset="GBK")
    assert rsa2_verify(text, gbk, key.public_key(), charset="gbk")
    assert not rsa2_verify(text, gbk, key.public_key(), charset="utf-8")


# --- notification variants ----------------------------------------------------------------------

def _notification(charset="GBK"):
    return {"service": "alipay.mobile.public.message.notify", "charset": charset, "sign_type": "RSA2",
            "biz_content": "<XML><AppId>1</AppId><Text><Content>你好</Content></Text></XML>"}


def _signed(fields, key, drop):
    charset = fields.get("charset") or "GBK"
    return {**fields, "sign": rsa2_sign(sign_content(fields, drop=drop), key, charset=charset)}


def test_gateway_and_payment_variants_differ(key):
    public = key.public_key()
    gateway = _signed(_notification(), key, NOTIFY_GATEWAY.drop)
    payment = _signed(_notification(), key, NOTIFY_PAYMENT.drop)
    assert verify_notification(gateway, public, NOTIFY_GATEWAY)
    assert not verify_notification(gateway, public, NOTIFY_PAYMENT)
    assert verify_notification(payment, public, NOTIFY_PAYMENT)
    assert not verify_notification(payment, public, NOTIFY_GATEWAY)
    with pytest.raises(TypeError):
        verify_notification(gateway, public, "gateway")


def test_notification_refusals(key, other_key):
    public = key.public_key()
    good = _signed(_notification(), key, NOTIFY_GATEWAY.drop)
    assert not verify_notification({**good, "biz_content": good["biz_content"] + " "}, public, NOTIFY_GATEWAY)
    assert not verify_notification({k: v for k, v in good.items() if k != "sign"}, public, NOTIFY_GATEWAY)
    assert not verify_notification(good, other_key.public_key(), NOTIFY_GATEWAY)
    # SHA-1 "RSA" notifications are not taken even when the sign would verify as such.
    rsa1 = {**_notification(), "sign_type": "RSA"}
    rsa1["sign"] = base64.b64encode(key.sign(sign_content(rsa1).encode("gbk"), padding.PKCS1v15(),
                                             hashes.SHA1())).decode()
    assert not verify_notification(rsa1, public, NOTIFY_GATEWAY)
    # The form's charset decides the bytes: the same text claimed as UTF-8 does not verify.
    assert not verify_notification({**good, "charset": "UTF-8"}, public, NOTIFY_GATEWAY)
    assert not verify_notification({**good, "charset": "EBCDIC"}, public, NOTIFY_GATEWAY)


def test_charset_absent_means_the_variant_default(key):
    fields = {k: v for k, v in _notification().items() if k != "charset"}
    signed = {**fields, "sign": rsa2_sign(sign_content(fields), key, charset="GBK")}
    assert verify_notification(signed, key.public_key(), NOTIFY_GATEWAY)


def test_empty_fields_kept_as_the_java_sdk_signs_them(key):
    fields = {**_notification("UTF-8"), "app_id": ""}
    java_text = "&".join(f"{k}={v}" for k, v in sorted(fields.items()))
    assert "app_id=&" in java_text
    signed = {**fields, "sign": rsa2_sign(java_text, key)}
    assert verify_notification(signed, key.public_key(), NOTIFY_GATEWAY)
    # ... and the documented form (empty dropped) verifies with the empty field present too.
    dropped = {**fields, "sign": rsa2_sign(sign_content(fields), key)}
    assert verify_notification(dropped, key.public_key(), NOTIFY_GATEWAY)


# --- gateway responses --------------------------------------------------------------------------

METHOD = "alipay.system.oauth.token"


def _body_with(obj_text: str, sign: str, *, key="alipay_system_oauth_token_response"):
    return "{" + json.dumps(key) + ":" + obj_text + ',"sign":' + json.dumps(sign) + "}"


TRICKY = [
    '{"user_id":"2088","note":"a } b { c"}',
    '{"user_id":"2088","q":"say \\"}\\" please","b":"\\\\"}',
    '{"user_id":"2088","name":"\\u5065\\u5eb7\\u7801","emoji":"\\ud83d\\ude00"}',
    '{\n  "user_id" : "2088",\n\t"nested": {"a": [1, {"b": "}"}], "c": {}},\n  "n": -1.5e3 }',
    '{"user_id":"2088","text":"健康码 {绿}"}',
]


@pytest.mark.parametrize("obj_text", TRICKY)
def test_response_text_is_the_exact_substring(key, obj_text):
    sign = rsa2_sign(obj_text, key)
    raw = _body_with(obj_text, sign)
    assert response_text(raw, METHOD) == (obj_text, sign)
    assert verify_response(raw, METHOD, key.public_key()) == json.loads(obj_text)


def test_response_object_not_first_and_whitespace_around(key):
    obj_text = TRICKY[0]
    sign = rsa2_sign(obj_text, key)
    raw = ('\n {  "sign" : ' + json.dumps(sign) + ' ,\n "alipay_cert_sn":"a5b5{",\n'
           '  "alipay_system_oauth_token_response"  :  ' + obj_text + '  , "x": {"y": "}"} }\n')
    assert response_text(raw, METHOD) == (obj_text, sign)
    assert verify_response(raw, METHOD, key.public_key())["user_id"] == "2088"


def test_reserialised_text_would_not_verify(key):
    # Alipay signs its own serialisation; a re-dump changes spaces or escapes and breaks it.
    obj_text = '{"user_id": "2088", "name": "\\u5065"}'
    sign = rsa2_sign(obj_text, key)
    redumped = json.dumps(json.loads(obj_text), ensure_ascii=False, separators=(",", ":"))
    assert not rsa2_verify(redumped, sign, key.public_key())
    assert verify_response(_body_with(obj_text, sign), METHOD, key.public_key())["name"] == "健"


def test_error_response_is_found_and_verified(key):
    obj_text = ('{"code":"40002","msg":"Invalid Arguments","sub_code":"isv.code-invalid",'
                '"sub_msg":"授权码code无效"}')
    raw = _body_with(obj_text, rsa2_sign(obj_text, key), key="error_response")
    assert response_text(raw, METHOD)[0] == obj_text
    assert verify_response(raw, METHOD, key.public_key())["sub_code"] == "isv.code-invalid"
    assert response_key(METHOD) == "alipay_system_oauth_token_response"


def test_tampered_or_unsigned_response_is_refused(key, other_key):
    obj_text = TRICKY[0]
    sign = rsa2_sign(obj_text, key)
    with pytest.raises(SignatureInvalid):
        verify_response(_body_with(obj_text.replace("2088", "2089"), sign), METHOD, key.public_key())
    with pytest.raises(SignatureInvalid):
        verify_response(_body_with(obj_text, sign), METHOD, other_key.public_key())
    with pytest.raises(SignatureInvalid):
        verify_response('{"alipay_system_oauth_token_response":' + obj_text + "}", METHOD, key.public_key())
    with pytest.raises(SignatureInvalid):
        verify_response(_body_with(obj_text, ""), METHOD, key.public_key())
    sha1 = base64.b64encode(key.sign(obj_text.encode(), padding.PKCS1v15(), hashes.SHA1())).decode()
    with pytest.raises(SignatureInvalid):
        verify_response(_body_with(obj_text, sha1), METHOD, key.public_key())


@pytest.mark.parametrize("raw", [
    "", "null", "[]", "<html>502</html>", '{"a":1', '{"a":1} trailing', '{"a" 1}', '{"a":1,}',
    '{"other_response":{"code":"10000"},"sign":"x"}',
    '{"alipay_system_oauth_token_response":"ENCRYPTED==","sign":"x"}',
    '{"alipay_system_oauth_token_response":{"user_id":"1"},'
    '"alipay_system_oauth_token_response":{"user_id":"2"},"sign":"x"}',
    '{"alipay_system_oauth_token_response":{"user_id":"1"},"sign":"x","sign":"y"}',
])
def test_malformed_bodies(raw, key):
    with pytest.raises(ResponseMalformed):
        verify_response(raw, METHOD, key.public_key())
    assert issubclass(ResponseMalformed, SignatureInvalid)
