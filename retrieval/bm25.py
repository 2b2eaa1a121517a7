"""Okapi BM25 over a few hundred short documents, as one dense numpy weight matrix.

Scores are also given relative to the query's own ideal score (the score a document made of
exactly the query's known terms would get), so they land in [0, 1] whatever the query length:
that makes them comparable across queries, which the abstain decision needs.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class BM25Params:
    k1: float = 1.2
    b: float = 0.75


class BM25:
    def __init__(self, docs: list[list[str]], params: BM25Params = BM25Params()):
        if not docs:
            raise ValueError("BM25 needs at least one document")
        self.params = params
        vocab: dict[str, int] = {}
        for doc in docs:
            for term in doc:
                vocab.setdefault(term, len(vocab))
        self.vocab = vocab
        n_docs = len(docs)
        tf = np.zeros((n_docs, max(len(vocab), 1)), dtype=np.float32)
        for i, doc in enumerate(docs):
            for term, count in Counter(doc).items():
                tf[i, vocab[term]] = count
        lengths = np.array([len(d) for d in docs], dtype=np.float32)
        self.avgdl = float(lengths.mean()) or 1.0
        df = (tf > 0).sum(axis=0)
        # The "+1" form of idf stays positive for terms found in most documents.
        self.idf = np.log(1.0 + (n_docs - df + 0.5) / (df + 0.5)).astype(np.float32)
        # Unknown query terms count as rare as the rarest known one for the ideal score: a query
        # made mostly of words the KB never uses is far from every entry.
        self.max_idf = float(np.log(1.0 + (n_docs + 0.5) / 0.5))
        k1, b = params.k1, params.b
        norm = k1 * (1.0 - b + b * lengths / self.avgdl)
        self.weights = (tf * (k1 + 1.0) / (tf + norm[:, None])) * self.idf[None, :]
        self.n_docs = n_docs

    def _query_counts(self, query: list[str]) -> tuple[np.ndarray, np.ndarray, list[str]]:
        counts = Counter(query)
        ids, qtf, unknown = [], [], []
        for term, c in counts.items():
            idx = self.vocab.get(term)
            if idx is None:
                unknown.append(term)
            else:
                ids.append(idx)
                qtf.append(c)
        return np.array(ids, dtype=np.int64), np.array(qtf, dtype=np.float32), unknown

    def scores(self, query: list[str]) -> np.ndarray:
        """Raw BM25 score of every document (query term repeats count once each)."""
        ids, _, _ = self._query_counts(query)
        if ids.size == 0:
            return np.zeros(self.n_docs, dtype=np.float32)
        return self.weights[:, ids].sum(axis=1)

    def ideal(self, query: list[str]) -> float:
        """Score of a document of average length holding each query term once."""
        ids, _, unknown = self._query_counts(query)
        k1 = self.params.k1
        per_term = (k1 + 1.0) / (1.0 + k1)   # tf 1, length = avgdl
        return float((self.idf[ids].sum() + self.max_idf * len(unknown)) * per_term)

    def relative_scores(self, query: list[str]) -> np.ndarray:
        """scores / ideal, clipped to [0, 1]."""
        ideal = self.ideal(query)
        if ideal <= 0:
            return np.zeros(self.n_docs, dtype=np.float32)
        return np.clip(self.scores(query) / ideal, 0.0, 1.0)
