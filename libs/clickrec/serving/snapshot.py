"""The in-memory form of one variant's lists: columnar segments with a sorted user index.

No Python object per row. A `Segment` holds the rows of one read (a full load, or the rows a
Delta version added) as numpy arrays:

- `users`: the user ids, sorted (numpy StringDType: 16 bytes per id up to 15 characters), found
  by binary search;
- `offsets`: row i's items are `item_codes[offsets[i]:offsets[i + 1]]` (with `scores` and
  `ranks` alongside), the flat list layout of Arrow; item ids are codes into one `ItemNames`;
- `meta`: a code per row into the few distinct (model_name, model_version, source) triples;
- `updated_at`: one Arrow timestamp array (the JSON body renders it per request);
- `file_ids`: the Delta data file each row came from (-1 when unknown, e.g. a change-feed row),
  so the rows of a file a new version removed can be dropped without reading that file.

`VariantLists` is a stack of segments, oldest first, each with an `alive` mask. Applying a
change never modifies a segment: it copies the masks it changes, kills rows (by file, or by
user key) and pushes a new segment of the added rows, so a reader holding the old
VariantLists keeps a consistent view. A live user appears in at most one segment (an added row
kills the older row of its user), and `compacted` merges segments once the stack grows or its
dead rows outnumber the live ones. Every function here is pure: Arrow and numpy in, new
objects out; the Delta reads live in clickrec.serving.reader.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from clickrec import columns as C

STRINGS = np.dtypes.StringDType()
UNKNOWN_FILE = -1
# A stack deeper than this is merged (lookups cost one binary search per segment).
MAX_SEGMENTS = 6
ROW_COLUMNS = (C.USER_ID, C.ITEMS, C.MODEL_NAME, C.MODEL_VERSION, C.SOURCE, C.UPDATED_AT)
FILE_ID = "_file_id"  # the column the reader adds to every row it reads: the row's data file


class ItemNames:
    """Item id <-> int32 code, shared by every snapshot of one reader and only ever appended to.

    A snapshot only holds codes that existed when it was built, so appending (under the
    reader's reload lock) never changes what an older snapshot renders.
    """

    def __init__(self) -> None:
        self.names: list[str] = []
        self._codes: dict[str, int] = {}
        self._lock = threading.Lock()

    def codes(self, names: Sequence[str]) -> np.ndarray:
        """The code of each of `names`, adding the new ones."""
        out = np.empty(len(names), dtype=np.int32)
        with self._lock:
            for i, name in enumerate(names):
                code = self._codes.get(name)
                if code is None:
                    code = self._codes[name] = len(self.names)
                    self.names.append(name)
                out[i] = code
        return out


@dataclass(frozen=True)
class Segment:
    """Rows of one read, sorted by user id (see the module docstring for each array)."""

    users: np.ndarray
    offsets: np.ndarray
    item_codes: np.ndarray
    scores: np.ndarray
    ranks: np.ndarray
    meta_codes: np.ndarray
    metas: tuple[tuple[Any, Any, Any], ...]  # (model_name, model_version, source) per meta code
    updated_at: Any  # pyarrow TimestampArray, one value per row
    file_ids: np.ndarray

    @property
    def num_rows(self) -> int:
        return len(self.users)

    def find(self, user_id: str) -> int:
        """Row of `user_id`, or -1.

        bisect over the array, not np.searchsorted: for one needle numpy 2.4 spends time linear
        in the haystack on a StringDType array (milliseconds at a million users), bisect's
        twenty-odd element reads take microseconds.
        """
        i = bisect.bisect_left(self.users, user_id)
        return i if i < len(self.users) and self.users[i] == user_id else -1

    def find_many(self, user_ids: np.ndarray) -> np.ndarray:
        """Rows of those of `user_ids` (StringDType) that this segment holds."""
        if len(self.users) == 0 or len(user_ids) == 0:
            return np.empty(0, dtype=np.int64)
        pos = np.searchsorted(self.users, user_ids)
        keep = pos < len(self.users)
        pos, cand = pos[keep], user_ids[keep]
        return pos[self.users[pos] == cand]

    def nbytes(self) -> int:
        return int(sum(a.nbytes for a in (self.users, self.offsets, self.item_codes, self.scores,
                                          self.ranks, self.meta_codes, self.file_ids))
                   + self.updated_at.nbytes)


def _meta_codes(table: Any) -> tuple[np.ndarray, tuple[tuple[Any, Any, Any], ...]]:
    """A code per row for its (model_name, model_version, source), and the distinct triples."""
    import pyarrow.compute as pc

    parts = [pc.dictionary_encode(table[c]).combine_chunks() for c in (C.MODEL_NAME, C.MODEL_VERSION, C.SOURCE)]
    sizes = [len(p.dictionary) + 1 for p in parts]  # +1: null gets the last code
    combined = np.zeros(table.num_rows, dtype=np.int64)
    for part, size in zip(parts, sizes, strict=True):
        idx = pc.fill_null(part.indices, size - 1).to_numpy().astype(np.int64)
        combined = combined * size + idx
    uniq, inverse = np.unique(combined, return_inverse=True)
    metas = []
    for value in uniq.tolist():
        triple = []
        for part, size in reversed(list(zip(parts, sizes, strict=True))):
            value, idx = divmod(value, size)
            triple.append(None if idx == size - 1 else part.dictionary[idx].as_py())
        metas.append((triple[2], triple[1], triple[0]))
    return inverse.astype(np.int32), tuple(metas)


def build_segment(table: Any, names: ItemNames) -> Segment:
    """A Segment from Arrow rows of one variant (ROW_COLUMNS, and FILE_ID when known).

    A user listed twice keeps its last row, as a dict built over the rows would.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    n = table.num_rows
    table = table.append_column("_order", pa.array(np.arange(n, dtype=np.int64)))
    table = table.sort_by([(C.USER_ID, "ascending"), ("_order", "ascending")])
    users = np.asarray(table[C.USER_ID].to_numpy(zero_copy_only=False), dtype=object).astype(STRINGS)
    if n > 1:
        last = np.ones(n, dtype=bool)
        last[:-1] = users[1:] != users[:-1]
        if not last.all():
            keep = np.flatnonzero(last)
            table, users = table.take(pa.array(keep)), users[keep]
    items = table[C.ITEMS].combine_chunks()
    lengths = pc.fill_null(pc.list_value_length(items), 0).to_numpy(zero_copy_only=False)
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    values = items.flatten()
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    encoded = pc.dictionary_encode(pc.fill_null(values.field(C.ITEM_ID).cast(pa.string()), ""))
    dictionary_codes = names.codes(encoded.dictionary.to_pylist())
    item_codes = dictionary_codes[encoded.indices.to_numpy(zero_copy_only=False)] if len(values) else \
        np.empty(0, dtype=np.int32)
    scores = pc.fill_null(values.field(C.SCORE).cast(pa.float32()), float("nan")).to_numpy(zero_copy_only=False)
    ranks = pc.fill_null(values.field(C.RANK).cast(pa.int32()), 0).to_numpy(zero_copy_only=False)
    meta_codes, metas = _meta_codes(table)
    if FILE_ID in table.column_names:
        file_ids = table[FILE_ID].to_numpy().astype(np.int32)
    else:
        file_ids = np.full(len(users), UNKNOWN_FILE, dtype=np.int32)
    return Segment(users=users, offsets=offsets, item_codes=np.ascontiguousarray(item_codes, dtype=np.int32),
                   scores=np.ascontiguousarray(scores, dtype=np.float32),
                   ranks=np.ascontiguousarray(ranks, dtype=np.int32), meta_codes=meta_codes, metas=metas,
                   updated_at=table[C.UPDATED_AT].combine_chunks(), file_ids=file_ids)


def _gather(segments: Sequence[Segment], rows: Sequence[np.ndarray]) -> Segment:
    """One segment of `rows` of each of `segments` (in that order, not yet sorted)."""
    import pyarrow as pa

    offsets_parts, codes, scores, ranks, metas_all, meta_codes, users, files, stamps = [], [], [], [], [], [], [], [], []
    base = 0
    meta_index: dict[tuple[Any, Any, Any], int] = {}
    for seg, idx in zip(segments, rows, strict=True):
        starts, ends = seg.offsets[idx], seg.offsets[idx + 1]
        lengths = ends - starts
        total = int(lengths.sum())
        # flat positions of the kept rows' items: each run starts at its row's offset
        run_starts = np.repeat(starts - np.concatenate(([0], np.cumsum(lengths)[:-1])), lengths)
        flat = run_starts + np.arange(total, dtype=np.int64)
        codes.append(seg.item_codes[flat])
        scores.append(seg.scores[flat])
        ranks.append(seg.ranks[flat])
        offsets_parts.append(base + np.cumsum(lengths))
        base += total
        remap = np.array([meta_index.setdefault(m, len(meta_index)) for m in seg.metas], dtype=np.int32)
        meta_codes.append(remap[seg.meta_codes[idx]] if len(remap) else seg.meta_codes[idx])
        users.append(seg.users[idx])
        files.append(seg.file_ids[idx])
        stamps.append(seg.updated_at.take(pa.array(idx, type=pa.int64())))
    metas_all = sorted(meta_index, key=meta_index.__getitem__)
    stamp_type = segments[0].updated_at.type if segments else pa.timestamp("us")
    return Segment(
        users=np.concatenate(users) if users else np.empty(0, dtype=STRINGS),
        offsets=np.concatenate([np.zeros(1, dtype=np.int64), *offsets_parts]),
        item_codes=np.concatenate(codes) if codes else np.empty(0, dtype=np.int32),
        scores=np.concatenate(scores) if scores else np.empty(0, dtype=np.float32),
        ranks=np.concatenate(ranks) if ranks else np.empty(0, dtype=np.int32),
        meta_codes=np.concatenate(meta_codes).astype(np.int32) if meta_codes else np.empty(0, dtype=np.int32),
        metas=tuple(metas_all),
        updated_at=pa.concat_arrays([s.cast(stamp_type) for s in stamps]) if stamps else pa.array([], stamp_type),
        file_ids=np.concatenate(files) if files else np.empty(0, dtype=np.int32),
    )


def merge_segments(segments: Sequence[Segment], alive: Sequence[np.ndarray]) -> Segment:
    """The live rows of `segments` as one segment sorted by user."""
    merged = _gather(segments, [np.flatnonzero(a) for a in alive])
    order = np.argsort(merged.users, kind="stable")
    return _gather([merged], [order])


class SegmentBuilder:
    """One sorted Segment from many small ones (the record batches of a full read), built
    column by column.

    A full read holds the batches' compact segments only, never the table in Arrow; `build`
    concatenates one column at a time and drops that column's parts before the next, so its
    peak is the parts plus about one column's copy. A user in several parts keeps the row of
    the last part added (as build_segment keeps a user's last row).
    """

    def __init__(self) -> None:
        self.parts: list[Segment] = []

    def add(self, segment: Segment) -> None:
        if segment.num_rows:
            self.parts.append(segment)

    def build(self) -> Segment:
        import pyarrow as pa

        parts, self.parts = self.parts, []
        if len(parts) == 1:
            return parts[0]
        if not parts:
            return _gather([], [])
        users = np.concatenate([p.users for p in parts])
        order = np.argsort(users, kind="stable")
        users = users[order]
        if len(users) > 1:
            last = np.ones(len(users), dtype=bool)
            last[:-1] = users[1:] != users[:-1]
            if not last.all():
                order, users = order[last], users[last]
        # the items of row order[k]: its part's offsets, shifted by the items of the parts before
        item_base = np.cumsum([0] + [len(p.item_codes) for p in parts[:-1]])
        starts = np.concatenate([p.offsets[:-1] + base for p, base in zip(parts, item_base, strict=True)])[order]
        lengths = np.concatenate([np.diff(p.offsets) for p in parts])[order]
        offsets = np.zeros(len(order) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        flat = np.repeat(starts - offsets[:-1], lengths) + np.arange(int(offsets[-1]), dtype=np.int64)
        del starts, lengths
        meta_index: dict[tuple[Any, Any, Any], int] = {}
        remapped = []
        for p in parts:
            remap = np.array([meta_index.setdefault(m, len(meta_index)) for m in p.metas], dtype=np.int32)
            remapped.append(remap[p.meta_codes] if len(remap) else p.meta_codes)
        meta_codes = np.concatenate(remapped)[order].astype(np.int32)
        del remapped
        file_ids = np.concatenate([p.file_ids for p in parts])[order]
        stamp_type = parts[0].updated_at.type
        updated_at = pa.concat_arrays([p.updated_at.cast(stamp_type) for p in parts]).take(
            pa.array(order, type=pa.int64()))
        # the flat columns, the bulk: each part's array is let go as soon as its column is built
        columns = {name: [getattr(p, name) for p in parts] for name in ("item_codes", "scores", "ranks")}
        del parts
        built = {}
        for name, arrays in columns.items():
            whole = np.concatenate(arrays)
            arrays.clear()
            built[name] = whole[flat]
            del whole
        return Segment(users=users, offsets=offsets, item_codes=built["item_codes"], scores=built["scores"],
                       ranks=built["ranks"], meta_codes=meta_codes,
                       metas=tuple(sorted(meta_index, key=meta_index.__getitem__)),
                       updated_at=updated_at, file_ids=file_ids)


@dataclass(frozen=True)
class VariantLists:
    """One variant's lists: a stack of segments (oldest first) and which of their rows are live."""

    segments: tuple[Segment, ...]
    alive: tuple[np.ndarray, ...]
    names: ItemNames
    count: int  # live rows

    @classmethod
    def of(cls, segment: Segment, names: ItemNames) -> VariantLists:
        return cls((segment,), (np.ones(segment.num_rows, dtype=bool),), names, segment.num_rows)

    def locate(self, user_id: str) -> tuple[Segment, int] | None:
        for seg, alive in zip(reversed(self.segments), reversed(self.alive), strict=True):
            i = seg.find(user_id)
            if i >= 0 and alive[i]:
                return seg, i
        return None

    def row(self, user_id: str, n: int | None = None) -> dict[str, Any] | None:
        """The user's row (items cut to `n`) as the dict serving.reader.render reads, or None."""
        found = self.locate(user_id)
        if found is None:
            return None
        seg, i = found
        start, end = int(seg.offsets[i]), int(seg.offsets[i + 1])
        if n is not None:
            end = min(end, start + n)
        names = self.names.names
        items = [{C.ITEM_ID: names[c], C.SCORE: s, C.RANK: r} for c, s, r in zip(
            seg.item_codes[start:end].tolist(), seg.scores[start:end].tolist(), seg.ranks[start:end].tolist(),
            strict=True)]
        model_name, model_version, source = seg.metas[int(seg.meta_codes[i])]
        return {C.ITEMS: items, C.MODEL_NAME: model_name, C.MODEL_VERSION: model_version, C.SOURCE: source,
                C.UPDATED_AT: seg.updated_at[i].as_py()}

    def users(self) -> list[str]:
        """Every live user, sorted (for tests and checks; costs a pass over the rows)."""
        live = [seg.users[a] for seg, a in zip(self.segments, self.alive, strict=True)]
        return sorted(np.concatenate(live).tolist()) if live else []

    def nbytes(self) -> int:
        return sum(s.nbytes() + a.nbytes for s, a in zip(self.segments, self.alive, strict=True))

    def applied(self, *, removed_files: Iterable[int] = (), removed_users: Sequence[str] = (),
                added: Segment | None = None) -> VariantLists:
        """A new VariantLists: rows of `removed_files` and of `removed_users` gone, `added` on top.

        An added row replaces the live row of its user, wherever that row is.
        """
        files = np.fromiter(set(removed_files), dtype=np.int32)
        kill_users = np.asarray(list(removed_users), dtype=STRINGS)
        if added is not None and added.num_rows:
            kill_users = np.concatenate([kill_users, added.users])
        alive = list(self.alive)
        for k, seg in enumerate(self.segments):
            dead = np.zeros(seg.num_rows, dtype=bool)
            if len(files):
                dead |= np.isin(seg.file_ids, files)
            if len(kill_users):
                dead[seg.find_many(kill_users)] = True
            dead &= alive[k]
            if dead.any():
                alive[k] = alive[k] & ~dead
        segments = list(self.segments)
        if added is not None and added.num_rows:
            segments.append(added)
            alive.append(np.ones(added.num_rows, dtype=bool))
        count = int(sum(int(a.sum()) for a in alive))
        return VariantLists(tuple(segments), tuple(alive), self.names, count).compacted()

    def compacted(self) -> VariantLists:
        """Merge segments when the stack is deeper than MAX_SEGMENTS or mostly dead rows.

        The newer segments (everything above the oldest) are merged alone while they are
        smaller than the oldest, so a steady trickle of small changes never rewrites the bulk;
        everything is merged when the dead rows outnumber the live ones.
        """
        total = sum(s.num_rows for s in self.segments)
        if total > 2 * self.count or (len(self.segments) > 1 and self.count == 0):
            merged = merge_segments(self.segments, self.alive)
            return VariantLists.of(merged, self.names)
        if len(self.segments) <= MAX_SEGMENTS:
            return self
        head, head_alive = self.segments[0], self.alive[0]
        rest = merge_segments(self.segments[1:], self.alive[1:])
        if rest.num_rows >= int(head_alive.sum()):
            merged = merge_segments((head, rest), (head_alive, np.ones(rest.num_rows, dtype=bool)))
            return VariantLists.of(merged, self.names)
        return VariantLists((head, rest), (head_alive, np.ones(rest.num_rows, dtype=bool)), self.names, self.count)


def split_variants(table: Any) -> dict[str, Any]:
    """Arrow rows of gold/recommendations by variant (each without the variant column)."""
    import pyarrow.compute as pc

    out: dict[str, Any] = {}
    if table.num_rows == 0:
        return out
    for variant in pc.unique(table[C.VARIANT]).to_pylist():
        part = table.filter(pc.equal(table[C.VARIANT], variant))
        out[str(variant)] = part.drop_columns([C.VARIANT])
    return out

