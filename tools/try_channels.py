"""Try WeChat and Alipay locally: the local stand-ins for both platforms, the whole stack pointed
at them, one signed push on each channel, and the answers the stand-ins received.

    .venv/bin/python -m tools.try_channels "健康码可以截图吗"

Nothing leaves the machine: the stand-ins (tools/fake_wechat.py, tools/fake_alipay.py) listen on
loopback, the keys and tokens are made up for this run. The same function is the channels'
end-to-end test on the real stack (tests/test_channels_e2e.py)."""
from __future__ import annotations

import argparse
import base64
import json
import secrets
import tempfile
import time
import urllib.request
from contextlib import ExitStack
from pathlib import Path
from urllib.parse import urlencode

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from channels.alipay.sign import NOTIFY_GATEWAY
from channels.wechat.crypto import WeChatCipher, signature
from tools import fake_alipay, fake_wechat
from tools.stack import running_stack


def _post(url: str, body: bytes, content_type: str) -> tuple[int, bytes, float]:
    t0 = time.monotonic()
    request = urllib.request.Request(url, data=body, headers={"content-type": content_type}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, resp.read(), time.monotonic() - t0
    except urllib.error.HTTPError as err:
        return err.code, err.read(), time.monotonic() - t0


def _wait(get, timeout_s: float = 30.0) -> list:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = get()
        if got:
            return got
        time.sleep(0.1)
    return []


def wechat_push(base: str, token: str, appid: str, aes_key: str, openid: str, text: str) -> tuple[int, bytes, float]:
    """A safe-mode XML push, encrypted and signed as WeChat does."""
    plain = (f"<xml><ToUserName><![CDATA[gh_local]]></ToUserName><FromUserName><![CDATA[{openid}]]></FromUserName>"
             f"<CreateTime>{int(time.time())}</CreateTime><MsgType><![CDATA[text]]></MsgType>"
             f"<Content><![CDATA[{text}]]></Content><MsgId>{secrets.randbelow(10**15)}</MsgId></xml>")
    encrypt = WeChatCipher(aes_key, appid).encrypt(plain.encode())
    ts, nonce = str(int(time.time())), secrets.token_hex(4)
    query = urlencode({"timestamp": ts, "nonce": nonce, "encrypt_type": "aes", "signature": signature(token, ts, nonce),
                       "msg_signature": signature(token, ts, nonce, encrypt), "openid": openid})
    body = f"<xml><ToUserName><![CDATA[gh_local]]></ToUserName><Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>"
    return _post(f"{base}/channels/wechat?{query}", body.encode(), "text/xml")


def alipay_message(base: str, gateway: fake_alipay.FakeAlipay, app_id: str, user: str, text: str):
    """A 生活号 text message, signed with the (stand-in) gateway's key as Alipay does."""
    biz = fake_alipay.text_biz_content(app_id, user, text, msg_id=secrets.token_hex(8))
    fields = fake_alipay.signed_notification(
        {"service": "alipay.mobile.public.message.notify", "charset": "GBK", "biz_content": biz},
        gateway.private_key_pem, NOTIFY_GATEWAY)
    return _post(f"{base}/channels/alipay", fake_alipay.form_body(fields), "application/x-www-form-urlencoded")


def trial(question: str, var_dir: Path, extra_env: dict[str, str] | None = None) -> dict:
    token, appid, secret = "tok" + secrets.token_hex(4), "wx" + secrets.token_hex(8), secrets.token_hex(12)
    aes_key = base64.b64encode(secrets.token_bytes(32)).decode().rstrip("=")
    app_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    app_private = app_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption()).decode()
    app_public = app_key.public_key().public_bytes(serialization.Encoding.PEM,
                                                   serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    alipay_app = "2021" + str(secrets.randbelow(10**12)).zfill(12)
    openid, alipay_user = "oLocal" + secrets.token_hex(11), "2088" + str(secrets.randbelow(10**12)).zfill(12)
    with ExitStack() as stack:
        wx = stack.enter_context(fake_wechat.running(appid, secret))
        ali = stack.enter_context(fake_alipay.running(app_public, app_id=alipay_app))
        env = {"HC_WECHAT_TOKEN": token, "HC_WECHAT_APPID": appid, "HC_WECHAT_APPSECRET": secret,
               "HC_WECHAT_AES_KEY": aes_key, "HC_WECHAT_API_BASE": wx.base_url,
               "HC_ALIPAY_APP_ID": alipay_app, "HC_ALIPAY_PRIVATE_KEY": app_private,
               "HC_ALIPAY_PUBLIC_KEY": ali.public_key_pem, "HC_ALIPAY_GATEWAY": ali.url, **(extra_env or {})}
        base, startup_s, _pid = stack.enter_context(running_stack(var_dir, env=env))
        wx_status, wx_body, wx_s = wechat_push(base, token, appid, aes_key, openid, question)
        ali_status, _ali_body, ali_s = alipay_message(base, ali, alipay_app, alipay_user, question)
        wx_sent = _wait(wx.sends)
        ali_sent = _wait(ali.sends)
        # WeChat's retry of the same push must add nothing: pushed again, then a moment to be sure.
        return {"base": base, "startup_s": round(startup_s, 1),
                "wechat": {"status": wx_status, "body": wx_body.decode(errors="replace"), "seconds": round(wx_s, 3),
                           "openid": openid, "sent": wx_sent},
                "alipay": {"status": ali_status, "seconds": round(ali_s, 3), "user": alipay_user, "sent": ali_sent}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("question", nargs="?", default="健康码可以截图吗")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="hc-try-channels-") as tmp:
        out = trial(args.question, Path(tmp))
    print(json.dumps(out, ensure_ascii=False, indent=2))


if __name__ == "__main__":
    main()
