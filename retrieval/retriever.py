"""The FAQ retriever: BM25 + two sentence encoders fused per entry, and the answer / clarify / none
call, taken in a cascade so the expensive encoder runs only when the cheap evidence is unsure.

    retriever = Retriever(kb, e5, params=params, use=USEEncoder())   # validates only
    retriever.warm_up()                                               # tokenizer, encoders, indexes
    result = retriever.search("健康码能截图吗", k=3)                    # -> SearchResult

Signals per entry, each mapped to [0, 1]: BM25 (jieba words + character bigrams, against the
entry's phrasings and, discounted, its answer), e5 (multilingual-e5-small) and USE (multilingual
Universal Sentence Encoder). The cascade: BM25 and USE cost ~3 ms; when the two agree on a clear
winner the question is answered from them, when neither finds anything close it is "none", and
only the rest pays for e5 (~28 ms of CPU). Every weight and threshold sits in one `Params`
object; `retrieval.calibrate` fits them on the KB's own phrasings (leave-one-out) and a list of
out-of-scope questions.
"""
from __future__ import annotations

import threading
from concurrent.futures import Future
from collections import Counter, OrderedDict
from dataclasses import asdict, dataclass, field
from typing import Literal

import numpy as np

from retrieval import tokenize
from retrieval.bm25 import BM25, BM25Params
from retrieval.dense import BatchingQueryEncoder, DenseIndex, QueryEncoder, limit_faiss_threads
from retrieval.text import for_encoder, is_blank_or_noise, is_smalltalk, match_key
from retrieval.types import Hit, KnowledgeBase, SearchResult

DISABLED = 2.0   # a threshold no score in [0, 1] reaches


@dataclass(frozen=True)
class Params:
    bm25_only: bool = False
    bm25_k1: float = 1.2
    bm25_b: float = 0.75
    bigrams: bool = True
    answer_weight: float = 0.5        # an answer-text match counts this much of a question match
    # e5 prefix given to KB phrasings: "passage" (asymmetric, as e5 was trained) or "query"
    # (symmetric: both sides are questions). Measured on the dev set with everything else
    # calibrated alike: passage top-1 0.90, query 0.76.
    phrasing_side: Literal["passage", "query"] = "passage"
    dense_top: int = 2                # entry's dense score: mean cosine of its best this-many phrasings
    # fused = w_dense·e5 + w_use·USE + (1 − w_dense − w_use)·bm25
    w_dense: float = 0.6
    w_use: float = 0.0                # 0: no USE (indexes built before it existed)
    dense_lo: float = 0.75            # e5 cosine mapped to 0 (unrelated text scores about this)
    dense_hi: float = 0.95            # e5 cosine mapped to 1
    use_top: int = 2
    use_lo: float = 0.2
    use_hi: float = 0.8
    t_answer: float = 0.55            # top score needed to answer outright
    margin: float = 0.05              # ... and this lead over the runner-up, else clarify
    # ... or, when every signal ranks the same entry first (independent evidence agreeing), this
    # lower top score and margin suffice.
    t_agree: float = DISABLED
    margin_agree: float = 0.0
    t_clarify: float = 0.35           # below this nothing is close: "none"
    # The cascade (needs USE): answer from BM25 + USE alone when both rank the same entry first
    # with at least cheap_t_answer / cheap_margin; say "none" when their best is below
    # cheap_t_none. DISABLED / 0 turn either way off.
    cheap_t_answer: float = DISABLED
    cheap_margin: float = 0.0
    cheap_t_none: float = 0.0
    calibration: dict = field(default_factory=dict, compare=False)   # how the values were fitted

    @property
    def t_suggest(self) -> float:
        """Below a clarification but at least half-way there: worth offering as "related"."""
        return self.t_clarify / 2

    @property
    def w_bm25(self) -> float:
        return max(0.0, 1.0 - self.w_dense - self.w_use)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Params":
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass(frozen=True)
class Phrasings:
    """Every question text of the KB, one row each, with the entry (index) it belongs to."""
    texts: tuple[str, ...]
    owners: tuple[int, ...]
    alternate: tuple[bool, ...]      # our own phrasing (not the seed question or its translation)

    @classmethod
    def of(cls, kb: KnowledgeBase) -> "Phrasings":
        texts, owners, alternate = [], [], []
        for i, entry in enumerate(kb.entries):
            seen = set()
            official = {entry.question, entry.question_en}
            for text in entry.phrasings():
                text = (text or "").strip()
                if text and text not in seen:
                    seen.add(text)
                    texts.append(text)
                    owners.append(i)
                    alternate.append(text not in official)
        return cls(tuple(texts), tuple(owners), tuple(alternate))


@dataclass
class Components:
    """Raw evidence for one query, kept apart so calibration can refit the fusion cheaply."""
    bm25_entries: np.ndarray       # relative BM25 vs each entry's phrasings taken together, [0, 1]
    bm25_answers: np.ndarray       # relative BM25 vs each entry's answer text, [0, 1]
    dense_rows: np.ndarray | None  # e5 cosine vs each phrasing
    use_rows: np.ndarray | None = None   # USE cosine vs each phrasing


def group_rows(owners: np.ndarray, n_entries: int) -> np.ndarray:
    """(n_entries, most phrasings) matrix of row numbers per entry, padded with -1."""
    width = max(1, int(np.bincount(owners, minlength=n_entries).max())) if len(owners) else 1
    groups = np.full((n_entries, width), -1, dtype=np.int64)
    fill = np.zeros(n_entries, dtype=np.int64)
    for row, owner in enumerate(owners):
        groups[owner, fill[owner]] = row
        fill[owner] += 1
    return groups


def dense_entry_scores(rows: np.ndarray, groups: np.ndarray, top: int,
                       exclude_row: int | None = None) -> np.ndarray:
    """Mean cosine of each entry's `top` best phrasings (fewer if it has fewer)."""
    ext = np.append(rows.astype(np.float32), np.float32(-np.inf))   # index -1 → padding
    if exclude_row is not None:
        ext[exclude_row] = -np.inf
    m = ext[groups]
    top = max(1, min(top, m.shape[1]))
    best = -np.sort(-m, axis=1)[:, :top]
    finite = np.isfinite(best)
    total = np.where(finite, best, 0.0).sum(axis=1)
    count = finite.sum(axis=1)
    return np.where(count > 0, total / np.maximum(count, 1), -1.0).astype(np.float32)


def _scale(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    return np.clip((x - lo) / max(hi - lo, 1e-6), 0.0, 1.0)


@dataclass
class Signals:
    """Per-entry evidence in [0, 1]; None where that signal was not computed."""
    bm25: np.ndarray
    dense: np.ndarray | None
    use: np.ndarray | None


def signals(c: Components, groups: np.ndarray, p: Params,
            exclude_row: int | None = None) -> Signals:
    """exclude_row hides one phrasing from the encoder sides (leave-one-out calibration; the
    lexical side was computed without it already)."""
    bm = np.maximum(c.bm25_entries, p.answer_weight * c.bm25_answers)
    dn = un = None
    # The mean of the best two phrasings beats the single best one (leave-one-out top-1 0.71
    # against 0.66 on our KB): one stray phrasing close to a neighbour's question no longer wins.
    if c.dense_rows is not None and not p.bm25_only:
        dn = _scale(dense_entry_scores(c.dense_rows, groups, p.dense_top, exclude_row),
                    p.dense_lo, p.dense_hi)
    if c.use_rows is not None and not p.bm25_only and p.w_use > 0:
        un = _scale(dense_entry_scores(c.use_rows, groups, p.use_top, exclude_row),
                    p.use_lo, p.use_hi)
    return Signals(bm, dn, un)


def combine(s: Signals, p: Params) -> np.ndarray:
    """Entry scores in [0, 1]: the weighted sum of the signals present (weights renormalised
    over them, so the cheap stage's BM25 + USE score sits on the same scale)."""
    parts = [(p.w_bm25, s.bm25)]
    if s.dense is not None:
        parts.append((p.w_dense, s.dense))
    if s.use is not None:
        parts.append((p.w_use, s.use))
    total = sum(w for w, _ in parts)
    if total <= 0:
        return s.bm25
    return sum(w * x for w, x in parts) / total


# A signal only votes for its winner with at least this score: e5 at 0.09 beside a BM25 and
# USE match on one shared noun ("How do I renew my passport?" → overseas.foreign_passport) is
# e5 saying "unrelated", not agreeing.
AGREE_FLOOR = 0.25


def agree(s: Signals, scores: np.ndarray) -> bool:
    """Every signal present (at least two) ranks the fused winner first, each with a real score."""
    present = [x for x in (s.bm25, s.dense, s.use) if x is not None]
    if len(present) < 2:
        return False
    top = int(np.argmax(scores))
    return all(int(np.argmax(x)) == top and x[top] >= AGREE_FLOOR for x in present)


def fuse(c: Components, groups: np.ndarray, p: Params,
         exclude_row: int | None = None) -> np.ndarray:
    """Entry scores in [0, 1] from every signal the components hold."""
    return combine(signals(c, groups, p, exclude_row), p)


def top_two(scores: np.ndarray) -> tuple[float, float]:
    if scores.size == 0:
        return 0.0, 0.0
    if scores.size == 1:
        return float(scores[0]), 0.0
    part = np.partition(scores, scores.size - 2)
    return float(part[-1]), float(part[-2])


def decide(scores_sorted: np.ndarray, p: Params, agreed: bool = False) -> str:
    """answer: confident and clearly ahead; clarify: something close but not sure; none."""
    if scores_sorted.size == 0:
        return "none"
    top = float(scores_sorted[0])
    second = float(scores_sorted[1]) if scores_sorted.size > 1 else 0.0
    if top < p.t_clarify:
        return "none"
    if top >= p.t_answer and top - second >= p.margin:
        return "answer"
    if agreed and top >= p.t_agree and top - second >= p.margin_agree:
        return "answer"
    return "clarify"


def decide_cheap(s: Signals, scores: np.ndarray, p: Params) -> str | None:
    """The cascade's first stage on BM25 + USE: "answer", "none", or None (ask e5)."""
    top, second = top_two(scores)
    if top < p.cheap_t_none:
        return "none"
    if (s.use is not None and agree(s, scores) and top >= p.cheap_t_answer
            and top - second >= p.cheap_margin):
        return "answer"
    return None


class Retriever:
    def __init__(self, kb: KnowledgeBase, encoder: QueryEncoder | None = None, *,
                 params: Params | None = None, dense: DenseIndex | None = None,
                 use: QueryEncoder | None = None, use_vectors: np.ndarray | None = None,
                 batching: bool = True, cache_size: int = 1024):
        params = params or Params(bm25_only=encoder is None)
        if not kb.entries:
            raise ValueError("the knowledge base has no entries")
        if not params.bm25_only and encoder is None:
            raise ValueError("an encoder is required unless params.bm25_only is set")
        if not (0.0 <= params.w_dense <= 1.0 and 0.0 <= params.w_use <= 1.0
                and params.w_dense + params.w_use <= 1.0 + 1e-9):
            raise ValueError(f"w_dense and w_use must be in [0, 1] and sum to at most 1, got "
                             f"{params.w_dense}, {params.w_use}")
        if not params.t_clarify <= params.t_answer:
            raise ValueError("t_clarify must not exceed t_answer")
        if params.w_use > 0 and not params.bm25_only and use is None:
            raise ValueError("params give USE a weight but no USE encoder was passed")
        self.kb = kb
        self.encoder = None if params.bm25_only else encoder
        self.use = None if (params.bm25_only or params.w_use <= 0) else use
        self.params = params
        self.phrasings = Phrasings.of(kb)
        self.owners = np.asarray(self.phrasings.owners, dtype=np.int64)
        self.groups = group_rows(self.owners, len(kb.entries))
        if dense is not None and dense.index.ntotal != len(self.phrasings.texts):
            raise ValueError("the dense index does not match the KB's phrasings (stale index?)")
        if use_vectors is not None and len(use_vectors) != len(self.phrasings.texts):
            raise ValueError("the USE vectors do not match the KB's phrasings (stale index?)")
        self.dense = dense
        self.use_vectors = use_vectors
        self._batching = batching
        self._batcher: BatchingQueryEncoder | None = None
        self._use_batcher: BatchingQueryEncoder | None = None
        self._bm25_entries: BM25 | None = None
        self._phrasing_terms: list[list[str]] = []
        self._bm25_answers: BM25 | None = None
        self._cache: OrderedDict[tuple[str, str], np.ndarray] = OrderedDict()
        self._cache_size = cache_size
        self._cache_lock = threading.Lock()
        # Whole results by (question, k): users ask the popular questions in the same words again
        # and again, and a repeat then costs a dictionary lookup instead of tokenising, BM25 and
        # the encoders. Never shared with another Retriever (with_params, a reloaded KB): the
        # result depends on the KB and on every parameter.
        self._results: OrderedDict[tuple[str, int], SearchResult] = OrderedDict()
        self._pending: dict[tuple[str, int], Future] = {}      # searches running now, by key
        # Which way each search went (cheap answer / cheap none / e5), for measuring the cascade.
        self.paths: Counter[str] = Counter()
        # A question asked exactly as a KB phrasing is that entry's, whatever the fused scores
        # say (two official headings differing in one word can both saturate the fusion).
        self._exact = {match_key(t): o for t, o in zip(self.phrasings.texts, self.phrasings.owners)}
        self._ready = False
        self._closed = False    # close() was called: no batching threads from here on

    @property
    def ready(self) -> bool:
        return self._ready

    @property
    def cascade(self) -> bool:
        p = self.params
        return (self.encoder is not None and self.use is not None
                and (p.cheap_t_answer <= 1.0 or p.cheap_t_none > 0.0))

    # --- building ---------------------------------------------------------------------------
    def close(self, timeout: float | None = 5.0) -> None:
        """Let go of background work (the batching threads), so a swapped-out retriever and its
        model can be freed. Safe while searches run on it, from any thread: every query already
        handed to a batcher is answered, later ones encode directly. Returns once the threads
        have exited (each given up to `timeout` seconds to finish the batch it is encoding).
        A closed retriever keeps answering; warm_up() after close starts no threads."""
        self._closed = True
        for batcher in (self._batcher, self._use_batcher):
            if batcher is not None:
                batcher.close(timeout)

    def warm_up(self) -> None:
        """Load the tokenizer and the encoders, build BM25, encode phrasings if no index given."""
        if self._ready:
            return
        tokenize.warm_up()
        terms = lambda t: tokenize.terms(t, bigrams=self.params.bigrams)  # noqa: E731
        self._phrasing_terms = [terms(t) for t in self.phrasings.texts]
        self._bm25_entries = self._entry_bm25()
        self._bm25_answers = BM25([terms(e.answer + "\n" + e.answer_en) for e in self.kb.entries],
                                  self._bm25_params())
        if self.encoder is not None:
            limit_faiss_threads()
            _limit_blas_threads()
            self.encoder.warm_up()
            if self.dense is None:
                self.dense = DenseIndex(self.encode_phrasings(self.params.phrasing_side),
                                        self.owners, len(self.kb.entries))
            if self._batching and not self._closed:
                self._batcher = BatchingQueryEncoder(self.encoder)
        if self.use is not None:
            self.use.warm_up()
            if self.use_vectors is None:
                self.use_vectors = self.encode_phrasings_use()
            if self._batching and not self._closed:
                # USE runs for every question (the cascade's first stage): batched, concurrent
                # questions cost ~0.6 ms each instead of ~1.7 ms one by one.
                self._use_batcher = BatchingQueryEncoder(self.use)
        self._ready = True

    def _bm25_params(self) -> BM25Params:
        return BM25Params(self.params.bm25_k1, self.params.bm25_b)

    def _entry_bm25(self, exclude_row: int | None = None) -> BM25:
        # One lexical document per entry, all its phrasings together: a question shares a word
        # with one phrasing and another word with the next far more often than both with one
        # (leave-one-out top-1 0.60 against 0.44 for the best single phrasing).
        docs: list[list[str]] = [[] for _ in self.kb.entries]
        for row, (owner, terms) in enumerate(zip(self.phrasings.owners, self._phrasing_terms)):
            if row != exclude_row:
                docs[owner].extend(terms)
        return BM25(docs, self._bm25_params())

    def encode_phrasings(self, side: str) -> np.ndarray:
        texts = [for_encoder(t) for t in self.phrasings.texts]
        if side == "query":
            return self.encoder.encode_queries(texts)
        return self.encoder.encode_passages(texts)

    def encode_phrasings_use(self) -> np.ndarray:
        return self.use.encode_passages([for_encoder(t) for t in self.phrasings.texts])

    def with_params(self, params: Params) -> "Retriever":
        """Same KB, encoders and built indexes, other weights and thresholds."""
        if params.phrasing_side != self.params.phrasing_side and self.dense is not None:
            raise ValueError("changing phrasing_side needs a new dense index")
        other = Retriever(self.kb, self.encoder, params=params, dense=self.dense,
                          use=self.use, use_vectors=self.use_vectors,
                          batching=self._batching, cache_size=self._cache_size)
        if self._ready:
            other._bm25_entries, other._bm25_answers = self._bm25_entries, self._bm25_answers
            other._phrasing_terms = self._phrasing_terms
            other._batcher = self._batcher
            other._use_batcher = self._use_batcher
            other._cache = self._cache
            other._cache_lock = self._cache_lock
            other._ready = other.use is None or other.use_vectors is not None
            if not other._ready:
                other.warm_up()
        return other

    # --- querying ---------------------------------------------------------------------------
    def _cached(self, kind: str, text: str, encode) -> np.ndarray:
        key = (kind, text)
        with self._cache_lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
                return hit
        vec = encode(text)
        if self._cache_size:
            with self._cache_lock:
                self._cache[key] = vec
                while len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
        return vec

    def _query_vector(self, text: str) -> np.ndarray:
        return self._cached("e5", text, lambda t: _encode_one(self._batcher, self.encoder, t))

    def _use_vector(self, text: str) -> np.ndarray:
        return self._cached("use", text, lambda t: _encode_one(self._use_batcher, self.use, t))

    def components(self, query: str, qvec: np.ndarray | None = None,
                   exclude_row: int | None = None, *, uvec: np.ndarray | None = None,
                   dense: bool = True) -> Components:
        """exclude_row: score the lexical side as if that phrasing were not in the KB.
        dense=False leaves e5 out (the cascade's cheap stage)."""
        if not self._ready:
            raise RuntimeError("call warm_up() before searching")
        q_terms = tokenize.terms(query, bigrams=self.params.bigrams)
        bm25 = self._bm25_entries if exclude_row is None else self._entry_bm25(exclude_row)
        entries = bm25.relative_scores(q_terms)
        answers = self._bm25_answers.relative_scores(q_terms)
        use_rows = None
        if self.use is not None:
            if uvec is None:
                uvec = self._use_vector(for_encoder(query))
            use_rows = (self.use_vectors @ np.asarray(uvec, dtype=np.float32).reshape(-1))
        c = Components(entries, answers, None, use_rows)
        if dense:
            self.add_dense(c, query, qvec)
        return c

    def add_dense(self, c: Components, query: str, qvec: np.ndarray | None = None) -> Components:
        if self.encoder is not None and c.dense_rows is None:
            if qvec is None:
                qvec = self._query_vector(for_encoder(query))
            c.dense_rows = self.dense.row_scores(qvec)[0]
        return c

    def entry_scores(self, query: str) -> np.ndarray:
        return fuse(self.components(query), self.groups, self.params)

    def cached_result(self, query: str, k: int = 3) -> SearchResult | None:
        """The result of an earlier identical search, or None: cheap enough to call on the event
        loop before handing a search to a worker thread."""
        key = (query, max(1, int(k)))
        with self._cache_lock:
            hit = self._results.get(key)
            if hit is not None:
                self._results.move_to_end(key)
                self.paths["cached"] += 1
        return hit

    def search(self, query: str, k: int = 3) -> SearchResult:
        if not self._ready:
            raise RuntimeError("call warm_up() before searching")
        k = max(1, int(k))
        hit = self.cached_result(query, k)
        if hit is not None:
            return hit
        if not self._cache_size:
            return self._search(query, k)
        key = (query, k)
        with self._cache_lock:
            hit = self._results.get(key)
            if hit is not None:
                return hit
            pending = self._pending.get(key)
            mine = pending is None
            if mine:
                pending = self._pending[key] = Future()
        if not mine:
            # The same search is running in another thread (the chat service's look-ahead, or a
            # user sending the same question twice): wait for it rather than do it again.
            return pending.result(timeout=30)
        try:
            result = self._search(query, k)
        except BaseException as exc:
            with self._cache_lock:
                self._pending.pop(key, None)
            pending.set_exception(exc)
            raise
        with self._cache_lock:
            self._results[key] = result
            while len(self._results) > self._cache_size:
                self._results.popitem(last=False)
            self._pending.pop(key, None)
        pending.set_result(result)
        return result

    def _search(self, query: str, k: int) -> SearchResult:
        if is_blank_or_noise(query) or is_smalltalk(query):
            self.paths["smalltalk"] += 1
            return SearchResult(query=query, decision="none", results=(), kb_version=self.kb.version)
        p = self.params
        exact = self._exact.get(match_key(query))
        c = self.components(query, dense=not self.cascade)
        decision = None
        if self.cascade:
            s = signals(c, self.groups, p)
            scores = combine(s, p)
            decision = "answer" if exact is not None else decide_cheap(s, scores, p)
            if decision is not None:
                self.paths["exact" if exact is not None else f"cheap_{decision}"] += 1
        if decision is None:
            self.add_dense(c, query)
            s = signals(c, self.groups, p)
            scores = combine(s, p)
            order = np.argsort(-scores, kind="stable")
            decision = decide(scores[order], p, agreed=agree(s, scores))
            self.paths["full" if self.encoder is not None else "bm25"] += 1
        scores = np.array(scores, dtype=np.float32)
        order = np.argsort(-scores, kind="stable")
        if exact is not None:
            scores[exact] = 1.0
            order = np.concatenate(([exact], order[order != exact]))
            decision = "answer"
        hits = tuple(
            Hit(faq_id=self.kb.entries[i].id, question=self.kb.entries[i].question,
                score=round(float(scores[i]), 4))
            for i in order[:k]
        )
        return SearchResult(query=query, decision=decision, results=hits, kb_version=self.kb.version)


def _encode_one(batcher: BatchingQueryEncoder | None, encoder: QueryEncoder, text: str) -> np.ndarray:
    """One query's vector: through the batching thread when there is one, else directly."""
    if batcher is not None:
        return batcher.encode_query(text)
    return encoder.encode_queries([text])[0]


def _limit_blas_threads() -> None:
    # numpy's and faiss's OpenBLAS pools beside torch's OpenMP pool on 2 cores make every query
    # wait for core hand-offs; our matrix work is tiny, so BLAS gets one thread. torch's own
    # pool (libgomp) is left alone.
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return
    threadpool_limits(limits=1, user_api="blas")
