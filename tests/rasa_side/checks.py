"""Checks of our code that runs inside the Rasa process (bot/stores, bot/channels/rasa_patches),
run by tests/test_rasa_side.py in the Rasa virtualenv, which has no pytest: each check raises
on failure, and the script prints one JSON object {check name: "ok" or the error}.

    cd bot && PYTHONPATH=. ../.venv-rasa/bin/python ../tests/rasa_side/checks.py TMPDIR
"""
from __future__ import annotations

import asyncio
import json
import sqlite3
import sys
import traceback
from pathlib import Path

from rasa.core.tracker_store import SQLTrackerStore
from rasa.shared.core.domain import Domain
from rasa.shared.core.events import ActionExecuted, SessionStarted, SlotSet, UserUttered
from rasa.shared.core.trackers import DialogueStateTracker

DOMAIN = Domain.load("domain.yml")
TMP = Path(sys.argv[1])


def _store(name: str):
    from stores.sqlite_tracker_store import SqliteTrackerStore
    return SqliteTrackerStore(domain=DOMAIN, db=str(TMP / name))


def _turn(text: str, intent: str = "faq") -> list:
    return [UserUttered(text, {"name": intent, "confidence": 0.9}), ActionExecuted("action_answer_faq"),
            ActionExecuted("action_listen")]


def check_tracker_round_trip_and_appends_only_new_events() -> None:
    store = _store("a.db")
    tracker = DialogueStateTracker.from_events("s1", [ActionExecuted("action_session_start"),
                                                      SessionStarted(), ActionExecuted("action_listen")],
                                               DOMAIN.slots)
    for event in _turn("健康码能截图吗") + [SlotSet("lang", "zh")]:
        tracker.update(event)
    asyncio.run(store.save(tracker))
    asyncio.run(store.save(tracker))               # saving twice writes nothing twice
    back = asyncio.run(store.retrieve("s1"))
    assert back is not None and back.get_slot("lang") == "zh"
    assert back.latest_message.text == "健康码能截图吗"
    for event in _turn("那打印呢"):
        back.update(event)
    asyncio.run(store.save(back))
    rows = sqlite3.connect(TMP / "a.db").execute(
        "SELECT type_name, intent_name, action_name FROM events WHERE sender_id='s1' ORDER BY id").fetchall()
    # The session's events since SessionStarted are the tracker; action_session_start precedes it.
    assert len(rows) == 10 and len(back.events) == 9, rows
    assert rows[3] == ("user", "faq", None) and rows[4] == ("action", None, "action_answer_faq"), rows
    assert asyncio.run(store.retrieve("nobody")) is None
    assert asyncio.run(store.keys()) == ["s1"]


def check_retrieve_gives_the_latest_session_and_full_gives_all() -> None:
    store = _store("b.db")
    events = [ActionExecuted("action_session_start"), SessionStarted(), ActionExecuted("action_listen"),
              *_turn("第一次"),
              ActionExecuted("action_session_start"), SessionStarted(), ActionExecuted("action_listen"),
              *_turn("第二次")]
    asyncio.run(store.save(DialogueStateTracker.from_events("s2", events, DOMAIN.slots)))
    latest = asyncio.run(store.retrieve("s2"))
    assert [e.text for e in latest.events if isinstance(e, UserUttered)] == ["第二次"]
    full = asyncio.run(store.retrieve_full_tracker("s2"))
    assert [e.text for e in full.events if isinstance(e, UserUttered)] == ["第一次", "第二次"]
    # A tracker the store did not load is compared with what is stored: nothing doubles.
    asyncio.run(store.save(DialogueStateTracker.from_events("s2", events[7:], DOMAIN.slots)))
    assert len(asyncio.run(store.retrieve_full_tracker("s2")).events) == len(events)


def check_the_table_is_rasas_sql_table_and_files_are_shared() -> None:
    ours = _store("c.db")
    asyncio.run(ours.save(DialogueStateTracker.from_events("s3", _turn("你好", "greet"), DOMAIN.slots)))
    # Rasa's own SQL store reads what ours wrote, and a second process's store sees it too.
    rasa_sql = SQLTrackerStore(domain=DOMAIN, dialect="sqlite", db=str(TMP / "c.db"))
    assert asyncio.run(rasa_sql.retrieve("s3")).latest_message.text == "你好"
    assert asyncio.run(_store("c.db").retrieve("s3")).latest_message.intent["name"] == "greet"
    columns = [r[1] for r in sqlite3.connect(TMP / "c.db").execute("PRAGMA table_info(events)")]
    assert columns == [c.name for c in SQLTrackerStore.SQLEvent.__table__.columns], columns


def check_nlu_results_are_reused_per_text_and_language() -> None:
    from rasa.core.channels.channel import UserMessage
    from channels import rasa_patches

    calls = []

    def fake_graph(self, message, tracker, only_output_properties=True):
        calls.append((message.text, (message.metadata or {}).get("lang")))
        return {"text": message.text, "intent": {"name": "faq", "confidence": 0.9}, "entities": []}

    class Processor:
        graph_runner = object()

    original = rasa_patches._graph_parse_uncached
    rasa_patches._graph_parse_uncached = fake_graph
    try:
        proc = Processor()
        parse = lambda text, meta: rasa_patches._parse_message_with_graph(  # noqa: E731
            proc, UserMessage(text, metadata=meta), None)
        first = parse("健康码能截图吗", {"lang": "zh", "user_id": "u1"})
        first["intent"]["name"] = "changed by a caller"
        again = parse("健康码能截图吗", {"lang": "zh", "signed_in": True})   # other keys: same parse
        assert again["intent"]["name"] == "faq" and calls == [("健康码能截图吗", "zh")], calls
        parse("健康码能截图吗", {"lang": "zh-hant"})
        assert len(calls) == 2
        proc.graph_runner = object()                        # a new model: nothing reused
        parse("健康码能截图吗", {"lang": "zh"})
        assert len(calls) == 3
    finally:
        rasa_patches._graph_parse_uncached = original


def check_action_calls_share_one_session_per_headers_and_loop() -> None:
    from rasa.utils.endpoints import EndpointConfig
    from channels import rasa_patches

    async def sessions():
        a = EndpointConfig("http://127.0.0.1:1/a", token="t")
        b = EndpointConfig("http://127.0.0.1:1/b", token="t")
        other = EndpointConfig("http://127.0.0.1:1/a", headers={"X-Other": "1"})
        async with rasa_patches._endpoint_session(a) as s1, rasa_patches._endpoint_session(b) as s2, \
                rasa_patches._endpoint_session(other) as s3:
            pass
        # The block's end leaves the shared session open for the next call.
        assert s1 is s2 and s1 is not s3 and not s1.closed
        await s1.close()
        await s3.close()
        async with rasa_patches._endpoint_session(a) as s4:   # a closed one is replaced
            assert s4 is not s1 and not s4.closed
        await rasa_patches.close_sessions()                    # at server stop
        assert s4.closed and not rasa_patches._sessions

    asyncio.run(sessions())


def check_action_results_get_the_same_verdict_as_the_full_schema() -> None:
    import jsonschema
    from rasa.core.actions.action import RemoteAction

    from channels import rasa_patches

    schema = RemoteAction.action_response_format_spec()
    action = RemoteAction("action_answer_faq", None)
    good = [
        {"events": [], "responses": []},
        {"events": [{"event": "slot", "name": "lang", "value": "zh", "timestamp": None}],
         "responses": [{"text": "好的", "buttons": [{"title": "是", "payload": "/affirm"}]}]},
        {"events": [{"event": "followup", "name": "action_listen"}, {"event": "bot", "text": "x"}]},
        {"responses": [{"custom": {"meta": {"faq_id": "personal.screenshot"}}}]},
    ]
    bad = [
        {"events": [{"name": "lang"}]},                                   # no "event"
        {"events": [{"event": "no_such_event"}]},
        {"events": [{"event": "slot", "name": "lang", "timestamp": "yesterday"}]},
        {"events": [{"event": "followup"}]},                              # its required name
        {"events": "not a list"},
        {"responses": [1]},
    ]
    for result in good + bad:
        try:
            jsonschema.validate(result, schema)
            expected = True
        except jsonschema.ValidationError:
            expected = False
        try:
            got = rasa_patches._validate_action_result(action, result)
        except jsonschema.ValidationError:
            got = False
        assert got == expected, (result, expected, got)
    assert all(rasa_patches._validate_action_result(action, r) for r in good)


def check_the_fast_classifier_builds_rasas_own_feature_matrix() -> None:
    import numpy as np
    import scipy.sparse as sp
    from components.fast_logistic_regression import feature_matrix
    from rasa.nlu.classifiers.logistic_regression_classifier import LogisticRegressionClassifier
    from rasa.shared.nlu.training_data.features import Features
    from rasa.shared.nlu.training_data.message import Message

    rng = np.random.default_rng(7)

    def sparse(rows: int, cols: int):
        m = sp.random(rows, cols, density=0.3, format="coo", random_state=int(rng.integers(1 << 30)))
        return m

    messages = []
    for i in range(6):
        m = Message(data={"text": f"t{i}"})
        n_tokens = int(rng.integers(1, 6))
        m.add_features(Features(sparse(n_tokens, 7), "sequence", "text", "RegexFeaturizer"))
        m.add_features(Features(sparse(1, 7), "sentence", "text", "RegexFeaturizer"))
        m.add_features(Features(sparse(n_tokens, 40), "sequence", "text", "CountVectorsFeaturizer"))
        m.add_features(Features(sparse(1, 40), "sentence", "text", "CountVectorsFeaturizer"))
        if i % 2:   # a dense sentence feature on some messages: it goes after the sparse ones
            m.add_features(Features(np.where(rng.random((1, 5)) > 0.5, rng.random((1, 5)), 0.0),
                                    "sentence", "text", "Dense"))
        m.add_features(Features(sparse(1, 9), "sentence", "intent", "Other"))   # not TEXT: ignored
        messages.append(m)
    for group in ([messages[0]], messages[0::2], messages[1::2][:1]):
        want = LogisticRegressionClassifier._create_X(None, group).tocsr()
        got = feature_matrix(group)
        assert got.shape == want.shape and got.dtype == want.dtype, (got.shape, want.shape, got.dtype, want.dtype)
        assert (got != want).nnz == 0
        assert got.has_canonical_format


def check_the_plain_graph_runner_gives_what_dask_gave() -> None:
    """rasa_patches._run_graph against Rasa's own DaskGraphRunner.run on the trained model:
    the same parse for each text and the same policy prediction for each tracker."""
    from channels import rasa_patches
    from rasa.core.agent import Agent
    from rasa.engine.constants import PLACEHOLDER_MESSAGE, PLACEHOLDER_TRACKER
    from rasa.engine.runner.dask import DaskGraphRunner
    from rasa.core.channels.channel import UserMessage

    model = json.loads((Path("..") / "var" / "artifacts.json").read_text())["rasa_model"]
    agent = Agent.load(model)
    runner, meta = agent.processor.graph_runner, agent.processor.model_metadata
    dask_run = DaskGraphRunner.run
    assert dask_run is not rasa_patches._run_graph
    empty = DialogueStateTracker.from_events("g", [], DOMAIN.slots)
    texts = ["你好", "健康码可以截图吗 123", "为什么我的码是橙色", "转人工", "Can I print my code?",
             '/feedback{"helpful":"yes","faq_id":"personal.screenshot"}', "😀" * 5, "x"]
    for text in texts:
        for lang in (None, "en"):
            out = []
            for run in (dask_run, rasa_patches._run_graph):
                message = UserMessage(text, metadata={"lang": lang} if lang else None)
                result = run(runner, inputs={PLACEHOLDER_MESSAGE: [message], PLACEHOLDER_TRACKER: empty},
                             targets=[meta.nlu_target])
                out.append(result[meta.nlu_target][0].as_dict(only_output_properties=True))
            assert out[0] == out[1], (text, out)
            assert out[0].get("intent", {}).get("name"), out[0]

    def tracker(intent: str, then: list) -> DialogueStateTracker:
        return DialogueStateTracker.from_events("g", [
            ActionExecuted("action_session_start"), SessionStarted(), ActionExecuted("action_listen"),
            UserUttered("q", {"name": intent, "confidence": 0.9}), *then], DOMAIN.slots)

    cases = [tracker(i, []) for i in ("greet", "faq", "why_orange", "request_human", "nlu_fallback", "deny")]
    cases += [tracker("faq", [ActionExecuted("action_answer_faq")]),
              tracker("deny", [SlotSet("faq_decision", "clarify")])]
    for t in cases:
        got = [run(runner, inputs={PLACEHOLDER_TRACKER: t}, targets=[meta.core_target])[meta.core_target]
               for run in (dask_run, rasa_patches._run_graph)]
        assert got[0].probabilities == got[1].probabilities and got[0].policy_name == got[1].policy_name, got
        assert max(got[0].probabilities) > 0


def main() -> None:
    results = {}
    for name, fn in sorted(globals().items()):
        if name.startswith("check_") and callable(fn):
            try:
                fn()
                results[name] = "ok"
            except Exception:
                results[name] = traceback.format_exc()
    print(json.dumps(results))


if __name__ == "__main__":
    main()
