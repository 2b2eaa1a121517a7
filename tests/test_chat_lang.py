"""Which language a message shows, and that the reply follows the conversation's language."""
from __future__ import annotations

import asyncio

import pytest

from assistant.chat import converse, language_signal
from assistant.rasa_client import BotTurn


@pytest.mark.parametrize("text, expected", [
    ("健康码可以截图吗", "zh"),          # 码 and 图 are simplified-only
    ("健康碼可以截圖嗎", "zh-hant"),
    ("Can I print my code?", "en"),
    ("那打印呢", None),                  # the same in both scripts: no signal
    ('/feedback{"helpful":"yes"}', None),
])
def test_language_signal(text, expected):
    assert language_signal(text) == expected


class OneTurnRasa:
    def __init__(self, lang):
        self.lang, self.metadata = lang, None

    async def send(self, sender, text, metadata):
        self.metadata = metadata
        return BotTurn([{"text": "这个回答对您有帮助吗?", "buttons": [{"title": "有帮助", "payload": "/x"}]}],
                       "faq", 0.9, self.lang)


def test_ambiguous_text_keeps_the_conversations_traditional_script():
    rasa = OneTurnRasa("zh-hant")
    result = asyncio.run(converse(rasa, "s", "那打印呢"))
    assert "lang" not in rasa.metadata
    assert result.messages[0]["text"] == "這個回答對您有幫助嗎?"
    assert result.messages[0]["buttons"][0]["title"] == "有幫助"


def test_clear_signal_is_sent_to_the_bot():
    rasa = OneTurnRasa("en")
    asyncio.run(converse(rasa, "s", "Can I print my code?"))
    assert rasa.metadata["lang"] == "en"
