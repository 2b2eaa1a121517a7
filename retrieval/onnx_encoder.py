"""e5 on onnxruntime: the serving encoder, without PyTorch, sentence-transformers or transformers.

Same interface and vectors as retrieval.encoder.E5Encoder: "query: " / "passage: " prefixes,
stripped text, the model's own tokenizer.json (through the `tokenizers` package, which keeps
XLM-R's normaliser: full-width ？ and ， map to ? and , as in sentence-transformers), truncation
to 512 tokens, mean pooling over the attention mask, L2 normalisation, float32. The graph is
exported at index build (retrieval.onnx_export) with the fine-tuned weights baked in.
"""
from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from retrieval.encoder import DEFAULT_THREADS, PASSAGE_PREFIX, QUERY_PREFIX, _as_list

DEFAULT_MAX_LENGTH = 512   # sentence-transformers' max_seq_length for this model


def max_length_of(model_dir: Path) -> int:
    """The converted model's max sequence length, as sentence-transformers reads it."""
    for name, key in (("sentence_bert_config.json", "max_seq_length"),
                      ("tokenizer_config.json", "model_max_length")):
        path = model_dir / name
        if path.is_file():
            value = json.loads(path.read_text()).get(key)
            if isinstance(value, int) and 0 < value <= 100_000:
                return value
    return DEFAULT_MAX_LENGTH


class OnnxE5Encoder:
    """multilingual-e5-small (fine-tuned) from an index's model.onnx, on CPU."""

    def __init__(self, onnx_path: str | Path, model_dir: str | Path, *,
                 threads: int | None = DEFAULT_THREADS, batch_size: int = 32,
                 max_length: int | None = None) -> None:
        self.onnx_path = Path(onnx_path)
        self.model_dir = Path(model_dir)
        for path in (self.onnx_path, self.model_dir / "tokenizer.json"):
            if not path.is_file():
                raise FileNotFoundError(f"{path} is missing")
        self.threads = threads
        self.batch_size = batch_size
        self.max_length = max_length or max_length_of(self.model_dir)
        self._session = None
        self._tokenizer = None
        self._pad_id = 1
        self._dim: int | None = None
        self._lock = threading.Lock()

    def warm_up(self) -> None:
        """Load the tokenizer and the session once (idempotent); encode calls do it otherwise."""
        if self._session is not None:
            return
        with self._lock:
            if self._session is not None:
                return
            import onnxruntime as ort
            from tokenizers import Tokenizer

            tok = Tokenizer.from_file(str(self.model_dir / "tokenizer.json"))
            # Set once, here: changing truncation while another thread encodes is what raises
            # "Already borrowed" in tokenizers. Padding is done in numpy (_batch_arrays).
            tok.enable_truncation(self.max_length)
            pad = tok.token_to_id("<pad>")
            self._pad_id = 1 if pad is None else pad

            opts = ort.SessionOptions()
            # One thread per query, as for torch (encoder.DEFAULT_THREADS): on 2 shared cores a
            # second thread costs the API and Rasa more than it saves this query.
            opts.intra_op_num_threads = self.threads or 0
            opts.inter_op_num_threads = 1
            opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
            session = ort.InferenceSession(str(self.onnx_path), sess_options=opts,
                                           providers=["CPUExecutionProvider"])
            self._tokenizer = tok
            dim = session.get_outputs()[0].shape[-1]
            self._dim = dim if isinstance(dim, int) else None
            self._session = session
        vec = self.encode_queries(["warm up"])
        self._dim = int(vec.shape[1])

    @property
    def dim(self) -> int:
        if self._dim is None:
            self.warm_up()
        return int(self._dim)

    def token_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """The ids the model sees for texts (prefixes not added): for tests and debugging."""
        self.warm_up()
        return [self._tokenizer.encode(t).ids for t in texts]

    def _batch_arrays(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        # encode() one by one, not encode_batch(): the batch call fans out over a thread pool
        # (every core), and the texts here are a handful of short questions.
        encoded = [self._tokenizer.encode(t).ids for t in texts]
        width = max(len(ids) for ids in encoded)
        input_ids = np.full((len(encoded), width), self._pad_id, dtype=np.int64)
        mask = np.zeros((len(encoded), width), dtype=np.int64)
        for i, ids in enumerate(encoded):
            input_ids[i, :len(ids)] = ids
            mask[i, :len(ids)] = 1
        return input_ids, mask

    def _run(self, texts: list[str]) -> np.ndarray:
        input_ids, mask = self._batch_arrays(texts)
        # InferenceSession.run is thread-safe: concurrent callers need no lock.
        (hidden,) = self._session.run(["last_hidden_state"],
                                      {"input_ids": input_ids, "attention_mask": mask})
        weights = mask[:, :, None].astype(np.float32)
        summed = (hidden.astype(np.float32) * weights).sum(axis=1)
        pooled = summed / np.clip(weights.sum(axis=1), 1e-9, None)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return pooled / np.clip(norms, 1e-12, None)

    def _encode(self, prefix: str, texts: Sequence[str]) -> np.ndarray:
        items = _as_list(texts)
        if not items:
            return np.zeros((0, self.dim), dtype=np.float32)
        self.warm_up()
        full = [prefix + t for t in items]
        # Longest first, in batches of batch_size, like sentence-transformers: similar lengths
        # share a batch, so little compute goes to padding.
        order = sorted(range(len(full)), key=lambda i: -len(full[i]))
        chunks = []
        for start in range(0, len(order), self.batch_size):
            rows = order[start:start + self.batch_size]
            chunks.append((rows, self._run([full[i] for i in rows])))
        out = np.empty((len(full), chunks[0][1].shape[1]), dtype=np.float32)
        for rows, vecs in chunks:
            out[rows] = vecs
        return np.ascontiguousarray(out, dtype=np.float32)

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self._encode(QUERY_PREFIX, texts)

    def encode_passages(self, texts: Sequence[str]) -> np.ndarray:
        return self._encode(PASSAGE_PREFIX, texts)
