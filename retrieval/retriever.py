"""The FAQ retriever: BM25 + dense scores fused per entry, and the answer / clarify / none call.

    retriever = Retriever(kb, encoder, params=params)   # validates only
    retriever.warm_up()                                 # tokenizer, encoder, indexes
    result = retriever.search("健康码能截图吗", k=3)      # -> SearchResult

Every weight and threshold sits in one `Params` object; `calibrate()` fits them on the KB's own
phrasings (leave-one-out) and a list of out-of-scope questions.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from typing import Literal

import numpy as np

from retrieval import tokenize
from retrieval.bm25 import BM25, BM25Params
from retrieval.dense import BatchingQueryEncoder, DenseIndex, QueryEncoder, limit_faiss_threads
from retrieval.text import for_encoder, is_blank_or_noise, is_smalltalk, match_key
from retrieval.types import Hit, KnowledgeBase, SearchResult


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
    w_dense: float = 0.6              # fused = w_dense·dense + (1 − w_dense)·bm25
    dense_lo: float = 0.75            # cosine mapped to 0 (unrelated text scores about this)
    dense_hi: float = 0.95            # cosine mapped to 1
    t_answer: float = 0.55            # top score needed to answer outright
    margin: float = 0.05              # ... and this lead over the runner-up, else clarify
    t_clarify: float = 0.35           # below this nothing is close: "none"
    calibration: dict = field(default_factory=dict, compare=False)   # how the values were fitted

    @property
    def t_suggest(self) -> float:
        """Below a clarification but at least half-way there: worth offering as "related"."""
        return self.t_clarify / 2

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
    dense_rows: np.ndarray | None  # cosine vs each phrasing


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


def fuse(c: Components, groups: np.ndarray, p: Params,
         exclude_row: int | None = None) -> np.ndarray:
    """Entry scores in [0, 1]: lexical and dense evidence per entry, then a weighted sum.

    exclude_row hides one phrasing from the dense side (leave-one-out calibration; the lexical
    side was computed without it already)."""
    bm = np.maximum(c.bm25_entries, p.answer_weight * c.bm25_answers)
    if p.bm25_only or c.dense_rows is None:
        return bm
    # The mean of the best two phrasings beats the single best one (leave-one-out top-1 0.71
    # against 0.66 on our KB): one stray phrasing close to a neighbour's question no longer wins.
    dn = dense_entry_scores(c.dense_rows, groups, p.dense_top, exclude_row)
    dn = np.clip((dn - p.dense_lo) / max(p.dense_hi - p.dense_lo, 1e-6), 0.0, 1.0)
    return p.w_dense * dn + (1.0 - p.w_dense) * bm


def decide(scores_sorted: np.ndarray, p: Params) -> str:
    """answer: confident and clearly ahead; clarify: something close but not sure; none."""
    if scores_sorted.size == 0:
        return "none"
    top = float(scores_sorted[0])
    second = float(scores_sorted[1]) if scores_sorted.size > 1 else 0.0
    if top < p.t_clarify:
        return "none"
    if top >= p.t_answer and top - second >= p.margin:
        return "answer"
    return "clarify"


class Retriever:
    def __init__(self, kb: KnowledgeBase, encoder: QueryEncoder | None = None, *,
                 params: Params | None = None, dense: DenseIndex | None = None,
                 batching: bool = True, cache_size: int = 1024):
        params = params or Params(bm25_only=encoder is None)
        if not kb.entries:
            raise ValueError("the knowledge base has no entries")
        if not params.bm25_only and encoder is None:
            raise ValueError("an encoder is required unless params.bm25_only is set")
        if not 0.0 <= params.w_dense <= 1.0:
            raise ValueError(f"w_dense must be in [0, 1], got {params.w_dense}")
        if not params.t_clarify <= params.t_answer:
            raise ValueError("t_clarify must not exceed t_answer")
        self.kb = kb
        self.encoder = None if params.bm25_only else encoder
        self.params = params
        self.phrasings = Phrasings.of(kb)
        self.owners = np.asarray(self.phrasings.owners, dtype=np.int64)
        self.groups = group_rows(self.owners, len(kb.entries))
        if dense is not None and dense.index.ntotal != len(self.phrasings.texts):
            raise ValueError("the dense index does not match the KB's phrasings (stale index?)")
        self.dense = dense
        self._batching = batching
        self._batcher: BatchingQueryEncoder | None = None
        self._bm25_entries: BM25 | None = None
        self._phrasing_terms: list[list[str]] = []
        self._bm25_answers: BM25 | None = None
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._cache_size = cache_size
        self._cache_lock = threading.Lock()
        # A question asked exactly as a KB phrasing is that entry's, whatever the fused scores
        # say (two official headings differing in one word can both saturate the fusion).
        self._exact = {match_key(t): o for t, o in zip(self.phrasings.texts, self.phrasings.owners)}
        self._ready = False

    @property
    def ready(self) -> bool:
        return self._ready

    # --- building ---------------------------------------------------------------------------
    def warm_up(self) -> None:
        """Load the tokenizer and the encoder, build BM25, and encode phrasings if no index given."""
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
            if self._batching:
                self._batcher = BatchingQueryEncoder(self.encoder)
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

    def with_params(self, params: Params) -> "Retriever":
        """Same KB, encoder and built indexes, other weights and thresholds."""
        if params.phrasing_side != self.params.phrasing_side and self.dense is not None:
            raise ValueError("changing phrasing_side needs a new dense index")
        other = Retriever(self.kb, self.encoder, params=params, dense=self.dense,
                          batching=self._batching, cache_size=self._cache_size)
        if self._ready:
            other._bm25_entries, other._bm25_answers = self._bm25_entries, self._bm25_answers
            other._phrasing_terms = self._phrasing_terms
            other._batcher = self._batcher
            other._cache = self._cache
            other._cache_lock = self._cache_lock
            other._ready = True
        return other

    # --- querying ---------------------------------------------------------------------------
    def _query_vector(self, text: str) -> np.ndarray:
        with self._cache_lock:
            hit = self._cache.get(text)
            if hit is not None:
                self._cache.move_to_end(text)
                return hit
        if self._batcher is not None:
            vec = self._batcher.encode_query(text)
        else:
            vec = self.encoder.encode_queries([text])[0]
        if self._cache_size:
            with self._cache_lock:
                self._cache[text] = vec
                while len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
        return vec

    def components(self, query: str, qvec: np.ndarray | None = None,
                   exclude_row: int | None = None) -> Components:
        """exclude_row: score the lexical side as if that phrasing were not in the KB."""
        if not self._ready:
            raise RuntimeError("call warm_up() before searching")
        q_terms = tokenize.terms(query, bigrams=self.params.bigrams)
        bm25 = self._bm25_entries if exclude_row is None else self._entry_bm25(exclude_row)
        entries = bm25.relative_scores(q_terms)
        answers = self._bm25_answers.relative_scores(q_terms)
        dense_rows = None
        if self.encoder is not None:
            if qvec is None:
                qvec = self._query_vector(for_encoder(query))
            dense_rows = self.dense.row_scores(qvec)[0]
        return Components(entries, answers, dense_rows)

    def entry_scores(self, query: str) -> np.ndarray:
        return fuse(self.components(query), self.groups, self.params)

    def search(self, query: str, k: int = 3) -> SearchResult:
        if not self._ready:
            raise RuntimeError("call warm_up() before searching")
        k = max(1, int(k))
        if is_blank_or_noise(query) or is_smalltalk(query):
            return SearchResult(query=query, decision="none", results=(), kb_version=self.kb.version)
        scores = self.entry_scores(query)
        order = np.argsort(-scores, kind="stable")
        decision = decide(scores[order], self.params)
        exact = self._exact.get(match_key(query))
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


def _limit_blas_threads() -> None:
    # numpy's and faiss's OpenBLAS pools beside torch's OpenMP pool on 2 cores make every query
    # wait for core hand-offs; our matrix work is tiny, so BLAS gets one thread. torch's own
    # pool (libgomp) is left alone.
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return
    threadpool_limits(limits=1, user_api="blas")
