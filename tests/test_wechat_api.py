"""channels.wechat.api against tools/fake_wechat: the token fetched once and shared, refreshed
once on 40001/42001 (never in a loop), WeChat's refusals as their own exceptions, timeouts as
WeChatUnavailable; the Redis cache's one refresher across instances; long texts and choices."""
from __future__ import annotations

import re
import threading
import time
import uuid

import httpx
import pytest

from channels.wechat.api import (MemoryTokenCache, RedisTokenCache, TooManyMessages, WeChatApi,
                                 WeChatApiError, WeChatUnavailable, WindowClosed, choice_payload,
                                 render_choices, split_text)
from tests._env import require_redis
from tools.fake_wechat import FakeWeChat, running

APPID, SECRET, OPENID = "wx_test_appid", "s3cret-value-never-logged", "o9AgO5Kd5ggOC-bXrbNODIiE3bGY"


@pytest.fixture
def wx():
    with running(APPID, SECRET) as fake:
        yield fake


def loopback() -> httpx.Client:
    # trust_env=False: a proxy in the environment must not capture loopback calls.
    return httpx.Client(trust_env=False)


def make_api(fake: FakeWeChat, cache=None, timeout_s: float = 5.0, secret: str = SECRET) -> WeChatApi:
    return WeChatApi(fake.base_url, APPID, secret, cache or MemoryTokenCache(), timeout_s=timeout_s,
                     client=loopback())


@pytest.fixture
def api(wx):
    client = make_api(wx)
    yield client
    client.close()


def run_each(fns: list) -> list:
    """Each fn in its own thread, all released at once; their results (or exceptions) in order."""
    barrier, results = threading.Barrier(len(fns)), [None] * len(fns)

    def worker(i: int) -> None:
        barrier.wait()
        try:
            results[i] = fns[i]()
        except Exception as exc:  # noqa: BLE001 (the test inspects it)
            results[i] = exc

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(fns))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return results


# --- the token --------------------------------------------------------------------------------------

def test_one_token_for_many_sends(wx, api):
    for i in range(5):
        api.send_text(OPENID, f"第{i}条")
    api.typing(OPENID)
    [token_call] = wx.calls("stable_token")
    assert token_call.body == {"grant_type": "client_credential", "appid": APPID, "secret": "<right>"}
    assert [b["text"]["content"] for b in wx.sends()] == [f"第{i}条" for i in range(5)]
    assert wx.sends()[0] == {"touser": OPENID, "msgtype": "text", "text": {"content": "第0条"}}
    assert wx.calls("typing")[0].body == {"touser": OPENID, "command": "Typing"}
    assert all(c.query["access_token"] == "<valid>" for c in wx.calls("custom/send"))


def test_token_is_cached_with_a_margin(wx, api):
    before = time.time()
    api.access_token()
    _, expires_at = api._cache.get()
    assert before + 7200 - 300 - 1 <= expires_at <= time.time() + 7200 - 300


def test_an_expired_cached_token_is_fetched_again(wx):
    cache = MemoryTokenCache()
    api = make_api(wx, cache)
    first = api.access_token()
    cache.set(first, time.time() - 1)
    assert api.access_token() == first          # stable_token hands back the same live token
    assert len(wx.calls("stable_token")) == 2


def test_forced_refresh_asks_for_a_new_token(wx, api):
    first = api.access_token()
    second = api.access_token(force_refresh=True)
    assert second != first
    assert wx.calls("stable_token")[-1].body["force_refresh"] is True


@pytest.mark.parametrize("errcode", [40001, 42001, 40014])
def test_a_token_error_refreshes_once_then_succeeds(wx, api, errcode):
    api.send_text(OPENID, "warm-up")
    wx.fail_next(errcode)
    api.send_text(OPENID, "after refresh")
    token_calls = wx.calls("stable_token")
    assert len(token_calls) == 2 and token_calls[1].body.get("force_refresh") is True
    assert [b["text"]["content"] for b in wx.sends()] == ["warm-up", "after refresh"]


def test_tokens_the_stand_in_expired_are_replaced(wx, api):
    api.send_text(OPENID, "one")
    wx.expire_tokens()
    api.send_text(OPENID, "two")
    assert [c.errcode for c in wx.calls("custom/send")] == [0, 42001, 0]
    assert len(wx.sends()) == 2


def test_a_second_token_error_after_the_refresh_is_raised_not_looped(wx, api):
    wx.fail_next(40001, count=5)
    with pytest.raises(WeChatApiError) as caught:
        api.send_text(OPENID, "x")
    assert caught.value.errcode == 40001
    assert len(wx.calls("custom/send")) == 2 and len(wx.calls("stable_token")) == 2


def test_threads_needing_a_token_at_once_share_one_fetch(wx, api):
    wx.delay_s = 0.3            # the fetch takes a while, so all of them arrive while it runs
    tokens = run_each([api.access_token] * 8)
    assert len(set(tokens)) == 1 and isinstance(tokens[0], str)
    assert len(wx.calls("stable_token")) == 1


def test_a_burst_of_token_errors_costs_one_forced_refresh(wx, api):
    api.access_token()
    wx.expire_tokens()
    results = run_each([lambda: api.send_text(OPENID, "hi")] * 4)
    assert results == [None] * 4
    assert len(wx.sends()) == 4
    assert [c.body.get("force_refresh") for c in wx.calls("stable_token")] == [None, True]


def test_wrong_credentials(wx):
    with pytest.raises(WeChatApiError) as caught:
        make_api(wx, secret="wrong").send_text(OPENID, "x")
    assert caught.value.errcode == 40125
    assert "wrong" not in str(caught.value)
    assert wx.calls("stable_token")[0].body["secret"] == "<wrong>"
    assert not wx.calls("custom/send")


# --- WeChat's refusals ------------------------------------------------------------------------------

def test_window_over(wx, api):
    wx.fail_next(45015)
    with pytest.raises(WindowClosed) as caught:
        api.send_text(OPENID, "x")
    assert caught.value.errcode == 45015 and caught.value.reason == "45015 window over"
    assert isinstance(caught.value, WeChatApiError)


def test_too_many_messages(wx, api):
    wx.fail_next(45047)
    with pytest.raises(TooManyMessages):
        api.send_text(OPENID, "x")


def test_other_errcodes(wx, api):
    wx.fail_next(47001, path_suffix="typing")
    with pytest.raises(WeChatApiError) as caught:
        api.typing(OPENID)
    assert type(caught.value) is WeChatApiError and caught.value.errcode == 47001


def test_a_slow_stand_in_is_unavailable_within_the_timeout(wx):
    api = make_api(wx, timeout_s=0.3)
    api.access_token()
    wx.delay_s = 3.0
    started = time.monotonic()
    with pytest.raises(WeChatUnavailable) as caught:
        api.send_text(OPENID, "x")
    assert time.monotonic() - started < 2.0
    assert caught.value.errcode == -1
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


def test_a_slow_token_fetch_is_unavailable_too(wx):
    wx.delay_s = 3.0
    with pytest.raises(WeChatUnavailable):
        make_api(wx, timeout_s=0.3).access_token()


def test_nothing_listening_is_unavailable():
    with running(APPID, SECRET) as fake:
        base = fake.base_url
    api = WeChatApi(base, APPID, SECRET, MemoryTokenCache(), timeout_s=1.0, client=loopback())
    with pytest.raises(WeChatUnavailable):
        api.send_text(OPENID, "x")


def test_an_answer_that_is_not_wechats_is_unavailable(wx):
    api = WeChatApi(wx.base_url + "/nowhere", APPID, SECRET, MemoryTokenCache(), client=loopback())
    with pytest.raises(WeChatUnavailable, match="HTTP 404"):
        api.access_token()


def test_the_token_and_secret_never_reach_an_exception(wx, api):
    token = api.access_token()
    wx.fail_next(40001, count=2)
    wx.delay_s = 0
    with pytest.raises(WeChatApiError) as first:
        api.send_text(OPENID, "x")
    api_slow = make_api(wx, api._cache, timeout_s=0.2)
    wx.delay_s = 1.0
    with pytest.raises(WeChatUnavailable) as second:
        api_slow.send_text(OPENID, "x")
    for caught in (first, second):
        text = repr(caught.value) + str(caught.value)
        assert token not in text and SECRET not in text and api.access_token() not in text


def test_close_closes_only_a_client_it_made(wx):
    own = WeChatApi(wx.base_url, APPID, SECRET, MemoryTokenCache())
    own.close()
    assert own._client.is_closed
    given = loopback()
    WeChatApi(wx.base_url, APPID, SECRET, MemoryTokenCache(), client=given).close()
    assert not given.is_closed
    given.close()


# --- the Redis cache --------------------------------------------------------------------------------

@pytest.fixture
def redis_client():
    import redis

    client = redis.Redis.from_url(require_redis())
    prefix = f"hc:test:wechat:{uuid.uuid4().hex}"
    yield client, prefix
    for key in client.scan_iter(f"{prefix}*"):
        client.delete(key)
    client.close()


def test_redis_cache_round_trip_and_expiry(redis_client):
    client, prefix = redis_client
    cache = RedisTokenCache(client, prefix)
    assert cache.get() is None
    cache.set("tok", time.time() + 60)
    token, expires_at = cache.get()
    assert token == "tok" and expires_at > time.time()
    assert 0 < client.pttl(f"{prefix}:access_token") <= 60_000
    cache.set("old", time.time() - 1)
    assert cache.get() is None


def test_redis_cache_shared_by_instances_fetches_once(wx, redis_client):
    client, prefix = redis_client
    apis = [make_api(wx, RedisTokenCache(client, prefix)) for _ in range(6)]
    wx.delay_s = 0.3
    tokens = run_each([a.access_token for a in apis])
    assert len(set(tokens)) == 1 and isinstance(tokens[0], str)
    assert len(wx.calls("stable_token")) == 1
    assert not client.exists(f"{prefix}:access_token:lock")


def test_redis_token_errors_on_two_instances_cost_one_forced_refresh(wx, redis_client):
    client, prefix = redis_client
    apis = [make_api(wx, RedisTokenCache(client, prefix)) for _ in range(3)]
    apis[0].access_token()
    wx.expire_tokens()
    results = run_each([lambda a=a: a.send_text(OPENID, "hi") for a in apis])
    assert results == [None] * 3
    assert [c.body.get("force_refresh") for c in wx.calls("stable_token")] == [None, True]


def test_redis_lock_is_released_only_by_its_owner(redis_client):
    client, prefix = redis_client
    cache = RedisTokenCache(client, prefix, lock_ttl_s=5)
    lock_key = f"{prefix}:access_token:lock"

    def fetch():
        # Our lease ran out and someone else holds the lock now: we must leave theirs alone.
        client.set(lock_key, "someone-else", px=5000)
        return "tok", time.time() + 60

    assert cache.refresh(lambda c: False, fetch)[0] == "tok"
    assert client.get(lock_key) == b"someone-else"


def test_redis_waiter_gives_up_when_the_lock_is_never_freed(redis_client):
    client, prefix = redis_client
    client.set(f"{prefix}:access_token:lock", "a-stuck-refresher", px=10_000)
    cache = RedisTokenCache(client, prefix, wait_s=0.3)
    with pytest.raises(WeChatUnavailable):
        cache.refresh(lambda c: c is not None, lambda: pytest.fail("must not fetch"))


def test_redis_down_is_unavailable():
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    down = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0))
    cache = RedisTokenCache(down, "hc:test:x")
    with pytest.raises(WeChatUnavailable):
        cache.get()


# --- long texts ----------------------------------------------------------------------------------

def squeeze(text: str) -> str:
    return re.sub(r"\s+", "", text)


def check_pieces(text: str, pieces: list[str], limit: int) -> None:
    assert pieces and all(p and p == p.strip() for p in pieces)
    assert all(len(p.encode("utf-8")) <= limit for p in pieces)
    assert squeeze("".join(pieces)) == squeeze(text)
    position = 0
    for piece in pieces:                         # each piece is the text's own, in order
        position = text.index(piece, position) + len(piece)


def test_short_text_is_one_piece():
    assert split_text("  健康码怎么申领？ ") == ["健康码怎么申领？"]


def test_blank_text_is_no_piece():
    assert split_text("") == [] and split_text(" \n\n ") == []


def test_cut_at_paragraphs_first():
    text = "甲" * 500 + "\n\n" + "乙" * 500 + "\n\n" + "丙" * 500
    assert split_text(text, 3100) == ["甲" * 500 + "\n\n" + "乙" * 500, "丙" * 500]


def test_cut_at_lines_then_sentences():
    lines = "第一行。\n" * 3
    assert split_text(lines, 30) == ["第一行。\n第一行。", "第一行。"]
    sentences = "健康码转黄。请做核酸！Then wait. 好吗？"
    pieces = split_text(sentences, 20)
    check_pieces(sentences, pieces, 20)
    assert pieces[0] == "健康码转黄。"


def test_a_dot_inside_a_number_or_a_domain_is_not_a_sentence_end():
    text = "请升级到3.5.1版本后访问www.fujian.gov.cn查询。" * 3
    pieces = split_text(text, 80)
    check_pieces(text, pieces, 80)
    assert all(p.endswith("查询。") for p in pieces)


def test_english_is_cut_between_words():
    text = "Please bring your ID card to the service desk " * 10
    pieces = split_text(text, 50)
    check_pieces(text, pieces, 50)
    words = set(text.split())
    assert all(set(p.split()) <= words for p in pieces)      # no word cut in two


def test_ten_thousand_characters():
    text = ("您好，健康码由黄转绿需要连续两天核酸阴性。" * 50 + "\n") * 10
    assert len(text) > 10_000
    pieces = split_text(text)
    check_pieces(text, pieces, 2000)
    # Each line (3150 bytes) is too long: the cuts fall after sentences.
    assert all(p.endswith("。") for p in pieces)


def test_ten_thousand_characters_without_any_boundary():
    text = "码" * 10_000
    pieces = split_text(text)
    check_pieces(text, pieces, 2000)
    assert [len(p) for p in pieces] == [666] * 15 + [10]


def test_emoji_are_never_cut_inside():
    family, thumbs, flag = "👨‍👩‍👧‍👦", "👍🏽", "🏴󠁧󠁢󠁳󠁣󠁴󠁿"
    text = (family + thumbs + flag + "好") * 200
    pieces = split_text(text, 100)
    check_pieces(text, pieces, 100)
    for piece in pieces:
        assert not piece.startswith(("\u200d", "\U0001F3FD")) and not piece.endswith("\u200d")


def test_a_cluster_longer_than_a_tiny_limit_goes_by_code_points():
    pieces = split_text("👨‍👩‍👧‍👦", 8)
    assert "".join(pieces) == "👨‍👩‍👧‍👦" and all(len(p.encode()) <= 8 for p in pieces)


def test_limit_must_hold_a_character():
    with pytest.raises(ValueError):
        split_text("x", 3)


# --- buttons as numbered choices --------------------------------------------------------------------

BUTTONS = [{"title": "有帮助", "payload": "/feedback{\"helpful\": true}"},
           {"title": "没帮助", "payload": "/feedback{\"helpful\": false}"}]


def test_render_choices_per_language():
    assert render_choices("这个回答有帮助吗？", BUTTONS, "zh") == "这个回答有帮助吗？\n\n回复数字选择:\n1. 有帮助\n2. 没帮助"
    assert render_choices("有幫助嗎？", BUTTONS, "zh-hant").endswith("\n\n回覆數字選擇:\n1. 有帮助\n2. 没帮助")
    english = [{"title": "Helpful", "payload": "/yes"}, {"title": "Not\nhelpful", "payload": "/no"}]
    assert render_choices("Did this help?", english, "en") == (
        "Did this help?\n\nReply with a number:\n1. Helpful\n2. Not helpful")
    assert render_choices("x", BUTTONS, "fr").startswith("x\n\n回复数字选择:")


def test_render_choices_without_buttons_is_the_text():
    assert render_choices("原文", [], "zh") == "原文"


@pytest.mark.parametrize("reply,index", [("1", 0), ("１", 0), (" 2 ", 1), ("回复1", 0), ("回覆 2", 1), ("2.", 1),
                                         ("２．", 1), ("1。", 0), ("reply 2", 1)])
def test_choice_payload(reply, index):
    assert choice_payload(reply, BUTTONS) == BUTTONS[index]["payload"]


@pytest.mark.parametrize("reply", ["0", "3", "12", "1 2", "一", "有帮助", "1个问题", "", "  ", "-1", "1.5"])
def test_not_a_choice(reply):
    assert choice_payload(reply, BUTTONS) is None


def test_no_buttons_no_choice():
    assert choice_payload("1", []) is None
