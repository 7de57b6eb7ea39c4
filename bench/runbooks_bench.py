"""Runbook index: model load, ingest of 1,000 chunks, and search latency, against torch.

    .venv/bin/python bench/runbooks_bench.py [--chunks 1000] [--queries 300] [--loads 3]

What is measured (the real code paths, local-mode Qdrant in a temporary directory):
  * model load: a fresh ``python -c`` that imports :mod:`tools.embeddings` and loads the
    bundled all-MiniLM-L6-v2 (NumPy forward pass), vs the baseline, the same weights loaded
    through sentence-transformers (imports torch and transformers). Median of ``--loads`` runs.
  * ingest: ``RunbookIndex.ingest`` of synthetic runbooks (8 sections each, ~100–170 words per
    section, varied services, alerts, symptoms and commands) totalling ``--chunks`` chunks: parse,
    embed, upsert. Then the same directory again (nothing changed: the idempotent path). The
    baseline is sentence-transformers embedding the same chunk texts (batch 32) in this process
    — embedding alone, without parsing or Qdrant.
  * search: ``RunbookIndex.search(q, 3)`` p50/p99 over ``--queries`` on-call-style queries
    against that index (query embedding, Qdrant query, hybrid ranking), and the part of it that
    is the Qdrant query alone.

The machine is shared: numbers move with other load; rows run back to back, not interleaved.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tools.embeddings import MiniLM, bundled_model_dir
from tools.runbooks import IngestReport, RunbookConfig, RunbookIndex
from tools.runbooks.files import chunk_file

SECTIONS = 8
SERVICES = ["redis", "postgres", "kafka", "nginx", "rabbitmq", "elasticsearch", "vault",
            "coredns", "etcd", "memcached", "haproxy", "api-gateway", "billing", "search"]  # fmt: skip
PROBLEMS = ["memory pressure", "latency spike", "connection exhaustion", "disk filling up",
            "replication lag", "crash loop", "certificate expiry", "error rate spike",
            "queue backlog", "CPU throttling", "DNS timeouts", "OOM kills"]  # fmt: skip
HEADINGS = ["Symptoms", "Impact", "Triage", "Dashboards", "Remediation", "Rollback",
            "Escalation", "Prevention"]  # fmt: skip
VERBS = ["check", "compare", "restart", "scale", "drain", "inspect", "roll back", "page",
         "throttle", "increase", "rotate", "verify", "graph", "tail", "grep"]  # fmt: skip
OBJECTS = ["the primary", "each replica", "the connection pool", "the slow log", "p99 latency",
           "the eviction counter", "recent deploys", "the node's free memory", "the error logs",
           "the consumer group", "the load balancer targets", "the TLS chain", "inode usage",
           "the WAL volume", "the ingress controller", "GC pauses", "the autoscaler"]  # fmt: skip
COMMANDS = ["redis info section=memory", "redis slowlog count=20", "redis info section=clients",
            "github commits limit=10", "github runs status=failure limit=10",
            "pulumi history stack=prod limit=5"]  # fmt: skip


def sentence(rng: random.Random, service: str, problem: str) -> str:
    verb, obj = rng.choice(VERBS), rng.choice(OBJECTS)
    detail = rng.choice(["before anything else", "and note the time of onset", "every minute",
                         "on every shard", "for the last hour", "against the baseline"])  # fmt: skip
    return f"{verb.capitalize()} {obj} of {service} during the {problem} {detail}."


def synthetic_runbook(rng: random.Random, n: int) -> str:
    service, problem = rng.choice(SERVICES), rng.choice(PROBLEMS)
    alert = f"{service.title().replace('-', '')}{problem.title().replace(' ', '')}{n}"
    meta = {"title": f"{service} {problem} ({n})", "services": [service], "alerts": [alert],
            "tags": rng.sample(["cache", "db", "network", "k8s", "slo", "security"], 2),
            "commands": rng.sample(COMMANDS, 2)}  # fmt: skip
    body = [f"# {meta['title']}"]
    for heading in HEADINGS[:SECTIONS]:
        words = " ".join(sentence(rng, service, problem) for _ in range(rng.randint(8, 13)))
        body += [f"## {heading}", words]
    front = "\n".join(f"{k}: {json.dumps(v)}" for k, v in meta.items())
    return f"---\n{front}\n---\n" + "\n\n".join(body) + "\n"


def write_corpus(directory: Path, chunks: int) -> list[str]:
    """Synthetic runbooks with ``chunks`` sections in all; returns the texts that get embedded."""
    rng = random.Random(7)
    texts: list[str] = []
    for n in range(chunks // SECTIONS):
        path = directory / f"rb-{n:04d}.md"
        path.write_text(synthetic_runbook(rng, n))
        texts += [c.embed_text for c in chunk_file(path.name, path.read_text())]
    return texts


def queries(count: int) -> list[str]:
    rng = random.Random(11)
    shapes = ["[FIRING:1] {a} {s}-prod-{n}", "{s} {p} since the deploy, what do I check?",
              "anyone seeing {p} on {s}?", "{s} {p} in eu-west-1"]  # fmt: skip
    return [rng.choice(shapes).format(a=f"{rng.choice(SERVICES).title()}Alert{n}",
                                      s=rng.choice(SERVICES), p=rng.choice(PROBLEMS), n=n)
            for n in range(count)]  # fmt: skip


def load_seconds(code: str, runs: int) -> float:
    times = []
    for _ in range(runs):
        out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                             text=True, check=True, env=os.environ | {"HF_HUB_OFFLINE": "1"})  # fmt: skip
        times.append(float(out.stdout.strip().splitlines()[-1]))
    return statistics.median(times)


LOAD_NUMPY = (
    "import time; t = time.perf_counter(); from tools.embeddings import MiniLM; "
    "MiniLM.load(); print(time.perf_counter() - t)"
)
LOAD_TORCH = (
    "import time; t = time.perf_counter(); from sentence_transformers import SentenceTransformer;"
    "from tools.embeddings import bundled_model_dir;"
    "SentenceTransformer(str(bundled_model_dir()), device='cpu'); print(time.perf_counter() - t)"
)


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def bench_search(index: RunbookIndex, minilm: MiniLM, count: int) -> dict[str, float]:
    total, qdrant = [], []
    for query in queries(count):
        start = time.perf_counter()
        index.search(query, 3)
        total.append(time.perf_counter() - start)
        vector = minilm.embed([query])[0].tolist()
        start = time.perf_counter()
        index._client.query_points(index.config.collection, query=vector, limit=40)
        qdrant.append(time.perf_counter() - start)
    return {"p50": percentile(total, 0.5), "p99": percentile(total, 0.99),
            "qdrant_p50": percentile(qdrant, 0.5)}  # fmt: skip


def torch_embed_seconds(texts: list[str]) -> tuple[float, float]:
    """Wall and CPU seconds for sentence-transformers to embed ``texts``."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(bundled_model_dir()), device="cpu")
    model.encode(texts[:32], batch_size=32)  # warm-up
    wall, cpu = time.perf_counter(), time.process_time()
    model.encode(texts, batch_size=32, normalize_embeddings=True)
    return time.perf_counter() - wall, time.process_time() - cpu


def timed_ingest(index: RunbookIndex, docs: Path) -> tuple[IngestReport, float]:
    cpu = time.process_time()
    report = index.ingest(docs)
    return report, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--chunks", type=int, default=1000)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--loads", type=int, default=3)
    args = parser.parse_args()
    print("load average at start: {:.1f} {:.1f} {:.1f} on {} CPUs".format(*os.getloadavg(),
                                                                     os.cpu_count()))  # fmt: skip

    load_np, load_torch = load_seconds(LOAD_NUMPY, args.loads), load_seconds(LOAD_TORCH, args.loads)
    print(f"model load (import + weights, fresh process, median of {args.loads}):")
    print(f"  numpy  {load_np:6.2f} s   torch baseline {load_torch:6.2f} s   "
          f"ratio {load_np / load_torch:.2f}")  # fmt: skip

    with tempfile.TemporaryDirectory() as tmp:
        docs = Path(tmp) / "runbooks"
        docs.mkdir()
        texts = write_corpus(docs, args.chunks)
        minilm = MiniLM.load()
        index = RunbookIndex(RunbookConfig(data_dir=Path(tmp) / "data"), minilm)
        (first, first_cpu), (again, _) = timed_ingest(index, docs), timed_ingest(index, docs)
        assert not first.errors, first.errors[:3]
        baseline, baseline_cpu = torch_embed_seconds(texts)
        print(
            f"ingest of {first.chunks} chunks in {first.files} files "
            f"(mean {sum(map(len, texts)) / len(texts):.0f} chars embedded per chunk):"
        )
        print(
            f"  first  {first.seconds:6.2f} s wall, {first_cpu:6.2f} s CPU "
            f"({first.chunks / first.seconds:.0f} chunks/s)\n"
            f"  torch embedding alone {baseline:6.2f} s wall, {baseline_cpu:6.2f} s CPU   "
            f"ratio wall {first.seconds / baseline:.2f}, CPU {first_cpu / baseline_cpu:.2f}"
        )
        print(f"  again  {again.seconds:6.2f} s (unchanged: {again.embedded} embedded, "
              f"{again.removed} removed)")  # fmt: skip
        stats = bench_search(index, minilm, args.queries)
        index.close()
    print(f"search over {first.chunks} chunks, {args.queries} queries, limit 3:")
    print(f"  p50 {stats['p50'] * 1000:6.1f} ms   p99 {stats['p99'] * 1000:6.1f} ms   "
          f"(Qdrant query alone p50 {stats['qdrant_p50'] * 1000:.1f} ms)")  # fmt: skip
    print("load average at end: {:.1f} {:.1f} {:.1f}".format(*os.getloadavg()))


if __name__ == "__main__":
    main()
