"""JVM-free reads of the serving tables: an immutable in-memory snapshot, brought up to date per Delta version.

gold/recommendations is held as columnar segments per variant (clickrec.serving.snapshot: sorted
user ids, flat item codes, scores and ranks; no Python object per row), gold/popular_items (one
row per variant) as dicts. A lookup is a binary search per segment and a slice of the flat
arrays: microseconds, no I/O.

`RecommendationReader.refresh` checks both tables' Delta versions and, when one moved, builds
the next Snapshot from the current one and what the new version changed
(`update_snapshot`):

- with the change data feed on (clickrec.columns.CHANGE_DATA_FEED, set when the table is
  created), the changed rows of the versions in between (`DeltaTable.load_cdf`): deleted users
  go, inserted and updated rows replace their user's row;
- otherwise the difference of the table's active files (`DeltaTable.get_add_actions`) between
  the two versions: the rows of removed files go, the rows of added files are read and replace
  their user's row;
- a full read when neither applies, and said in the log with its reason: no snapshot yet, the
  table's schema or partitioning changed, the change feed could not be read for the range
  (e.g. its log files were cleaned up) and the rows' files are not known, the new data files
  hold at least half of the table's rows (FULL_READ_SHARE: an overwrite, or a MERGE that
  rewrote most of the table), or the incremental read failed.

The new snapshot replaces the reference in one assignment, so a reader thread sees the old
snapshot or the new one, never a mix. gold/popular_items is tiny and read whole when it moves.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from clickrec import columns as C
from clickrec.config import ClickrecConfig
from clickrec.errors import (
    InputError,
    NotFoundError,
    NotPublishedError,
    SnapshotReloadError,
    first_line,
)
from clickrec.io.lake import Lake
from clickrec.serving.snapshot import (
    FILE_ID,
    ROW_COLUMNS,
    ItemNames,
    SegmentBuilder,
    VariantLists,
    build_segment,
    split_variants,
)

log = logging.getLogger(__name__)

SCORE_DIGITS = 6
_COLUMNS = (C.VARIANT, *ROW_COLUMNS)
_POPULAR_COLUMNS = (C.VARIANT, C.ITEMS, C.MODEL_NAME, C.MODEL_VERSION, C.SOURCE, C.UPDATED_AT)
# Rows per record batch of a full read: one batch at a time is in Arrow (see _read_variants).
BATCH_ROWS = 65_536
# Without the change feed, a version whose new data files hold at least this share of the
# table's rows (an overwrite, a MERGE that rewrote most files) is read whole: as much to read,
# and one compact segment instead of a stack of mostly dead rows.
FULL_READ_SHARE = 0.5


@dataclass(frozen=True)
class TableFiles:
    """What gold/recommendations' snapshot was built from: its version, schema and data files."""

    version: int
    schema: str
    partition_by: tuple[str, ...]
    files: dict[str, int]  # data file path -> file id (Segment.file_ids)
    records: dict[str, int]  # data file path -> rows (from the log's stats; -1 when absent)
    next_id: int
    change_feed: bool
    # every live row's file is known (False after change-feed rows, which name no file)
    files_exact: bool = True


@dataclass(frozen=True)
class Snapshot:
    """Everything a lookup needs, at one (recommendations, popular) pair of Delta versions."""

    table_version: int | None
    popular_version: int | None
    variants: dict[str, VariantLists] = field(default_factory=dict)
    popular: dict[str, dict[str, Any]] = field(default_factory=dict)
    loaded_at: float = 0.0  # wall-clock time (time.time) this snapshot was built
    files: TableFiles | None = None

    @property
    def published(self) -> tuple[str, ...]:
        """Variants that have lists or a popular list."""
        return tuple(sorted(set(self.variants) | set(self.popular)))

    def users(self) -> dict[str, int]:
        """Users with a list, by variant."""
        return {v: lists.count for v, lists in self.variants.items()}


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


def _add_actions(dt: Any) -> dict[str, int]:
    """The table's active data files at its version: path -> rows (-1 when the log has no stats)."""
    import pyarrow as pa

    actions = pa.table(dt.get_add_actions(flatten=True))
    paths = actions.column("path").to_pylist()
    if "num_records" in actions.column_names:
        rows = [-1 if r is None else int(r) for r in actions.column("num_records").to_pylist()]
    else:
        rows = [-1] * len(paths)
    return dict(zip(paths, rows, strict=True))


def _table_files(dt: Any, files: dict[str, int], records: dict[str, int], next_id: int, *,
                 files_exact: bool = True) -> TableFiles:
    metadata = dt.metadata()
    return TableFiles(
        version=dt.version(), schema=str(dt.schema().to_arrow()),
        partition_by=tuple(metadata.partition_columns), files=files, records=records, next_id=next_id,
        change_feed=str(metadata.configuration.get(C.CHANGE_DATA_FEED, "false")).lower() == "true",
        files_exact=files_exact,
    )


def scan_files(dt: Any, paths: dict[str, int] | None) -> Iterator[Any]:
    """_COLUMNS of the rows of the data files `paths` (path -> file id; None: every file), with
    FILE_ID, as Arrow tables of at most BATCH_ROWS rows, read one at a time."""
    import numpy as np
    import pyarrow as pa

    dataset = dt.to_pyarrow_dataset()
    schema = pa.schema([dataset.schema.field(c) for c in _COLUMNS])
    for fragment in dataset.get_fragments():
        if paths is not None and fragment.path not in paths:
            continue
        file_id = paths[fragment.path] if paths is not None else 0
        for batch in fragment.to_batches(columns=list(_COLUMNS), schema=dataset.schema, batch_size=BATCH_ROWS,
                                         batch_readahead=0, use_threads=False):
            part = pa.Table.from_batches([batch]).select(list(_COLUMNS)).cast(schema)
            yield part.append_column(FILE_ID, pa.array(np.full(part.num_rows, file_id, dtype=np.int32)))


def read_files(dt: Any, paths: dict[str, int] | None) -> Any:
    """scan_files' rows as one Arrow table (for the few files a new version added)."""
    import pyarrow as pa

    parts = list(scan_files(dt, paths))
    if not parts:
        dataset = dt.to_pyarrow_dataset()
        schema = pa.schema([dataset.schema.field(c) for c in _COLUMNS])
        return schema.empty_table().append_column(FILE_ID, pa.array([], pa.int32()))
    return pa.concat_tables(parts)


def _read_popular(pop: Any) -> dict[str, dict[str, Any]]:
    if pop is None:
        return {}
    return {str(row[C.VARIANT]): row for row in pop.to_pyarrow_table(columns=list(_POPULAR_COLUMNS)).to_pylist()}


def _read_variants(recs: Any, ids: dict[str, int], names: ItemNames) -> dict[str, VariantLists]:
    """Every row of gold/recommendations' data files `ids`, as VariantLists, one batch at a time.

    Only one record batch is in Arrow at once: each becomes a compact segment per variant
    right away, and the segments are merged at the end (SegmentBuilder), so the read's peak is
    about twice the snapshot instead of the whole table in Arrow.
    """
    import pyarrow as pa

    builders: dict[str, SegmentBuilder] = {}
    for part in scan_files(recs, ids):
        for variant, rows in split_variants(part).items():
            builders.setdefault(variant, SegmentBuilder()).add(build_segment(rows, names))
        # Arrow's allocator keeps freed pages unless asked: without this, the batches' memory
        # stays in the process next to the snapshot
        pa.default_memory_pool().release_unused()
    variants = {v: VariantLists.of(b.build(), names) for v, b in builders.items()}
    return {v: lists for v, lists in variants.items() if lists.count}


def full_snapshot(recs: Any, pop: Any, names: ItemNames) -> Snapshot:
    """Both serving tables read whole at the versions `recs` and `pop` (open DeltaTables or None)."""
    import pyarrow as pa

    variants: dict[str, VariantLists] = {}
    files = None
    if recs is not None:
        records = _add_actions(recs)
        ids = {path: i for i, path in enumerate(sorted(records))}
        variants = _read_variants(recs, ids, names)
        files = _table_files(recs, ids, records, len(ids))
    snap = Snapshot(
        table_version=recs.version() if recs is not None else None,
        popular_version=pop.version() if pop is not None else None,
        variants=variants, popular=_read_popular(pop), loaded_at=time.time(), files=files,
    )
    pa.default_memory_pool().release_unused()
    return snap


def load_snapshot(lake: Lake, names: ItemNames | None = None) -> Snapshot:
    """Read both serving tables at their latest versions (empty snapshot when not published)."""
    return full_snapshot(lake.open(C.GOLD_RECOMMENDATIONS), lake.open(C.GOLD_POPULAR_ITEMS), names or ItemNames())


class FullReadNeeded(Exception):  # control flow inside update_snapshot, never raised out of it
    """The version cannot be applied incrementally; the message says why (it goes to the log)."""


def _apply(variants: dict[str, VariantLists], names: ItemNames, *, removed_files: set[int],
           removed: dict[str, list[str]], added: Any) -> dict[str, VariantLists]:
    """`variants` with the rows of `removed_files` and the `removed` users (by variant) gone and
    the Arrow rows `added` (with a variant column) replacing their users' rows."""
    added_by_variant = split_variants(added) if added is not None else {}
    out: dict[str, VariantLists] = {}
    for variant in set(variants) | set(added_by_variant) | set(removed):
        segment = build_segment(added_by_variant[variant], names) if variant in added_by_variant else None
        lists = variants.get(variant)
        if lists is None:
            if segment is None:
                continue
            lists = VariantLists.of(segment, names)
        else:
            lists = lists.applied(removed_files=removed_files, removed_users=removed.get(variant, ()), added=segment)
        if lists.count:
            out[variant] = lists
    return out


def _change_feed_rows(recs: Any, since: int) -> tuple[dict[str, list[str]], Any]:
    """The change feed of versions since+1..recs' version: (deleted users by variant, final new rows).

    For each (variant, user) the last change counts: within one version an insert or update
    comes after a delete of the same key (an overwrite deletes the old rows and inserts new ones).
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    feed = pa.table(recs.load_cdf(starting_version=since + 1, ending_version=recs.version(),
                                  columns=[*_COLUMNS, "_change_type", "_commit_version"]).read_all())
    # in the table's types (delta-rs hands strings over as string_view)
    schema = pa.schema(recs.schema().to_arrow())
    feed = feed.cast(pa.schema([*(schema.field(c) for c in _COLUMNS), ("_change_type", pa.string()),
                                ("_commit_version", pa.int64())]))
    feed = feed.filter(pc.not_equal(feed["_change_type"], "update_preimage"))
    if feed.num_rows == 0:
        return {}, None
    order = pc.if_else(pc.equal(feed["_change_type"], "delete"), 0, 1)
    feed = feed.append_column("_order", order).sort_by(
        [(C.VARIANT, "ascending"), (C.USER_ID, "ascending"), ("_commit_version", "ascending"), ("_order", "ascending")])
    keys = pc.binary_join_element_wise(feed[C.VARIANT], feed[C.USER_ID], "\x1f").to_numpy(zero_copy_only=False)
    last = np.ones(feed.num_rows, dtype=bool)
    last[:-1] = keys[1:] != keys[:-1]
    feed = feed.filter(pa.array(last))
    deleted = feed.filter(pc.equal(feed["_change_type"], "delete"))
    removed: dict[str, list[str]] = {}
    for variant, user in zip(deleted[C.VARIANT].to_pylist(), deleted[C.USER_ID].to_pylist(), strict=True):
        removed.setdefault(str(variant), []).append(str(user))
    upserts = feed.filter(pc.not_equal(feed["_change_type"], "delete")).select(list(_COLUMNS))
    return removed, upserts if upserts.num_rows else None


def _incremental(snap: Snapshot, recs: Any, names: ItemNames) -> tuple[dict[str, VariantLists], TableFiles, str]:
    """The variants and files at recs' version from `snap`'s, and how; FullReadNeeded when it cannot."""
    old = snap.files
    if old is None:
        raise FullReadNeeded("no snapshot of the table yet")
    version = recs.version()
    if version < old.version:
        raise FullReadNeeded(f"the table went back from v{old.version} to v{version} (recreated)")
    now = _table_files(recs, {}, {}, old.next_id)
    if (now.schema, now.partition_by) != (old.schema, old.partition_by):
        raise FullReadNeeded("its schema or partitioning changed")
    records = _add_actions(recs)
    gone = [p for p in old.files if p not in records]
    new = sorted(p for p in records if p not in old.files)
    next_id = old.next_id
    ids = {p: i for p, i in old.files.items() if p in records}
    for p in new:
        ids[p] = next_id
        next_id += 1
    removed_files = {old.files[p] for p in gone}
    if now.change_feed and old.change_feed:
        try:
            removed, added = _change_feed_rows(recs, old.version)
        except Exception as exc:  # e.g. the commits of the range were cleaned up
            if not old.files_exact:
                raise FullReadNeeded(f"its change feed from v{old.version + 1} could not be read "
                                     f"({first_line(exc)})") from exc
            log.info("the change feed of %s from v%d could not be read (%s); applying its files instead",
                     C.GOLD_RECOMMENDATIONS, old.version + 1, first_line(exc))
        else:
            variants = _apply(snap.variants, names, removed_files=set(), removed=removed, added=added)
            files = replace(now, files=ids, records=records, next_id=next_id, files_exact=False)
            return variants, files, f"change feed ({0 if added is None else added.num_rows} rows)"
    if not old.files_exact:
        raise FullReadNeeded("rows read from the change feed name no data file, and the feed is off now")
    total = sum(max(0, r) for r in records.values())
    to_read = sum(max(0, records[p]) for p in new)
    if new and (to_read >= FULL_READ_SHARE * total if total else len(new) >= FULL_READ_SHARE * len(records)):
        raise FullReadNeeded(f"its new data files hold {to_read} of its {total} rows "
                             f"({len(new)} of {len(records)} files; e.g. an overwrite)")
    added = read_files(recs, {p: ids[p] for p in new}) if new else None
    variants = _apply(snap.variants, names, removed_files=removed_files, removed={}, added=added)
    files = replace(now, files=ids, records=records, next_id=next_id, files_exact=True)
    rows = 0 if added is None else added.num_rows
    return variants, files, f"files ({len(gone)} removed, {len(new)} added, {rows} rows read)"


def update_snapshot(snap: Snapshot, recs: Any, pop: Any, names: ItemNames) -> tuple[Snapshot, str]:
    """The snapshot at the versions of `recs` and `pop` (open DeltaTables or None), from `snap`.

    Reads only what changed when it can (see the module docstring), else both tables whole;
    returns the snapshot and how it was built ("full: <reason>" for a full read).
    """
    if recs is None:
        return full_snapshot(None, pop, names), "full: no recommendations table"
    if recs.version() == snap.table_version and snap.files is not None:
        variants, files, how = snap.variants, snap.files, "unchanged"
    else:
        try:
            variants, files, how = _incremental(snap, recs, names)
        except FullReadNeeded as why:
            return full_snapshot(recs, pop, names), f"full: {why}"
        except Exception as exc:
            log.warning("applying %s v%s incrementally failed (%s); reading it whole",
                        C.GOLD_RECOMMENDATIONS, recs.version(), first_line(exc))
            return full_snapshot(recs, pop, names), f"full: the incremental read failed ({first_line(exc)})"
    pop_version = pop.version() if pop is not None else None
    popular = snap.popular if pop_version == snap.popular_version else _read_popular(pop)
    return Snapshot(table_version=recs.version(), popular_version=pop_version, variants=variants,
                    popular=popular, loaded_at=time.time(), files=files), how


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
    row = lists.row(user_id, n) if lists is not None else None
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
    """Holds the current Snapshot; `refresh` brings it to the tables' newest versions.

    Also what `/healthz` and `/metrics` report: reloads done (and how many were full reads),
    failed attempts, and `fresh_at`, the last time (on `clock`) the snapshot was known to match
    the newest versions of both tables. `clock` is injectable so tests control time.
    """

    def __init__(self, config: ClickrecConfig, *, load: bool = True,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.lake = Lake.from_config(config)
        self.clock = clock
        self.names = ItemNames()
        self._lock = threading.Lock()  # one refresh at a time; lookups never take it
        self.reloads = 0  # snapshots swapped in after a version change
        self.full_reloads = 0  # of which read the tables whole
        self.failures = 0  # version checks or reloads that raised
        self.last_error: str | None = None
        self.last_reload_seconds: float | None = None
        self.current = load_snapshot(self.lake, self.names) if load else Snapshot(None, None)
        self.latest_versions: tuple[int | None, int | None] = (self.current.table_version,
                                                               self.current.popular_version)
        started = clock()
        self._checked_at = started
        self._reloaded_at = float("-inf")  # the rate limit spaces reloads; the first one is not held
        self.fresh_at = started

    def versions(self) -> tuple[int | None, int | None]:
        """The tables' latest Delta versions, read from their logs (cheap: no data files)."""
        recs = self.lake.open(C.GOLD_RECOMMENDATIONS)
        pop = self.lake.open(C.GOLD_POPULAR_ITEMS)
        return (recs.version() if recs is not None else None, pop.version() if pop is not None else None)

    def staleness(self) -> float:
        """Seconds since the snapshot was last known to match both tables' newest versions."""
        return max(0.0, self.clock() - self.fresh_at)

    def refresh(self) -> bool:
        """Bring the snapshot to the tables' newest versions; True when a new one was swapped in.

        Reloads at most once per serve.min_reload_seconds: a version that moves sooner waits
        (and counts as stale meanwhile). SnapshotReloadError (counted in `failures`) when the
        versions cannot be read or the new snapshot cannot be built; the old one stays.
        """
        with self._lock:
            now = self.clock()
            self._checked_at = now
            snap = self.current
            try:
                recs = self.lake.open(C.GOLD_RECOMMENDATIONS)
                pop = self.lake.open(C.GOLD_POPULAR_ITEMS)
            except Exception as exc:
                raise self._failed(SnapshotReloadError(C.GOLD_RECOMMENDATIONS, "its latest version", exc)) from exc
            latest = (recs.version() if recs is not None else None, pop.version() if pop is not None else None)
            self.latest_versions = latest
            if latest == (snap.table_version, snap.popular_version):
                self.fresh_at = now
                return False
            if now - self._reloaded_at < self.config.serve.min_reload_seconds:
                return False
            self._reloaded_at = now
            started = time.perf_counter()
            try:
                new, how = update_snapshot(snap, recs, pop, self.names)
            except Exception as exc:
                raise self._failed(SnapshotReloadError(
                    C.GOLD_RECOMMENDATIONS, f"v{latest[0]} (popular v{latest[1]})", exc)) from exc
            self.last_reload_seconds = time.perf_counter() - started
            self.current = new  # one reference assignment: atomic for readers
            self.reloads += 1
            self.full_reloads += how.startswith("full")
            self.fresh_at = now
            log.info("serving %s v%s, %s v%s (%s, %.3f s)", C.GOLD_RECOMMENDATIONS, new.table_version,
                     C.GOLD_POPULAR_ITEMS, new.popular_version, how, self.last_reload_seconds)
            return True

    def _failed(self, error: SnapshotReloadError) -> SnapshotReloadError:
        self.failures += 1
        self.last_error = str(error)
        return error

    def maybe_refresh(self) -> None:
        """Refresh when serve.poll_seconds have passed since the last check; a failure is logged
        and counted, and the current snapshot keeps answering."""
        if self.clock() - self._checked_at >= self.config.serve.poll_seconds:
            try:
                self.refresh()
            except SnapshotReloadError:
                log.exception("still serving %s v%s", C.GOLD_RECOMMENDATIONS, self.current.table_version)

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
