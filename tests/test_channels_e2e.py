"""Both channels on the real stack (Rasa + app, the real model) against the local stand-ins:
a signed safe-mode WeChat push and a signed 生活号 message each get their answer from the FAQ
through the platform's send API; then nothing personal is left at rest."""
from __future__ import annotations

import pytest

from retrieval.kb import load_kb
from core.settings import REPO_ROOT
from tools import pii_scan
from tools.try_channels import trial

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]


def test_wechat_and_alipay_answer_a_real_question(tmp_path):
    from tests._env import missing

    if not (REPO_ROOT / "var" / "artifacts.json").exists():
        missing("no artefacts: run `make setup`")
    answer = load_kb(REPO_ROOT / "kb" / "faq_zh.md").get("personal.screenshot").answer
    out = trial("健康码能截图使用吗?我的手机13912345678", tmp_path / "stack")
    wx, ali = out["wechat"], out["alipay"]
    assert wx["status"] == 200 and wx["body"] == "success" and wx["seconds"] < 5
    assert [s["touser"] for s in wx["sent"]][:1] == [wx["openid"]]
    assert answer in wx["sent"][0]["text"]["content"]
    assert ali["status"] == 200 and ali["seconds"] < 5
    assert ali["sent"][0]["to_user_id"] == ali["user"] and answer in ali["sent"][0]["text"]["content"]
    hits = pii_scan.scan_dir(tmp_path / "stack")
    assert not hits, hits
