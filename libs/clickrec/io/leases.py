"""Writer leases: a batch job asks the stream to hold its commits to a table for a while.

A batch MERGE (ingest's silver step, publish's lists) reads a whole table and runs for
seconds to minutes, while the stream commits to the same table every trigger. Optimistic
concurrency alone would fail the long MERGE on every retry, so the batch job holds a lease on
the table for the duration: a row (resource, owner, until) in the small Delta table
`<lake>/_control/leases`, renewed by a background thread and removed at the end. The stream
waits while a live lease on a table it is about to write exists. A holder that dies stops
renewing, and its lease expires after `ttl` seconds, so the stream never waits for ever.

A lease is a courtesy, not a lock: the commits themselves stay safe through Delta's conflict
checks (clickrec.io.conflicts), the lease only lets the long writer win the race. A waiter
gives up after a set time (LeaseWaitTimeoutError, naming the holders) and stops waiting when
its job is told to stop (LeaseWaitStopped).

Clocks: `until` is the holder's clock, compared with the reader's. A holder renews every
RENEW_SECONDS a lease that lasts TTL_SECONDS, so a live lease never looks expired while the
two clocks differ by less than TTL_SECONDS - RENEW_SECONDS (90 s), and a dead holder's lease
blocks for at most TTL_SECONDS plus the difference. NTP keeps machines within a second.

The stream also holds a lease while it runs, on `heartbeat_resource(query)` rather than on a
table: its heartbeat. With `s3.commit: single_writer` a batch job refuses to start while one is
live (`refuse_beside_stream`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from clickrec.choices import CommitMode
from clickrec.errors import LeaseWaitStopped, LeaseWaitTimeoutError, SingleWriterError
from clickrec.io import conflicts
from clickrec.io.delta_rs import sql_string
from clickrec.io.lake import Lake

if TYPE_CHECKING:
    import pyarrow as pa
    from deltalake import DeltaTable

log = logging.getLogger(__name__)

LEASES = "_control/leases"
TTL_SECONDS = 120.0
RENEW_SECONDS = 30.0
POLL_SECONDS = 0.5


def _schema() -> pa.Schema:
    import pyarrow as pa

    return pa.schema([("resource", pa.string()), ("owner", pa.string()), ("until", pa.timestamp("us"))])


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def _table(lake: Lake) -> DeltaTable:
    """The leases table, created empty on first use."""
    from deltalake import write_deltalake

    dt = lake.open(LEASES)
    if dt is not None:
        return dt
    try:
        write_deltalake(lake.uri(LEASES), _schema().empty_table(), mode="ignore",
                        storage_options=lake.storage_options or None)
    except Exception:  # another process created it first
        log.debug("leases table created concurrently", exc_info=True)
    return lake.require(LEASES)


def _put(lake: Lake, resource: str, owner: str, until: datetime) -> None:
    import pyarrow as pa

    row = pa.table({"resource": [resource], "owner": [owner], "until": [until]}, schema=_schema())

    def upsert(_: int) -> None:
        (_table(lake).merge(row, "t.resource = s.resource AND t.owner = s.owner", source_alias="s", target_alias="t")
         .when_matched_update_all().when_not_matched_insert_all().execute())

    conflicts.retry_on_conflict(upsert, what=f"lease on {resource}")


def _drop(lake: Lake, resource: str, owner: str) -> None:
    conflicts.retry_on_conflict(
        lambda _: _table(lake).delete(f"resource = {sql_string(resource)} AND owner = {sql_string(owner)}"),
        what=f"lease on {resource}",
    )


@contextmanager
def hold(lake: Lake, resource: str, *, owner: str, ttl: float = TTL_SECONDS,
         renew_every: float = RENEW_SECONDS, expire_on_error: bool = False) -> Iterator[None]:
    """Hold a lease on `resource` (a table name) while the block runs; renewed, then removed.

    `expire_on_error`: when the block raises, leave the lease expired instead of removing it,
    as a killed holder would, so that the next job sees the failed run (expired_owners).
    """
    _put(lake, resource, owner, _now() + timedelta(seconds=ttl))
    stop = threading.Event()

    def renew() -> None:
        while not stop.wait(renew_every):
            try:
                _put(lake, resource, owner, _now() + timedelta(seconds=ttl))
            except Exception:  # the lease then expires; the commits stay safe without it
                log.warning("could not renew the lease on %s", resource, exc_info=True)

    renewer = threading.Thread(target=renew, name=f"lease-{resource}", daemon=True)
    renewer.start()
    failed = False
    try:
        yield
    except BaseException:
        failed = True
        raise
    finally:
        stop.set()
        renewer.join()
        if failed and expire_on_error:
            _put(lake, resource, owner, _now())
        else:
            _drop(lake, resource, owner)


def expired_owners(lake: Lake, resource: str, prefix: str) -> list[str]:
    """Owners (starting with `prefix`) of leases on `resource` that expired and were never
    dropped: what a killed holder leaves behind, or one that failed with `expire_on_error`."""
    dt = lake.open(LEASES)
    if dt is None:
        return []
    now = _now()
    return sorted({str(r["owner"]) for r in dt.to_pyarrow_table().to_pylist()
                   if r["resource"] == resource and str(r["owner"]).startswith(prefix) and r["until"] <= now})


def drop(lake: Lake, resource: str, owners: Sequence[str]) -> None:
    """Remove the leases of `owners` on `resource` (the ones a killed job left)."""
    for owner in owners:
        _drop(lake, resource, owner)


class LeaseView:
    """A reader of the leases table kept open and brought up to date, not opened again.

    The stream asks before every silver and gold commit. Opening the table replays its log
    (tens of milliseconds once a few hundred leases have come and gone); an open handle reads
    only the commits since its last look, and the rows are read again only when one came.
    """

    def __init__(self, lake: Lake) -> None:
        self._lake = lake
        self._dt: DeltaTable | None = None
        self._rows: list[dict[str, object]] = []
        self._version: int | None = None

    def live(self, resources: Sequence[str]) -> list[dict[str, object]]:
        """The unexpired leases on any of `resources` (rows: resource, owner, until)."""
        if self._dt is not None:
            try:
                self._dt.update_incremental()
            except Exception:  # e.g. its log was cleaned up while the stream idled: open it again
                log.debug("reopening the leases table", exc_info=True)
                self._dt, self._version = None, None
        if self._dt is None:
            self._dt = self._lake.open(LEASES)
            if self._dt is None:
                return []
        if self._dt.version() != self._version:
            self._rows, self._version = self._dt.to_pyarrow_table().to_pylist(), self._dt.version()
        now = _now()
        return [r for r in self._rows if r["resource"] in resources and r["until"] > now]  # type: ignore[operator]

    def wait_until_free(self, resources: Sequence[str], *, timeout: float | None = None,
                        stop: threading.Event | None = None, poll: float = POLL_SECONDS) -> float:
        """Block while a live lease on one of `resources` exists; the seconds waited.

        Raises LeaseWaitTimeoutError (naming the holders) after `timeout` seconds, and
        LeaseWaitStopped as soon as `stop` is set.
        """
        started = time.monotonic()
        held = self.live(resources)
        if held:
            log.info("waiting while %s", _describe(held))
        while held:
            waited = time.monotonic() - started
            if timeout is not None and waited >= timeout:
                raise LeaseWaitTimeoutError(sorted({str(r["resource"]) for r in held}), _holders(held), waited)
            if stop is None:
                time.sleep(poll)
            elif stop.wait(poll):
                raise LeaseWaitStopped(list(resources))
            held = self.live(resources)
        return time.monotonic() - started


def _holders(held: Sequence[dict[str, object]]) -> list[str]:
    return sorted({f"{r['owner']} (until {r['until']} UTC)" for r in held})


def _describe(held: Sequence[dict[str, object]]) -> str:
    return ", ".join(f"{r['owner']} holds {r['resource']} (until {r['until']} UTC)" for r in held)


def live(lake: Lake, resources: Sequence[str]) -> list[dict[str, object]]:
    """The unexpired leases on any of `resources`, read once (see LeaseView to ask often)."""
    return LeaseView(lake).live(resources)


def wait_until_free(lake: Lake, resources: Sequence[str], *, timeout: float | None = None,
                    stop: threading.Event | None = None, poll: float = POLL_SECONDS) -> float:
    """Block while a live lease on one of `resources` exists; the seconds waited (see LeaseView)."""
    return LeaseView(lake).wait_until_free(resources, timeout=timeout, stop=stop, poll=poll)


# --- the stream's heartbeat ------------------------------------------------------------------


def heartbeat_resource(query_name: str) -> str:
    """The lease a running stream holds: `_stream/<query name>` (not a table)."""
    return f"_stream/{query_name}"


def live_streams(lake: Lake) -> list[dict[str, object]]:
    """The heartbeats of the streams running on this lake (live leases under `_stream/`)."""
    dt = lake.open(LEASES)
    if dt is None:
        return []
    now = _now()
    return [r for r in dt.to_pyarrow_table().to_pylist()
            if str(r["resource"]).startswith("_stream/") and r["until"] > now]


def refuse_beside_stream(lake: Lake, job: str, *, commit: CommitMode) -> None:
    """With `commit` single_writer (s3.commit), raise SingleWriterError when a stream's
    heartbeat is live on the lake; with conditional_put the two write together safely."""
    if commit != "single_writer":
        return
    held = live_streams(lake)
    if held:
        raise SingleWriterError(job, _holders(held))
