"""The closed sets of values a user picks from: one Literal each, used by the CLI, the config
and the code alike.

The CLI declares its options with these types, so `--help` lists the choices and a bad value is
refused there, before anything starts; config keys of the same type are checked by pydantic.
Deeper layers take them as given.
"""

from __future__ import annotations

from typing import Literal, get_args

# `clickrec ingest --format` / ingest.format: a REES46 clickstream or `user item rating ts` lines.
InputFormat = Literal["rees46", "ratings"]
# Registered-model aliases; a published alias is also the variant served (champion or challenger).
Alias = Literal["champion", "challenger"]
# `clickrec train --promote` / train.promote: see clickrec.ml.promotion.
PromoteMode = Literal["auto", "never", "always"]
# s3.commit: how both engines commit to an S3 store (docs/concurrency.md). conditional_put: a
# put-if-absent write (If-None-Match: *), safe with any number of writers; single_writer: for a
# store without conditional writes, one writer at a time (batch jobs refuse to run beside a stream).
CommitMode = Literal["conditional_put", "single_writer"]
# clickrec's event types (ingest.event_type_values maps a source's own names onto these).
EventType = Literal["view", "cart", "remove_from_cart", "purchase"]

ALIASES: tuple[str, ...] = get_args(Alias)
