"""Clickstream transformations: raw lines -> typed events -> sessionised dwell -> interactions.

Chain them with `DataFrame.transform`:

    lines_df.transform(parse_csv_lines, source_columns=...)
            .transform(to_canonical, column_mapping=...)
            .transform(type_events, time_formats=...)
            .transform(flag_rejections, checks=...)      # checks from clickrec.quality
            .transform(add_event_id)
    bronze_df.transform(events_to_interactions, ...)      # silver/interactions rows

Every function is pure (no read, write, count, collect or cache), so batch and streaming share
them and unit tests run them on small inline data.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from clickrec import columns as C

# Canonical columns of a clickstream event, in REES46 order; event_id is optional in sources.
CANONICAL_COLUMNS: tuple[str, ...] = C.CANONICAL_EVENT_COLUMNS
_ID_COLUMNS: tuple[str, ...] = (C.PRODUCT_ID, C.CATEGORY_ID, C.USER_ID, C.USER_SESSION, C.EVENT_ID)
_SEP = "\u0001"  # separator of the normalised row that the event_id hash is taken over
RATINGS_DELIMITER = "\\t|,|::"  # tab (MovieLens u.data), comma (ratings.csv) or :: (ml-1m)
_RATINGS_USER_HEADERS: tuple[str, ...] = ("user", "userid", "user_id", "user id")
_MAX_EPOCH_SECONDS = 9_223_372_036_854  # Long.MAX_VALUE / 1e6: the largest timestamp_seconds takes
# event_time_formats that are epoch numbers, not datetime patterns: the unit's size in seconds.
EPOCH_FORMATS: dict[str, int] = {"epoch_seconds": 1, "epoch_millis": 1_000, "epoch_micros": 1_000_000}


def _blank_to_null(col: Column) -> Column:
    trimmed = F.trim(col)
    return F.when(trimmed == "", F.lit(None).cast("string")).otherwise(trimmed)


def _is_finite(number: Column) -> Column:
    """False for NaN and +-Infinity (which Spark parses from "NaN", "Infinity", "inf"), else true."""
    return F.coalesce(~F.isnan(number) & (F.abs(number) != F.lit(float("inf"))), F.lit(True))


def parse_csv_lines(
    lines_df: DataFrame,
    *,
    source_columns: Sequence[str],
    delimiter: str = ",",
    value_col: str = C.VALUE,
    column_count_col: str = C.COLUMN_COUNT,
    utf8_valid_col: str = C.UTF8_VALID,
) -> DataFrame:
    """Split each raw CSV line into string columns named `source_columns`.

    Returns the input columns plus one string column per source column, `column_count` (the
    number of fields found: 0 for a blank line, the expected count for a well-formed line) and
    `utf8_valid` (false when the line's bytes are not valid UTF-8). Malformed lines are kept,
    never dropped: their problems show in these two columns.

    A line without a double quote is split on the delimiter natively (an empty field is null,
    as `from_csv` gives it); only lines with quotes go through `from_csv`. Profiling the
    staging at 1M events put half of its CPU time inside `from_csv`'s tokenizer, while
    clickstream lines are almost never quoted.
    """
    corrupt = C.CORRUPT_RECORD
    schema = ", ".join(f"`{c}` STRING" for c in source_columns) + f", `{corrupt}` STRING"
    options = {"mode": "PERMISSIVE", "columnNameOfCorruptRecord": corrupt, "sep": delimiter}
    value = F.col(value_col)
    # Each step is its own projection, so that the split and the struct are computed once per
    # line and then read by every column (inside CASE branches Spark would evaluate them again
    # for each reference).
    quoted, parts, fields = F.col("_quoted"), F.col("_parts"), F.col("_fields")
    with_parts = lines_df.withColumns(
        {"_quoted": F.contains(value, F.lit('"')), "_parts": F.split(value, re.escape(delimiter), -1)}
    )
    # from_csv's struct for a quoted line, the split fields otherwise (the corrupt-record
    # field is unused there: the split's field count is exact).
    with_fields = with_parts.withColumn(
        "_fields",
        F.when(quoted, F.from_csv(value, schema, options)).otherwise(
            F.struct(
                *[F.when(F.get(parts, i) != "", F.get(parts, i)).alias(c) for i, c in enumerate(source_columns)],
                F.lit(None).cast("string").alias(corrupt),
            )
        ),
    )
    # Count fields outside quoted sections (an unterminated quote runs to the end of the line).
    unquoted = F.regexp_replace(value, '"[^"]*"?', "")
    found = F.length(F.regexp_replace(unquoted, f"[^{re.escape(delimiter)}]", "")) + F.lit(1)
    count = (
        F.when(F.trim(value) == "", F.lit(0))
        .when(~quoted, F.size(parts))
        .when(fields[corrupt].isNull(), F.lit(len(source_columns)))
        .otherwise(found)
    )
    return with_fields.select(
        *[F.col(f"`{c}`") for c in lines_df.columns],
        *[fields[c].alias(c) for c in source_columns],
        count.cast("int").alias(column_count_col),
        F.is_valid_utf8(value).alias(utf8_valid_col),
    )


def parse_json_lines(
    lines_df: DataFrame,
    *,
    source_columns: Sequence[str],
    value_col: str = C.VALUE,
    column_count_col: str = C.COLUMN_COUNT,
    utf8_valid_col: str = C.UTF8_VALID,
) -> DataFrame:
    """Parse JSON-lines events into string columns named `source_columns`.

    Same output shape as parse_csv_lines: `column_count` is the expected count for a parseable
    object (missing keys are nulls, caught by validation) and 0 for a line that is not JSON.
    """
    corrupt = C.CORRUPT_RECORD
    schema = ", ".join(f"`{c}` STRING" for c in source_columns) + f", `{corrupt}` STRING"
    options = {"mode": "PERMISSIVE", "columnNameOfCorruptRecord": corrupt}
    value = F.col(value_col)
    parsed = F.from_json(value, schema, options)
    ok = parsed.isNotNull() & parsed[corrupt].isNull() & F.trim(value).startswith("{")
    return lines_df.select(
        "*",
        *[F.when(ok, parsed[c]).alias(c) for c in source_columns],
        F.when(ok, F.lit(len(source_columns))).otherwise(F.lit(0)).cast("int").alias(column_count_col),
        F.is_valid_utf8(value).alias(utf8_valid_col),
    )


def to_canonical(
    parsed_df: DataFrame,
    *,
    column_mapping: Mapping[str, str] | None = None,
    constants: Mapping[str, str] | None = None,
    keep: Sequence[str] = (),
) -> DataFrame:
    """Rename source columns to the canonical clickstream names (REES46 plus event_id).

    `column_mapping` maps a canonical name to the source column that holds it (the same source
    column may feed two canonical columns, e.g. a session standing in for the user).
    `constants` gives a canonical column one value on every row (a column the source lacks,
    e.g. event_type "view" for a log of views). Canonical columns neither mapped, constant nor
    present are null strings. `keep` lists extra columns passed through unchanged (raw line,
    source file, column_count, utf8_valid).
    """
    mapping = dict(column_mapping or {})
    fixed = dict(constants or {})
    present = set(parsed_df.columns)
    cols: list[Column] = []
    for name in CANONICAL_COLUMNS:
        source = mapping.get(name, name)
        if name in fixed:
            cols.append(F.lit(fixed[name]).cast("string").alias(name))
        elif source in present:
            cols.append(F.col(f"`{source}`").cast("string").alias(name))
        else:
            cols.append(F.lit(None).cast("string").alias(name))
    return parsed_df.select(*cols, *[F.col(f"`{k}`") for k in keep])


def parse_time(raw: Column, fmt: str) -> Column:
    """`raw` text as a timestamp by one event_time_formats entry; null when it does not parse.

    `fmt` is a Spark datetime pattern or one of EPOCH_FORMATS: a decimal number of seconds,
    milliseconds or microseconds since 1970-01-01 UTC (fractions allowed, kept to the
    microsecond). Out-of-range numbers are null, never an error.
    """
    if fmt not in EPOCH_FORMATS:
        return F.try_to_timestamp(raw, F.lit(fmt))
    micros_per_unit = 1_000_000 // EPOCH_FORMATS[fmt]
    number = raw.try_cast("decimal(24,6)")  # x 1e6 fits decimal(35,6): no overflow to trap
    micros = F.round(number * F.lit(micros_per_unit)).try_cast("long")
    in_range = micros.between(-_MAX_EPOCH_SECONDS * 1_000_000, _MAX_EPOCH_SECONDS * 1_000_000)
    return F.when(in_range, F.timestamp_micros(micros))


def type_events(
    events_df: DataFrame,
    *,
    time_formats: Sequence[str],
    event_type_values: Mapping[str, str] | None = None,
    event_time_col: str = C.EVENT_TIME,
    event_type_col: str = C.EVENT_TYPE,
    price_col: str = C.PRICE,
    event_date_col: str = C.EVENT_DATE,
    price_valid_col: str = C.PRICE_VALID,
    price_finite_col: str = C.PRICE_FINITE,
) -> DataFrame:
    """Give canonical string columns their types: event_time (timestamp, UTC), price (double).

    Ids are trimmed strings (blank -> null), event_type is trimmed and lower-cased, then
    renamed by `event_type_values` (source value -> clickrec's type; unmapped values stay as
    they are), brand and category_code blank -> null. `time_formats` are tried in order
    (parse_time). Unparseable values become null (never an error), so the validation step
    names them; `price_valid` is false when a price is given but is not a number (a source
    without prices is fine), `price_finite` false when it is NaN or infinite. Adds event_date,
    the partition of bronze/events.
    """
    raw_time = F.trim(F.col(event_time_col))
    parsed_time = F.coalesce(*[parse_time(raw_time, fmt) for fmt in time_formats])
    raw_price = _blank_to_null(F.col(price_col))
    price = raw_price.try_cast("double")
    event_type = F.lower(_blank_to_null(F.col(event_type_col)))
    if event_type_values:
        renamed = F.create_map(*[F.lit(x) for pair in sorted(event_type_values.items()) for x in pair])
        event_type = F.coalesce(F.element_at(renamed, event_type), event_type)
    out = events_df.withColumns(
        {
            price_valid_col: raw_price.isNull() | price.isNotNull(),
            price_finite_col: _is_finite(price),
            event_time_col: parsed_time,
            event_type_col: event_type,
            price_col: price,
            C.BRAND: _blank_to_null(F.col(C.BRAND)),
            C.CATEGORY_CODE: _blank_to_null(F.col(C.CATEGORY_CODE)),
            **{c: _blank_to_null(F.col(c)) for c in _ID_COLUMNS if c in events_df.columns},
        }
    )
    return out.withColumn(event_date_col, F.to_date(F.col(event_time_col)))


def flag_rejections(
    df: DataFrame,
    *,
    checks: Sequence[tuple[str, Column]],
    reasons_col: str = C.REASONS,
) -> DataFrame:
    """Add `reasons`: the names of every check that fails on the row (empty array: accepted).

    `checks` are (reason, failure predicate) pairs, built from the expectation suite by
    clickrec.quality.rejection_checks; a null predicate counts as passing.
    """
    flags = [F.when(F.coalesce(cond, F.lit(False)), F.lit(reason)) for reason, cond in checks]
    if not flags:
        return df.withColumn(reasons_col, F.array().cast("array<string>"))
    return df.withColumn(reasons_col, F.filter(F.array(*flags), lambda r: r.isNotNull()))


def event_id_expr(
    *,
    event_time_col: str = C.EVENT_TIME,
    source_id_col: str = C.EVENT_ID,
) -> Column:
    """The dedup key: the source's id when it has one, else SHA-256 of the normalised row.

    The normalised row is the typed values (event_time as UTC microseconds text, lower-cased
    event_type, trimmed ids, price as a double) joined with \\u0001, nulls as empty strings, so
    the same event written with other spacing, case or time format gets the same id.
    """
    parts = [
        F.date_format(F.col(event_time_col), "yyyy-MM-dd HH:mm:ss.SSSSSS"),
        F.col(C.EVENT_TYPE),
        F.col(C.PRODUCT_ID),
        F.col(C.CATEGORY_ID),
        F.col(C.CATEGORY_CODE),
        F.col(C.BRAND),
        F.col(C.PRICE).cast("string"),
        F.col(C.USER_ID),
        F.col(C.USER_SESSION),
    ]
    normalised = F.concat_ws(_SEP, *[F.coalesce(p, F.lit("")) for p in parts])
    return F.coalesce(F.col(source_id_col), F.sha2(normalised, 256))


def add_event_id(df: DataFrame, *, event_id_col: str = C.EVENT_ID) -> DataFrame:
    """Set `event_id` from event_id_expr (keeps a source id, hashes otherwise)."""
    return df.withColumn(event_id_col, event_id_expr(source_id_col=event_id_col))


def add_dwell(
    events_df: DataFrame,
    *,
    cap_seconds: float,
    last_view_seconds: float,
    user_col: str = C.USER_ID,
    session_col: str = C.USER_SESSION,
    time_col: str = C.EVENT_TIME,
    type_col: str = C.EVENT_TYPE,
    dwell_col: str = C.DWELL_SECONDS,
) -> DataFrame:
    """Sessionised dwell of every view: seconds until the user's next event in the same session.

    Events are ordered by time within (user, session), whatever order they arrive in. "Next"
    means the first event with a strictly later timestamp, so events sharing a timestamp get
    the same dwell whatever their order. The dwell is capped at `cap_seconds`; a view with no
    later event in its session (the last view, or a single-event session) gets
    `last_view_seconds`. Non-view events get a null dwell.
    """
    micros = F.unix_micros(F.col(time_col))
    # The next strictly later time is the smallest of all later ones. In descending order they
    # are the rows from the start up to one microsecond before this row: a frame that only
    # grows, so Spark updates the min row by row (linear). The ascending frame "1 following to
    # unbounded following" is recomputed for every row, which is quadratic in the session's
    # length (long bot sessions; docs/benchmarks.md has the measurement).
    later = (
        Window.partitionBy(user_col, session_col)
        .orderBy(micros.desc())
        .rangeBetween(Window.unboundedPreceding, -1)
    )
    next_micros = F.min(micros).over(later)
    gap = (next_micros - micros).cast("double") / F.lit(1_000_000.0)
    dwell = (
        F.when(F.col(type_col) != F.lit("view"), F.lit(None).cast("double"))
        .when(next_micros.isNull(), F.lit(float(last_view_seconds)))
        .otherwise(F.least(gap, F.lit(float(cap_seconds))))
    )
    return events_df.withColumn(dwell_col, dwell)


def aggregate_interactions(
    events_df: DataFrame,
    *,
    user_col: str = C.USER_ID,
    product_col: str = C.PRODUCT_ID,
    time_col: str = C.EVENT_TIME,
    type_col: str = C.EVENT_TYPE,
    dwell_col: str = C.DWELL_SECONDS,
    item_col: str = C.ITEM_ID,
) -> DataFrame:
    """One row per (user, item): views, dwell seconds, carts, purchases, first/last seen.

    Expects the dwell column of add_dwell. Pairs with no view, cart or purchase (only
    remove_from_cart) carry no positive signal and are left out.
    """
    etype = F.col(type_col)

    def n_of(kind: str) -> Column:
        return F.count(F.when(etype == kind, F.lit(1))).cast("long")

    agg = events_df.groupBy(F.col(user_col).alias(user_col), F.col(product_col).alias(item_col)).agg(
        n_of("view").alias(C.VIEWS),
        F.coalesce(F.sum(dwell_col), F.lit(0.0)).alias(C.DWELL_SECONDS),
        n_of("cart").alias(C.CARTS),
        n_of("purchase").alias(C.PURCHASES),
        F.min(time_col).alias(C.FIRST_SEEN),
        F.max(time_col).alias(C.LAST_SEEN),
    )
    return agg.where((F.col(C.VIEWS) + F.col(C.CARTS) + F.col(C.PURCHASES)) > 0)


def add_implicit_rating(
    interactions_df: DataFrame,
    *,
    view_weight: float = 1.0,
    dwell_weight: float = 1.0,
    dwell_unit_seconds: float = 60.0,
    cart_weight: float = 4.0,
    purchase_weight: float = 10.0,
    decay_half_life_days: float | None = None,
    user_col: str = C.USER_ID,
    rating_col: str = C.RATING,
) -> DataFrame:
    """The implicit rating of a (user, item) pair -- the one place the formula is written down.

        base   = view_weight     * views
               + dwell_weight    * ln(1 + dwell_seconds / dwell_unit_seconds)
               + cart_weight     * carts
               + purchase_weight * purchases
        decay  = 0.5 ** (age_days / decay_half_life_days)   (1 when decay_half_life_days is None)
        age_days = (user's latest last_seen over all items - this pair's last_seen) / 86400
        rating = round(base * decay, 6)

    Dwell enters through a log so that one very long look does not outweigh a purchase. The
    decay is measured against the user's own latest event (not the wall clock), so a rating
    only changes when that user acts: an incremental update of the affected users equals a
    full recompute. Weights and the half-life come from conf (`ingest.rating`).
    """
    base = (
        F.lit(view_weight) * F.col(C.VIEWS)
        + F.lit(dwell_weight) * F.log1p(F.col(C.DWELL_SECONDS) / F.lit(dwell_unit_seconds))
        + F.lit(cart_weight) * F.col(C.CARTS)
        + F.lit(purchase_weight) * F.col(C.PURCHASES)
    )
    if decay_half_life_days is None:
        rating = base
    else:
        user_last = F.max(F.col(C.LAST_SEEN)).over(Window.partitionBy(user_col))
        age_days = (F.unix_micros(user_last) - F.unix_micros(F.col(C.LAST_SEEN))) / F.lit(86_400e6)
        rating = base * F.pow(F.lit(0.5), age_days / F.lit(decay_half_life_days))
    return interactions_df.withColumn(rating_col, F.round(rating.cast("double"), 6))


def events_to_interactions(
    events_df: DataFrame,
    *,
    cap_seconds: float,
    last_view_seconds: float,
    rating: Mapping[str, float | None],
) -> DataFrame:
    """Bronze events -> silver/interactions rows (without the int ids): dwell, aggregate, rate.

    `rating` holds add_implicit_rating's keyword arguments (conf `ingest.rating`).
    """
    return (
        events_df.transform(add_dwell, cap_seconds=cap_seconds, last_view_seconds=last_view_seconds)
        .transform(aggregate_interactions)
        .transform(add_implicit_rating, **rating)
    )


# --- `user item rating timestamp` inputs (MovieLens and the like) -----------------------------


def parse_ratings_lines(
    lines_df: DataFrame,
    *,
    delimiter_regex: str = RATINGS_DELIMITER,
    value_col: str = C.VALUE,
    column_count_col: str = C.COLUMN_COUNT,
    utf8_valid_col: str = C.UTF8_VALID,
    rating_finite_col: str = C.RATING_FINITE,
) -> DataFrame:
    """Split `user item rating timestamp` lines (tab, comma or ::) into typed columns.

    Returns the input columns plus user_id, item_id (trimmed strings, blank -> null), rating
    (double), event_time (timestamp from epoch seconds), column_count, utf8_valid and
    rating_finite (false for NaN or an infinite rating, which would make every ALS factor
    NaN). Bad values become nulls for validation to name.
    """
    value = F.col(value_col)
    parts = F.split(F.trim(value), delimiter_regex)
    n = F.when(F.trim(value) == "", F.lit(0)).otherwise(F.size(parts))

    def part(i: int) -> Column:
        return _blank_to_null(F.get(parts, i))

    rating = part(2).try_cast("double")
    seconds = part(3).try_cast("long")
    # timestamp_seconds throws on overflow (|seconds| above ~9.2e12, e.g. epoch microseconds):
    # out of that range the time is null, so the row is quarantined instead of failing the job.
    in_range = seconds.between(-_MAX_EPOCH_SECONDS, _MAX_EPOCH_SECONDS)
    return lines_df.select(
        "*",
        part(0).alias(C.USER_ID),
        part(1).alias(C.ITEM_ID),
        rating.alias(C.RATING),
        F.when(in_range, F.timestamp_seconds(seconds)).alias(C.EVENT_TIME),
        n.cast("int").alias(column_count_col),
        F.is_valid_utf8(value).alias(utf8_valid_col),
        _is_finite(rating).alias(rating_finite_col),
    )


def is_ratings_header(value: Column, *, delimiter_regex: str = RATINGS_DELIMITER) -> Column:
    """True for a `user item rating timestamp` header line, e.g. `userId,movieId,rating,timestamp`.

    A header is a line whose first field, unquoted, is a user column name and whose rating
    field is not a number. A data row whose user id merely starts with "user" (`user42`) is
    not one: a header line is dropped before rows are counted, so a looser test would lose
    rows without a trace.
    """
    parts = F.split(F.trim(value), delimiter_regex)
    first = F.lower(F.trim(F.translate(F.get(parts, 0), '"', "")))
    rating = F.trim(F.translate(F.get(parts, 2), '"', ""))
    # The cheap test first (And stops there for almost every line): the split is for candidates.
    maybe = value.rlike(r'(?i)^\s*"?user')
    return maybe & first.isin(*_RATINGS_USER_HEADERS) & rating.try_cast("double").isNull()


def ratings_to_interactions(
    ratings_df: DataFrame,
    *,
    user_col: str = C.USER_ID,
    item_col: str = C.ITEM_ID,
    time_col: str = C.EVENT_TIME,
    rating_col: str = C.RATING,
) -> DataFrame:
    """Explicit ratings -> silver/interactions rows: the latest rating of each (user, item).

    Ties on time keep the highest rating, so the result does not depend on input order. The
    clickstream measures are zero: the explicit rating is kept as the rating.
    """
    latest = Window.partitionBy(user_col, item_col).orderBy(F.col(time_col).desc(), F.col(rating_col).desc())
    first = ratings_df.withColumn("_n", F.row_number().over(latest)).where(F.col("_n") == 1)
    return first.select(
        F.col(user_col).alias(C.USER_ID),
        F.col(item_col).alias(C.ITEM_ID),
        F.lit(0).cast("long").alias(C.VIEWS),
        F.lit(0.0).alias(C.DWELL_SECONDS),
        F.lit(0).cast("long").alias(C.CARTS),
        F.lit(0).cast("long").alias(C.PURCHASES),
        F.col(time_col).alias(C.FIRST_SEEN),
        F.col(time_col).alias(C.LAST_SEEN),
        F.col(rating_col).cast("double").alias(C.RATING),
    )
