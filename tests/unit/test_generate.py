"""The generator: exact size, deterministic per seed, REES46 schema, planted tastes."""

from __future__ import annotations

import csv
import gzip
import json
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from clickrec import columns as C
from clickrec.errors import InputError
from clickrec.generate import generate_clickstream


def test_deterministic_per_seed_and_exact_count(tmp_path: Path) -> None:
    a = generate_clickstream(tmp_path / "a.csv", events=5000, seed=7)
    b = generate_clickstream(tmp_path / "b.csv", events=5000, seed=7)
    c = generate_clickstream(tmp_path / "c.csv", events=5000, seed=8)
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()
    assert (tmp_path / "a.csv").read_bytes() != (tmp_path / "c.csv").read_bytes()
    lines = (tmp_path / "a.csv").read_text().splitlines()
    assert lines[0] == ",".join(C.REES46_COLUMNS)
    assert len(lines) - 1 == a["events"] == 5000
    assert a["repeated_rows"] > 0 and b == {**a, "out": b["out"], "seconds": b["seconds"]}
    assert c["events"] == 5000


def test_rows_look_like_rees46_and_tastes_are_planted(tmp_path: Path) -> None:
    generate_clickstream(tmp_path / "e.csv.gz", events=40_000, seed=3)
    with gzip.open(tmp_path / "e.csv.gz", "rt") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 40_000
    assert rows[0][C.EVENT_TIME].endswith(" UTC")
    assert {r[C.EVENT_TYPE] for r in rows} == set(C.EVENT_TYPES)
    assert all(float(r[C.PRICE]) >= 0 for r in rows)
    types = Counter(r[C.EVENT_TYPE] for r in rows)
    assert types["view"] > types["cart"] > types["purchase"] > 0  # the funnel
    # planted tastes: a user's events concentrate on a few categories, far more than the
    # shop's overall category mix would give
    per_user: dict[str, Counter[str]] = defaultdict(Counter)
    for r in rows:
        per_user[r[C.USER_ID]][r[C.CATEGORY_ID]] += 1
    overall = Counter(r[C.CATEGORY_ID] for r in rows)
    top_share_overall = overall.most_common(1)[0][1] / len(rows)
    active = [c for c in per_user.values() if sum(c.values()) >= 20]
    mean_top_share = sum(c.most_common(1)[0][1] / sum(c.values()) for c in active) / len(active)
    assert mean_top_share > 2 * top_share_overall


def test_json_lines(tmp_path: Path) -> None:
    generate_clickstream(tmp_path / "e.jsonl", events=100, seed=1)
    rows = [json.loads(line) for line in (tmp_path / "e.jsonl").read_text().splitlines()]
    assert len(rows) == 100 and set(rows[0]) == set(C.REES46_COLUMNS)


def test_bad_output_name(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"out\.txt"):
        generate_clickstream(tmp_path / "out.txt", events=10)
