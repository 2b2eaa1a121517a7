"""Text encoders behind one small interface, so nothing else imports sentence-transformers.

`E5Encoder` runs the multilingual-e5-small folder built by `retrieval.e5_convert`;
`HashingEncoder` is a deterministic stand-in for unit tests of code that needs an encoder.
"""
from __future__ import annotations

import hashlib
import json
import threading
import unicodedata
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

QUERY_PREFIX = "query: "     # e5 was trained with these; dropping them costs top-1 accuracy
PASSAGE_PREFIX = "passage: "
# On a 2-core box one intra-op thread gives the best single-query latency once anything else
# (the API, Rasa, numpy) shares the cores; see the report of `python -m retrieval.encoder`.
DEFAULT_THREADS = 1


@runtime_checkable
class Encoder(Protocol):
    @property
    def dim(self) -> int: ...

    def warm_up(self) -> None: ...

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        """(n, dim) float32, rows L2-normalised: cosine similarity is a dot product."""
        ...

    def encode_passages(self, texts: Sequence[str]) -> np.ndarray: ...


def _as_list(texts: Sequence[str]) -> list[str]:
    if isinstance(texts, str):
        raise TypeError("pass a sequence of texts, not a single string")
    # Stripped: trailing whitespace would become an extra "▁" token and shift the mean.
    return [t.strip() for t in texts]


class E5Encoder:
    """multilingual-e5-small through sentence-transformers, on CPU."""

    REQUIRED = ("modules.json", "config.json", "model.safetensors", "tokenizer.json")

    def __init__(self, model_dir: str | Path, *, threads: int | None = DEFAULT_THREADS,
                 batch_size: int = 32) -> None:
        self.model_dir = Path(model_dir)
        missing = [name for name in self.REQUIRED if not (self.model_dir / name).is_file()]
        if missing:
            raise FileNotFoundError(
                f"{self.model_dir} is not a converted e5 folder (missing {', '.join(missing)}); "
                "build it with `python -m retrieval.e5_convert DIR`")
        self.threads = threads
        self.batch_size = batch_size
        self._model = None
        self._lock = threading.Lock()

    def warm_up(self) -> None:
        """Load the model once (idempotent); encode calls do it on first use otherwise."""
        if self._model is not None:
            return
        with self._lock:
            if self._model is not None:
                return
            import torch
            from sentence_transformers import SentenceTransformer

            if self.threads:
                torch.set_num_threads(self.threads)   # process-wide: one pool for the app
            model = SentenceTransformer(str(self.model_dir), device="cpu",
                                        local_files_only=True)
            model.eval()
            model.encode([QUERY_PREFIX + "warm up"], convert_to_numpy=True)
            self._model = model

    @property
    def model(self):
        """The loaded SentenceTransformer (for fine-tuning at index build)."""
        self.warm_up()
        return self._model

    # Fine-tuned weights travel with the index as a delta over the converted base model: every
    # tensor except the (frozen, 96 M-parameter) embedding tables.
    def save_delta(self, path: str | Path) -> None:
        from safetensors.torch import save_file

        state = {k: v.detach().contiguous() for k, v in self.model.state_dict().items()
                 if ".embeddings." not in k}
        save_file(state, str(path))
        Path(path).chmod(0o644)     # like the rest of the index: not a secret

    def load_delta(self, path: str | Path) -> None:
        from safetensors.torch import load_file

        state = load_file(str(path))
        model = self.model          # loads it first (warm_up takes the lock itself)
        with self._lock:
            missing, unexpected = model.load_state_dict(state, strict=False)
        if unexpected or any(".embeddings." not in k for k in missing):
            raise ValueError(f"{path} does not fit this model (unexpected {unexpected[:3]}, "
                             f"missing {[k for k in missing if '.embeddings.' not in k][:3]})")
        self.model.eval()

    @property
    def dim(self) -> int:
        if self._model is not None:
            get_dim = getattr(self._model, "get_embedding_dimension", None)  # ST >= 6
            return int(get_dim() if get_dim else self._model.get_sentence_embedding_dimension())
        pooling = json.loads((self.model_dir / "1_Pooling" / "config.json").read_text())
        return int(pooling["embedding_dimension"])

    def _encode(self, prefix: str, texts: Sequence[str]) -> np.ndarray:
        items = _as_list(texts)
        if not items:
            return np.zeros((0, self.dim), dtype=np.float32)
        self.warm_up()
        vectors = self._model.encode([prefix + t for t in items], batch_size=self.batch_size,
                                     convert_to_numpy=True, normalize_embeddings=True,
                                     show_progress_bar=False)
        return np.ascontiguousarray(vectors, dtype=np.float32)

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self._encode(QUERY_PREFIX, texts)

    def encode_passages(self, texts: Sequence[str]) -> np.ndarray:
        return self._encode(PASSAGE_PREFIX, texts)


class HashingEncoder:
    """Character-bigram feature hashing: deterministic, dependency-free, no model.

    Texts sharing many character bigrams score high, others near zero; good enough to test
    ranking and fusion code, not a stand-in for semantic similarity.
    """

    def __init__(self, dim: int = 64) -> None:
        if dim < 2:
            raise ValueError("dim must be at least 2")
        self._dim = dim

    @property
    def dim(self) -> int:
        return self._dim

    def warm_up(self) -> None:
        return None

    def _vector(self, text: str) -> np.ndarray:
        vec = np.zeros(self._dim, dtype=np.float32)
        norm = unicodedata.normalize("NFKC", text).casefold()
        chars = "\x02" + "".join(norm.split()) + "\x03"     # mark ends, ignore spacing
        if len(chars) == 2:
            return vec                                         # empty text: zero vector
        for a, b in zip(chars, chars[1:]):
            # blake2b, not hash(): Python salts str hashes per process
            digest = hashlib.blake2b((a + b).encode("utf-8"), digest_size=8).digest()
            vec[int.from_bytes(digest, "little") % self._dim] += 1.0
        return vec / float(np.linalg.norm(vec))

    def _encode(self, texts: Sequence[str]) -> np.ndarray:
        items = _as_list(texts)
        out = np.zeros((len(items), self._dim), dtype=np.float32)
        for i, text in enumerate(items):
            out[i] = self._vector(text)
        return out

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self._encode(texts)

    def encode_passages(self, texts: Sequence[str]) -> np.ndarray:
        return self._encode(texts)


def _bench(model_dir: str, repeats: int) -> dict:
    """RSS after load and single-query latency with 1 and 2 torch threads."""
    import resource
    import time

    import torch

    queries = ["为什么L4人脸识别不通过？", "健康码一直是橙色怎么办", "Can foreigners apply?",
               "帮家里老人申领健康码要怎么弄", "截图可以用吗"]
    default_threads = torch.get_num_threads()
    enc = E5Encoder(model_dir)
    t0 = time.perf_counter()
    enc.warm_up()
    report = {"load_seconds": round(time.perf_counter() - t0, 2),
              "rss_mb_after_load": round(_rss_mb(), 0),
              "torch_default_threads": default_threads}
    for threads in (1, 2):
        torch.set_num_threads(threads)
        for q in queries:                      # settle allocator and thread pool
            enc.encode_queries([q])
        times = []
        for i in range(repeats):
            t = time.perf_counter()
            enc.encode_queries([queries[i % len(queries)]])
            times.append((time.perf_counter() - t) * 1000)
        times.sort()
        report[f"p50_ms_{threads}_threads"] = round(times[len(times) // 2], 1)
        report[f"p90_ms_{threads}_threads"] = round(times[int(len(times) * 0.9)], 1)
    report["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 0)
    return report


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="measure E5Encoder load and query latency")
    parser.add_argument("model_dir")
    parser.add_argument("--repeats", type=int, default=200)
    args = parser.parse_args()
    print(json.dumps(_bench(args.model_dir, args.repeats), indent=2))
