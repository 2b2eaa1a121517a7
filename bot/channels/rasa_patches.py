"""Fixes to Rasa 3.6 internals that cost us latency, applied when the hc channel is imported.

Each keeps Rasa's behaviour and only removes repeated work; measured with py-spy on a chat turn.

1. RemoteAction validates every action-server response with `jsonschema.validate`, which re-checks
   the (constant) schema itself on every call: measured with py-spy, two thirds of the Rasa
   process's CPU per chat turn. The same validation with the validator built once keeps the
   check and drops that cost; each event is checked against the one `oneOf` alternative of its
   own type (same verdict, the alternatives' consts being distinct) instead of all 23.
2. Event.resolve_by_type walks every Event subclass (recursively, with an abstractness check)
   for every event of every tracker it deserialises; the answer for a type name never changes
   once the classes are imported, so it is remembered.
3. The channel needs the intent NLU chose; reading it back from the tracker store costs a second
   tracker load per turn. The parse result is kept in a context variable instead (the whole
   turn runs in one asyncio task, so the channel sees what parse_message set).
4. SQLTrackerStore.save (used for PostgreSQL; SQLite has its own store in bot/stores/) finds
   the events to append by counting the stored ones with a subquery (~10 % of the CPU). A
   tracker this store loaded already knows that number: it is how many events it was built
   from, so save uses it (and still counts for any other tracker).
   The lock store serialises turns per conversation, so nobody else appends in between.
5. The NLU graph (jieba, featurizers, DIET: ~40 % of the CPU of a turn) is a pure function of
   the text and the metadata the pipeline reads (`lang`), so its output is remembered for the
   latest texts: greetings, button payloads and the popular questions asked the same way again
   skip it. Each caller gets its own copy (Rasa stores and amends parse data).
6. The processor deep-copies events and parse data for debug log lines even when debug logging
   is off (~5 %); the copy is made only when the `rasa` logger would print them.
7. Every action call opened a new aiohttp session and TCP connection (~5 %); one kept-alive
   session per endpoint and event loop is reused, dropping idle connections before the app's
   server (uvicorn, 5 s) would close them under a request.
8. Every graph run (the NLU graph and the policies, twice a turn) derived the minimal schema for
   its targets again (a recursive walk with copies) and handed the nodes to dask's scheduler:
   ~19 % of the Rasa process's CPU per turn, for graphs of a dozen nodes that run one after the
   other in one thread anyway. The schema is fixed once the model is loaded, so the minimal one
   is kept per set of targets, and the nodes are called depth first, each once, its inputs
   being the outputs of the nodes it needs, as dask.get did (tests/rasa_side/checks.py compares
   both runners on the trained model).
"""
from __future__ import annotations

import asyncio
import copy
import json
import logging
from collections import OrderedDict
from contextvars import ContextVar
from typing import Any, Dict, Optional, Text, Tuple

import aiohttp
import jsonschema
from rasa.core import processor as rasa_processor
from rasa.engine.exceptions import GraphRunError
from rasa.engine.runner.dask import DaskGraphRunner
from rasa.core.processor import MessageProcessor
from rasa.core import tracker_store as rasa_tracker_store
from rasa.core.actions import action as rasa_action
from rasa.shared.core import events as rasa_events
from rasa.utils import endpoints as rasa_endpoints
from rasa.utils.endpoints import EndpointConfig

_validator = None


def _validators(schema: Dict[Text, Any]) -> Tuple[Any, Dict[Any, Any]]:
    """The response schema split in two: the envelope with each event only checked to be an
    object, and one validator per event type (the event schema's common part with the one
    `oneOf` alternative whose `event` const names that type). Each event then meets the one
    alternative that can match it instead of all 23 of `oneOf`: the same verdict (the consts are
    distinct, so at most one alternative ever matches), without the walk that cost ~8 % of a
    turn's CPU even with the validator built once."""
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    item = schema["properties"]["events"]["items"]
    common = {k: v for k, v in item.items() if k != "oneOf"}
    envelope = copy.deepcopy(schema)
    envelope["properties"]["events"]["items"] = {"type": "object"}
    by_type = {alt["properties"]["event"]["const"]: cls({**common, "allOf": [alt]}) for alt in item["oneOf"]}
    return cls(envelope), by_type


def _validate_action_result(self: rasa_action.RemoteAction, result: Dict[Text, Any]) -> bool:
    global _validator
    if _validator is None:
        _validator = _validators(self.action_response_format_spec())
    envelope, by_type = _validator
    try:
        envelope.validate(result)
        for event in result.get("events") or ():
            kind = event.get("event")
            check = by_type.get(kind) if isinstance(kind, str) else None
            if check is None:
                raise jsonschema.ValidationError(f"{kind!r} is not a known event type")
            check.validate(event)
        return True
    except jsonschema.ValidationError as e:
        e.message += (". Failed to validate Action server response from API, make sure your "
                      "response from the Action endpoint is valid.")
        raise e


_resolve_uncached = rasa_events.Event.resolve_by_type
_event_classes: Dict[Text, Any] = {}


def _resolve_by_type(type_name: Text, default: Any = None) -> Any:
    cls = _event_classes.get(type_name)
    if cls is None:
        cls = _resolve_uncached(type_name, default)
        if cls is not None and getattr(cls, "type_name", None) == type_name:
            _event_classes[type_name] = cls
    return cls


last_parse: ContextVar[Optional[Dict[Text, Any]]] = ContextVar("hc_last_parse", default=None)
_parse_uncached = MessageProcessor.parse_message


async def _parse_message(self: MessageProcessor, *args: Any, **kwargs: Any) -> Dict[Text, Any]:
    parsed = await _parse_uncached(self, *args, **kwargs)
    last_parse.set(parsed)
    return parsed


_STORED = "_hc_stored_events"
_sql_retrieve_uncached = rasa_tracker_store.SQLTrackerStore._retrieve
_sql_save_uncached = rasa_tracker_store.SQLTrackerStore.save
_sql_additional_uncached = rasa_tracker_store.SQLTrackerStore._additional_events


async def _sql_retrieve(self: Any, sender_id: Text, fetch_events_from_all_sessions: bool) -> Any:
    tracker = await _sql_retrieve_uncached(self, sender_id, fetch_events_from_all_sessions)
    if tracker is not None and not fetch_events_from_all_sessions:
        setattr(tracker, _STORED, len(tracker.events))
    return tracker


def _sql_additional_events(self: Any, session: Any, tracker: Any) -> Any:
    import itertools

    stored = getattr(tracker, _STORED, None)
    if stored is None or stored > len(tracker.events):
        return _sql_additional_uncached(self, session, tracker)
    return itertools.islice(tracker.events, stored, len(tracker.events))


async def _sql_save(self: Any, tracker: Any) -> None:
    await _sql_save_uncached(self, tracker)
    if getattr(tracker, _STORED, None) is not None:
        setattr(tracker, _STORED, len(tracker.events))


# The conversation's reply language after the turn (slot `lang`), for the app to put replies in
# the user's script: a button press or a short ambiguous text carries no language of its own.
last_lang: ContextVar[Optional[Text]] = ContextVar("hc_last_lang", default=None)
_save_tracker_plain = MessageProcessor.save_tracker


async def _save_tracker(self: MessageProcessor, tracker: Any) -> None:
    last_lang.set(tracker.get_slot("lang"))
    await _save_tracker_plain(self, tracker)


# Metadata keys the NLU pipeline reads (components/lang_metadata.py); any other metadata
# (signed_in, user_id) cannot change a parse and must not split the cache.
NLU_METADATA_KEYS = ("lang",)
NLU_CACHE_SIZE = 4096
_nlu_cache: "OrderedDict[Tuple[Text, Text, bool], Dict[Text, Any]]" = OrderedDict()
_nlu_model: Any = None
_graph_parse_uncached = MessageProcessor._parse_message_with_graph


def _parse_message_with_graph(self: MessageProcessor, message: Any, tracker: Any,
                              only_output_properties: bool = True) -> Dict[Text, Any]:
    global _nlu_model
    if _nlu_model is not self.graph_runner:   # another model loaded: nothing cached applies
        _nlu_cache.clear()
        _nlu_model = self.graph_runner
    metadata = message.metadata or {}
    key = (message.text or "", json.dumps([metadata.get(k) for k in NLU_METADATA_KEYS]),
           only_output_properties)
    hit = _nlu_cache.get(key)
    if hit is None:
        hit = _graph_parse_uncached(self, message, tracker, only_output_properties)
        _nlu_cache[key] = copy.deepcopy(hit)
        while len(_nlu_cache) > NLU_CACHE_SIZE:
            _nlu_cache.popitem(last=False)
        return hit
    _nlu_cache.move_to_end(key)
    return copy.deepcopy(hit)


class _DebugOnlyCopy:
    """Stands in for the `copy` module inside rasa.core.processor, which uses it only to
    snapshot values for debug log lines."""
    _log = logging.getLogger("rasa")

    @classmethod
    def deepcopy(cls, value: Any, memo: Any = None) -> Any:
        return copy.deepcopy(value, memo) if cls._log.isEnabledFor(logging.DEBUG) else value


class _Borrowed:
    """`async with` over a shared session that must outlive the block."""
    def __init__(self, session: aiohttp.ClientSession) -> None:
        self._session = session

    async def __aenter__(self) -> aiohttp.ClientSession:
        return self._session

    async def __aexit__(self, *exc: Any) -> None:
        return None


_sessions: Dict[Tuple[Text, Text, int], aiohttp.ClientSession] = {}


def _endpoint_session(self: EndpointConfig) -> _Borrowed:
    # Keyed by what the session itself carries (the URL comes with each request), not by the
    # config object: a session is never handed to a config with other headers or credentials.
    loop = asyncio.get_running_loop()
    key = (json.dumps(self.headers, sort_keys=True, default=str),
           json.dumps(self.basic_auth, sort_keys=True, default=str), id(loop))
    session = _sessions.get(key)
    if session is None or session.closed:
        auth = (aiohttp.BasicAuth(self.basic_auth["username"], self.basic_auth["password"])
                if self.basic_auth else None)
        session = aiohttp.ClientSession(
            headers=self.headers, auth=auth,
            timeout=aiohttp.ClientTimeout(total=rasa_endpoints.DEFAULT_REQUEST_TIMEOUT),
            connector=aiohttp.TCPConnector(keepalive_timeout=3, limit=64))
        _sessions[key] = session
    return _Borrowed(session)


async def close_sessions() -> None:
    """At server stop: the kept-alive sessions are closed, not left to the garbage collector."""
    while _sessions:
        _, session = _sessions.popitem()
        await session.close()


_MINIMAL = "_hc_minimal_schemas"


def _run_graph(self: DaskGraphRunner, inputs: Optional[Dict[Text, Any]] = None,
               targets: Optional[Any] = None) -> Dict[Text, Any]:
    run_targets = list(targets if targets else self._graph_schema.target_names)
    cache = self.__dict__.setdefault(_MINIMAL, {})
    key = tuple(run_targets)
    schema = cache.get(key)
    if schema is None:
        schema = cache[key] = self._graph_schema.minimal_graph_schema(run_targets)
    outputs: Dict[Text, Any] = {}
    for name, value in (inputs or {}).items():
        if isinstance(value, str) and value in schema.nodes:
            raise GraphRunError(f"Input value '{value}' clashes with a node name. Make sure that none "
                                "of the input names passed to the `run` method are the same as node "
                                "names in the graph schema.")
        outputs[name] = (name, value)

    def output(name: Text) -> Any:
        if name not in outputs:
            needs = [output(n) for n in schema.nodes[name].needs.values()]
            outputs[name] = self._instantiated_nodes[name](*needs)
        return outputs[name]

    try:
        return dict(output(t) for t in run_targets)
    except RuntimeError as e:
        raise GraphRunError("Error running runner.") from e


def apply() -> None:
    DaskGraphRunner.run = _run_graph
    MessageProcessor._parse_message_with_graph = _parse_message_with_graph
    rasa_processor.copy = _DebugOnlyCopy
    EndpointConfig.session = _endpoint_session
    MessageProcessor.save_tracker = _save_tracker
    rasa_tracker_store.SQLTrackerStore._retrieve = _sql_retrieve
    rasa_tracker_store.SQLTrackerStore._additional_events = _sql_additional_events
    rasa_tracker_store.SQLTrackerStore.save = _sql_save
    MessageProcessor.parse_message = _parse_message
    rasa_action.RemoteAction._validate_action_result = _validate_action_result
    rasa_events.Event.resolve_by_type = staticmethod(_resolve_by_type)
