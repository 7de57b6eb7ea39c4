"""Retrieval quality: hand-written on-call queries against the shipped runbooks, offline model.

The pairs in ``tests/fixtures/retrieval_pairs.yml`` are PagerDuty alert titles, Slack-style
questions and pasted error messages, each naming the runbook that must come back in the top 3.
Scores are printed (visible with ``pytest -rA``), attached as ``record_property`` values (in
JUnit XML) and repeated in the assertion message when the threshold is missed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from tests.tools.test_runbooks import RUNBOOKS, shared_minilm
from tools.runbooks import RunbookConfig, RunbookIndex

PAIRS = yaml.safe_load(
    (Path(__file__).resolve().parents[1] / "fixtures" / "retrieval_pairs.yml").read_text()
)
THRESHOLD = 0.9


@dataclass
class Scores:
    top1: int = 0
    top3: int = 0
    reciprocal_ranks: float = 0.0
    misses: list[str] = field(default_factory=list)

    def line(self, label: str) -> str:
        n = len(PAIRS)
        return (
            f"{label}: top-1 {self.top1 / n:.3f}, top-3 {self.top3 / n:.3f} "
            f"({self.top3}/{n}), MRR@3 {self.reciprocal_ranks / n:.3f}"
        )


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory):
    config = RunbookConfig(data_dir=tmp_path_factory.mktemp("quality"))
    index = RunbookIndex(config, shared_minilm())
    assert index.ingest(RUNBOOKS).errors == []
    yield index
    index.close()


def evaluate(index: RunbookIndex, boost: bool) -> Scores:
    """Top-k hit counts over all pairs, with the hybrid boost on or off."""
    saved = index.config
    index.config = saved.model_copy(update={"hybrid_boost": boost})
    scores = Scores()
    try:
        for pair in PAIRS:
            paths = [h.path.removeprefix("runbooks/") for h in index.search(pair["query"], 3)]
            rank = paths.index(pair["expect"]) + 1 if pair["expect"] in paths else 0
            scores.top1 += rank == 1
            scores.top3 += rank > 0
            scores.reciprocal_ranks += 1 / rank if rank else 0.0
            if rank != 1:
                scores.misses.append(f"  rank {rank or '>3'}: {pair['query']!r} -> {paths}")
    finally:
        index.config = saved
    return scores


def test_pairs_are_hand_written_and_cover_every_runbook():
    shipped = {p.name for p in RUNBOOKS.glob("*.md") if p.name != "README.md"}
    titles = [p.read_text().split("title:", 1)[1].split("\n", 1)[0].strip() for p in
              RUNBOOKS.glob("*.md") if p.name != "README.md"]  # fmt: skip
    assert len(PAIRS) >= 30
    assert {p["expect"] for p in PAIRS} == shipped
    assert {p["kind"] for p in PAIRS} == {"pagerduty", "slack", "error"}
    assert not [p for p in PAIRS for t in titles if t.lower() in p["query"].lower()]


def test_top3_hit_rate_of_the_offline_model(index: RunbookIndex, record_property):
    boosted, plain = evaluate(index, boost=True), evaluate(index, boost=False)
    summary = "\n".join(
        [
            f"retrieval quality over {len(PAIRS)} hand-written queries (all-MiniLM-L6-v2, offline)",
            boosted.line("hybrid (dense + alert, service and word-overlap bonus)"),
            plain.line("dense only"),
            "not ranked first (with boost):",
            *boosted.misses,
        ]
    )
    print(summary)
    record_property("top3_hit_rate", round(boosted.top3 / len(PAIRS), 3))
    record_property("top3_hit_rate_dense_only", round(plain.top3 / len(PAIRS), 3))
    record_property("top1_hit_rate", round(boosted.top1 / len(PAIRS), 3))
    assert boosted.top3 / len(PAIRS) >= THRESHOLD, summary
    assert boosted.reciprocal_ranks >= plain.reciprocal_ranks, summary
