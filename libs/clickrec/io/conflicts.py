"""Redoing work whose Delta commit lost an optimistic-concurrency race.

Several writers share the lake: a batch ingest, the stream and publish. Delta (Spark and
delta-rs alike) commits optimistically: when a concurrent commit changed data that the losing
transaction read, the losing commit fails instead of overwriting it. The caller then redoes its
work from a fresh read; `retry_on_conflict` does that a few times with a short backoff.
Blind appends never conflict, so writes that must not race (index ids) are MERGEs.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import TypeVar

from clickrec.errors import ConcurrentWriteError, first_line

log = logging.getLogger(__name__)

T = TypeVar("T")

ATTEMPTS = 5


def conflict_errors() -> tuple[type[BaseException], ...]:
    """The exceptions Delta raises for a lost commit race (delta-spark's and delta-rs')."""
    from delta.exceptions import (
        ConcurrentAppendException,
        ConcurrentDeleteDeleteException,
        ConcurrentDeleteReadException,
        ConcurrentTransactionException,
        ConcurrentWriteException,
        DeltaConcurrentModificationException,
        MetadataChangedException,
        ProtocolChangedException,
    )
    from deltalake.exceptions import CommitFailedError

    return (
        ConcurrentAppendException, ConcurrentDeleteDeleteException, ConcurrentDeleteReadException,
        ConcurrentTransactionException, ConcurrentWriteException, DeltaConcurrentModificationException,
        MetadataChangedException, ProtocolChangedException, CommitFailedError,
    )


def retry_on_conflict(work: Callable[[int], T], *, what: str, attempts: int = ATTEMPTS) -> T:
    """Run `work(attempt)` (1, 2, ...) until it commits; a lost commit race runs it again.

    `work` must read what it writes from afresh on each call. After `attempts` lost races this
    raises ConcurrentWriteError naming `what`; the jobs are idempotent, so a rerun is safe.
    """
    errors = conflict_errors()
    for attempt in range(1, attempts + 1):
        try:
            return work(attempt)
        except errors as exc:
            reason = first_line(exc)
            if attempt == attempts:
                raise ConcurrentWriteError(
                    f"{what}: lost {attempts} commit races to concurrent writers ({reason}); "
                    "nothing half-written is left, rerun the job"
                ) from exc
            log.warning("%s: a concurrent writer committed first (attempt %d of %d): %s; redoing it",
                        what, attempt, attempts, reason)
            time.sleep(0.2 * attempt * (1 + random.random()))  # jitter: racing writers spread out
    raise AssertionError("unreachable")  # pragma: no cover
