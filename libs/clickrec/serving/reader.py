"""JVM-free reads of the serving tables: an immutable in-memory snapshot, swapped on a new version.

gold/recommendations and gold/popular_items are read whole with delta-rs into Arrow (a few
columns, one row per user and variant) and indexed by user id in a dict. A lookup is then a
dict hit plus a slice of one Arrow row: microseconds, no I/O. `RecommendationReader.refresh`
builds a new Snapshot when either table's Delta version changed and replaces the reference in
one assignment, so a reader thread sees the old snapshot or the new one, never a mix.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
import unicodedata
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from clickrec import columns as C
from clickrec.config import ClickrecConfig
from clickrec.errors import InputError, NotFoundError, NotPublishedError
from clickrec.io.lake import Lake

log = logging.getLogger(__name__)

SCORE_DIGITS = 6
_COLUMNS = (C.USER_ID, C.VARIANT, C.ITEMS, C.MODEL_NAME, C.MODEL_VERSION, C.SOURCE, C.UPDATED_AT)
_POPULAR_COLUMNS = (C.VARIANT, C.ITEMS, C.MODEL_NAME, C.MODEL_VERSION, C.SOURCE, C.UPDATED_AT)


@dataclass(frozen=True)
class VariantLists:
    """One variant's lists: user id -> row of the Arrow columns."""

    rows: dict[str, int]
    columns: dict[str, Any]  # column name -> pyarrow Array (chunks combined)

    def row(self, user_id: str) -> dict[str, Any] | None:
        i = self.rows.get(user_id)
        if i is None:
            return None
        return {name: col[i].as_py() for name, col in self.columns.items()}


@dataclass(frozen=True)
class Snapshot:
    """Everything a lookup needs, at one (recommendations, popular) pair of Delta versions."""

    table_version: int | None
    popular_version: int | None
    variants: dict[str, VariantLists] = field(default_factory=dict)
    popular: dict[str, dict[str, Any]] = field(default_factory=dict)
    loaded_at: float = 0.0

    @property
    def published(self) -> tuple[str, ...]:
        """Variants that have lists or a popular list."""
        return tuple(sorted(set(self.variants) | set(self.popular)))


def validate_request(user_id: str, n: int, *, max_n: int, max_user_id_length: int) -> None:
    """InputError naming the parameter when the user id or n is out of bounds."""
    if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= max_n:
        raise InputError(f"n={n!r}: must be an integer from 1 to {max_n} (serve.max_n)")
    if not user_id or len(user_id) > max_user_id_length:
        raise InputError(
            f"user_id: must be 1 to {max_user_id_length} characters (serve.max_user_id_length), "
            f"got {len(user_id)}"
        )
    if user_id != user_id.strip() or any(unicodedata.category(ch)[0] in "CZ" and ch != " " for ch in user_id):
        raise InputError(f"user_id {user_id!r}: control characters or surrounding whitespace are not allowed")


def _variant_lists(table: Any) -> dict[str, VariantLists]:
    """Split an Arrow table of gold/recommendations by variant and index each by user id."""
    import pyarrow.compute as pc

    out: dict[str, VariantLists] = {}
    if table.num_rows == 0:
        return out
    for variant in pc.unique(table[C.VARIANT]).to_pylist():
        part = table.filter(pc.equal(table[C.VARIANT], variant)).combine_chunks()
        users = part[C.USER_ID].to_pylist()
        cols = {name: part[name].combine_chunks() for name in _COLUMNS if name not in (C.USER_ID, C.VARIANT)}
        out[str(variant)] = VariantLists(rows={u: i for i, u in enumerate(users)}, columns=cols)
    return out


def load_snapshot(lake: Lake) -> Snapshot:
    """Read both serving tables at their latest versions (empty snapshot when not published)."""
    recs = lake.open(C.GOLD_RECOMMENDATIONS)
    pop = lake.open(C.GOLD_POPULAR_ITEMS)
    variants: dict[str, VariantLists] = {}
    popular: dict[str, dict[str, Any]] = {}
    if recs is not None:
        variants = _variant_lists(recs.to_pyarrow_table(columns=list(_COLUMNS)))
    if pop is not None:
        for row in pop.to_pyarrow_table(columns=list(_POPULAR_COLUMNS)).to_pylist():
            popular[str(row[C.VARIANT])] = row
    return Snapshot(
        table_version=recs.version() if recs is not None else None,
        popular_version=pop.version() if pop is not None else None,
        variants=variants,
        popular=popular,
        loaded_at=time.time(),
    )


def _iso(value: Any) -> str | None:
    return value.isoformat() if isinstance(value, datetime) else (None if value is None else str(value))


def render(snapshot: Snapshot, user_id: str, n: int, variant: str) -> dict[str, Any]:
    """The user's list (or the popular one, source `popular`) from `snapshot`, cut to n items.

    Until a model is champion (a first model that did not beat popularity stays challenger),
    `champion` readers get the newest popular list, with no model version.
    NotFoundError when nothing is published for `variant` or for any variant at all.
    """
    if snapshot.table_version is None and snapshot.popular_version is None:
        raise NotPublishedError(f"{C.GOLD_RECOMMENDATIONS} is not published yet: run `clickrec publish`")
    lists = snapshot.variants.get(variant)
    row = lists.row(user_id) if lists is not None else None
    if row is None:
        row = snapshot.popular.get(variant)
        if row is None and lists is None and variant == "champion" and snapshot.popular:
            newest = max(snapshot.popular.values(), key=lambda r: (r[C.UPDATED_AT] is not None, r[C.UPDATED_AT]))
            row = {**newest, C.MODEL_VERSION: None}
        if row is None and lists is not None:  # the stream wrote lists before any publish
            raise NotPublishedError(
                f"variant {variant!r} has lists but no popular list for users without one yet "
                f"({C.GOLD_POPULAR_ITEMS}): run `clickrec publish`"
            )
        if row is None:
            raise NotFoundError(
                f"variant {variant!r} is not published (published: {', '.join(snapshot.published) or 'none'})"
            )
        row = {**row, C.SOURCE: C.SOURCE_POPULAR}
    items = [
        {C.ITEM_ID: it[C.ITEM_ID], C.SCORE: round(float(it[C.SCORE]), SCORE_DIGITS), C.RANK: it[C.RANK]}
        for it in (row[C.ITEMS] or [])[:n]
    ]
    return {
        C.USER_ID: user_id,
        C.VARIANT: variant,
        C.SOURCE: row[C.SOURCE],
        C.MODEL_NAME: row[C.MODEL_NAME],
        C.MODEL_VERSION: row[C.MODEL_VERSION],
        C.UPDATED_AT: _iso(row[C.UPDATED_AT]),
        "table_version": snapshot.table_version,
        "popular_table_version": snapshot.popular_version,
        "n": len(items),
        C.ITEMS: items,
    }


class RecommendationReader:
    """Holds the current Snapshot; `refresh` swaps in a new one when a Delta version changed."""

    def __init__(self, config: ClickrecConfig, *, load: bool = True) -> None:
        self.config = config
        self.lake = Lake.from_config(config)
        self._lock = threading.Lock()  # one refresh at a time; lookups never take it
        self._checked_at = 0.0
        self.reloads = 0
        self.current = load_snapshot(self.lake) if load else Snapshot(None, None)
        self._checked_at = time.monotonic()

    def versions(self) -> tuple[int | None, int | None]:
        """The tables' latest Delta versions, read from their logs (cheap: no data files)."""
        recs = self.lake.open(C.GOLD_RECOMMENDATIONS)
        pop = self.lake.open(C.GOLD_POPULAR_ITEMS)
        return (recs.version() if recs is not None else None, pop.version() if pop is not None else None)

    def refresh(self) -> bool:
        """Load a new snapshot if either table moved; True when it did."""
        with self._lock:
            self._checked_at = time.monotonic()
            snap = self.current
            if self.versions() == (snap.table_version, snap.popular_version):
                return False
            new = load_snapshot(self.lake)
            self.current = new  # one reference assignment: atomic for readers
            self.reloads += 1
            log.info("serving %s v%s, %s v%s", C.GOLD_RECOMMENDATIONS, new.table_version,
                     C.GOLD_POPULAR_ITEMS, new.popular_version)
            return True

    def maybe_refresh(self) -> None:
        """Refresh when serve.poll_seconds have passed since the last check."""
        if time.monotonic() - self._checked_at >= self.config.serve.poll_seconds:
            self.refresh()

    def recommendations(self, user_id: str, n: int = 10, variant: str = "champion") -> dict[str, Any]:
        """Validated lookup in the current snapshot (see `render`)."""
        sc = self.config.serve
        validate_request(user_id, n, max_n=sc.max_n, max_user_id_length=sc.max_user_id_length)
        self.maybe_refresh()
        return render(self.current, user_id, n, variant)

    def where(self) -> str:
        return self.lake.uri(C.GOLD_RECOMMENDATIONS)


_READERS: dict[str, RecommendationReader] = {}
_READERS_LOCK = threading.Lock()


def reader_for(config: ClickrecConfig) -> RecommendationReader:
    """The process's reader for this config's lake (made on first use, refreshed by polling)."""
    key = Lake.from_config(config).uri(C.GOLD_RECOMMENDATIONS) + "|" + config.model_dump_json(include={"serve", "s3"})
    with _READERS_LOCK:
        reader = _READERS.get(key)
        if reader is None:
            reader = _READERS[key] = RecommendationReader(config)
    return reader


def recommendations(
    user_id: str, n: int = 10, variant: str = "champion", *, config: ClickrecConfig | None = None
) -> dict[str, Any]:
    """A user's top-n list of `variant` as a dict; unknown users get the popular list.

    Reads the serving tables with delta-rs (no JVM, no Spark), keeps them in memory and reloads
    when their Delta version changes (checked at most every serve.poll_seconds). `config`
    defaults to conf/local.yaml.
    """
    return reader_for(config or _default_config()).recommendations(user_id, n=n, variant=variant)


@functools.lru_cache(maxsize=1)
def _default_config() -> ClickrecConfig:
    """conf/local.yaml, read once per process (the library call is on a hot path)."""
    from clickrec.config import load_config

    return load_config()
