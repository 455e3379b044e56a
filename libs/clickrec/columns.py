"""The one set of column and table names. Transformations take these as keyword defaults."""

from __future__ import annotations

from typing import Final, get_args

from clickrec.choices import EventType

# --- raw clickstream (REES46 schema) -------------------------------------------------------
EVENT_TIME: Final = "event_time"
EVENT_TYPE: Final = "event_type"
PRODUCT_ID: Final = "product_id"
CATEGORY_ID: Final = "category_id"
CATEGORY_CODE: Final = "category_code"
BRAND: Final = "brand"
PRICE: Final = "price"
USER_ID: Final = "user_id"
USER_SESSION: Final = "user_session"
REES46_COLUMNS: Final = (
    EVENT_TIME,
    EVENT_TYPE,
    PRODUCT_ID,
    CATEGORY_ID,
    CATEGORY_CODE,
    BRAND,
    PRICE,
    USER_ID,
    USER_SESSION,
)
EVENT_TYPES: Final[tuple[str, ...]] = get_args(EventType)

# --- bronze ----------------------------------------------------------------------------------
EVENT_ID: Final = "event_id"
# What a source maps its columns onto (ingest.column_mapping, ingest.constants).
CANONICAL_EVENT_COLUMNS: Final = (*REES46_COLUMNS, EVENT_ID)
EVENT_DATE: Final = "event_date"
INGEST_RUN_ID: Final = "ingest_run_id"
INGESTED_AT: Final = "ingested_at"
SOURCE_FILE: Final = "source_file"
RAW_LINE: Final = "raw_line"
REASONS: Final = "reasons"
INPUT_FORMAT: Final = "input_format"

# --- ingest working columns (parsing and validation; never stored in silver) ----------------
VALUE: Final = "value"  # one raw text line, as spark.read.text names it
COLUMN_COUNT: Final = "column_count"
UTF8_VALID: Final = "utf8_valid"
PRICE_VALID: Final = "price_valid"  # false when a price is given but is not a number
PRICE_FINITE: Final = "price_finite"  # false for a NaN or infinite price
RATING_FINITE: Final = "rating_finite"  # false for a NaN or infinite rating (--format ratings)
CORRUPT_RECORD: Final = "_corrupt_record"
RATINGS_COLUMNS: Final = ("user", "item", "rating", "timestamp")

# --- silver ----------------------------------------------------------------------------------
ITEM_ID: Final = "item_id"
VIEWS: Final = "views"
DWELL_SECONDS: Final = "dwell_seconds"
CARTS: Final = "carts"
PURCHASES: Final = "purchases"
FIRST_SEEN: Final = "first_seen"
LAST_SEEN: Final = "last_seen"
RATING: Final = "rating"
USER_IDX: Final = "user_idx"
ITEM_IDX: Final = "item_idx"
SOURCE_ID: Final = "source_id"
IDX: Final = "idx"
INTERACTION_KEYS: Final = (USER_ID, ITEM_ID)
# The bronze columns the interactions transform reads (what a job carries or reads for it).
INTERACTION_INPUTS: Final = (USER_ID, USER_SESSION, PRODUCT_ID, EVENT_TYPE, EVENT_TIME)

# --- gold ------------------------------------------------------------------------------------
VARIANT: Final = "variant"
ITEMS: Final = "items"
SCORE: Final = "score"
RANK: Final = "rank"
MODEL_NAME: Final = "model_name"
MODEL_VERSION: Final = "model_version"
SOURCE: Final = "source"
UPDATED_AT: Final = "updated_at"
# values of `source`: who wrote a list
SOURCE_BATCH: Final = "batch"
SOURCE_STREAM: Final = "stream"
SOURCE_POPULAR: Final = "popular"
RECOMMENDATION_KEYS: Final = (USER_ID, VARIANT)

# --- table columns, in table order ---------------------------------------------------------------
BRONZE_COLUMNS: Final[tuple[str, ...]] = (
    EVENT_ID, EVENT_TIME, EVENT_TYPE, PRODUCT_ID, CATEGORY_ID, CATEGORY_CODE,
    BRAND, PRICE, USER_ID, USER_SESSION, EVENT_DATE, SOURCE_FILE,
    INGEST_RUN_ID, INGESTED_AT,
)
# bronze/events' columns that come from the event itself (the writer adds the run and time stamp)
BRONZE_EVENT_COLUMNS: Final[tuple[str, ...]] = tuple(
    c for c in BRONZE_COLUMNS if c not in (INGEST_RUN_ID, INGESTED_AT)
)
QUARANTINE_COLUMNS: Final[tuple[str, ...]] = (
    RAW_LINE, REASONS, SOURCE_FILE, INPUT_FORMAT, INGEST_RUN_ID, INGESTED_AT,
)
SILVER_COLUMNS: Final[tuple[str, ...]] = (
    USER_ID, ITEM_ID, USER_IDX, ITEM_IDX, VIEWS, DWELL_SECONDS, CARTS,
    PURCHASES, FIRST_SEEN, LAST_SEEN, RATING,
)

# --- tables, relative to lake.root -------------------------------------------------------------
BRONZE_EVENTS: Final = "bronze/events"
BRONZE_QUARANTINE: Final = "bronze/quarantine"
SILVER_INTERACTIONS: Final = "silver/interactions"
SILVER_USER_INDEX: Final = "silver/user_index"
SILVER_ITEM_INDEX: Final = "silver/item_index"
GOLD_RECOMMENDATIONS: Final = "gold/recommendations"
GOLD_POPULAR_ITEMS: Final = "gold/popular_items"
# Delta table properties a table gets when it is created, by whichever writer creates it first
# (publish, or the stream before any publish; both create through clickrec.io.delta.create).
# gold/recommendations keeps a change data feed, so `clickrec serve` reloads a new version from
# its changed rows (clickrec.serving.reader); both engines write the feed on MERGE, UPDATE and
# DELETE (Spark creates the table at writer version 7 with the changeDataFeed feature).
CHANGE_DATA_FEED: Final = "delta.enableChangeDataFeed"
TABLE_PROPERTIES: Final[dict[str, dict[str, str]]] = {
    GOLD_RECOMMENDATIONS: {CHANGE_DATA_FEED: "true"},
}
ALL_TABLES: Final = (
    BRONZE_EVENTS,
    BRONZE_QUARANTINE,
    SILVER_INTERACTIONS,
    SILVER_USER_INDEX,
    SILVER_ITEM_INDEX,
    GOLD_RECOMMENDATIONS,
    GOLD_POPULAR_ITEMS,
)
