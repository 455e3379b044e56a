"""The one config loader: YAML file + `--set dotted.key=value` overrides -> frozen typed objects.

Every section is a pydantic model that forbids unknown keys, so a typo is an error naming the
key (`config key 'spark.mastr': unknown key`). Values may reference environment variables as
`${NAME}` or `${NAME:-default}`; secrets are never read from the file, only from the
environment (see `S3Config.credentials`).
"""

from __future__ import annotations

import codecs
import os
import re
from collections.abc import Iterable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from clickrec import columns as C
from clickrec.choices import Alias, CommitMode, EventType, InputFormat, PromoteMode
from clickrec.errors import ConfigError, ConfigKeyError

DEFAULT_CONFIG = Path("conf/local.yaml")


class _TextTimesLoader(yaml.SafeLoader):
    """YAML's safe loader, except that dates and times stay text (the fields are ISO strings:
    unquoted `start: 2019-10-01` would otherwise be a date object, not a valid string)."""


_TextTimesLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _load_yaml(text: str) -> Any:
    return yaml.load(text, Loader=_TextTimesLoader)  # a SafeLoader: no arbitrary objects


_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _iso_datetime(value: str) -> str:
    """Refuse a date or time that is not ISO 8601 ("2019-10-01" or "2019-10-01 00:00:00")."""
    try:
        datetime.fromisoformat(value)
    except ValueError:
        raise ValueError("not an ISO date or time, e.g. 2019-10-01 or 2019-10-01 00:00:00") from None
    return value


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class SparkConfig(_Section):
    """How the one Spark session is built (see clickrec.spark)."""

    # None leaves master and driver memory to spark-submit (the spark-operator sets them).
    master: str | None = "local[*]"
    app_name: str = "clickrec"
    driver_memory: str | None = "4g"
    shuffle_partitions: int = Field(default=8, ge=1)
    ui_enabled: bool = False
    log_level: Literal["ALL", "DEBUG", "INFO", "WARN", "ERROR", "FATAL", "OFF"] = "WARN"
    # Folder of the jars `make setup` caches (Delta, Kafka source, S3A). None: the jars are
    # already on the classpath, as in the Kubernetes image.
    jars_dir: str | None = ".cache/jars/spark"
    checkpoint_dir: str = ".lake/checkpoints"
    conf: dict[str, str] = Field(default_factory=dict)


class LakeConfig(_Section):
    """Where the Delta tables live: a local folder or an s3a:// prefix."""

    root: str = ".lake/lake"


class S3Config(_Section):
    """S3A settings. Credentials come only from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY."""

    endpoint: str | None = None
    path_style_access: bool = True
    ssl_enabled: bool = False
    region: str = "us-east-1"
    # How a commit to _delta_log/<version>.json is made (clickrec.choices.CommitMode): a
    # conditional PUT that fails when another writer took the version, or, explicitly, the
    # single-writer rename of a store without conditional writes.
    commit: CommitMode = "conditional_put"

    def credentials(self) -> tuple[str, str] | None:
        """Return (access key, secret key) from the environment, or None when unset."""
        key = os.environ.get("AWS_ACCESS_KEY_ID")
        secret = os.environ.get("AWS_SECRET_ACCESS_KEY")
        if key and secret:
            return key, secret
        return None


class KafkaConfig(_Section):
    """Kafka endpoints and topics; bootstrap_servers None means no Kafka (embedded default)."""

    bootstrap_servers: str | None = None
    clickstream_topic: str = "clickstream"
    models_topic: str = "models"


class MlflowConfig(_Section):
    """MLflow tracking and registry. SQLite locally, a server in stack and k8s modes."""

    tracking_uri: str = "sqlite:///.lake/mlflow.db"
    registry_uri: str | None = None
    experiment: str = "clickrec"
    model_name: str = "clickrec-als"
    # Where runs of a new experiment keep artifacts when the tracking store is a file/SQLite.
    artifact_location: str | None = ".lake/mlartifacts"
    # Each HTTP request to an MLflow server (runs, registry, proxied artifacts) gives up after
    # http_timeout_seconds and is retried http_max_retries times, waiting backoff_factor * 2^n s
    # in between, before the job fails with exit 4 (MLflow's own defaults: 120 s, 7 retries,
    # factor 2: about 4 minutes per call). clickrec.tracking.Tracking sets MLflow's variables
    # MLFLOW_HTTP_REQUEST_TIMEOUT / _MAX_RETRIES / _BACKOFF_FACTOR from them.
    http_timeout_seconds: int = Field(default=30, ge=1, le=3600)
    http_max_retries: int = Field(default=3, ge=0, le=10)  # MLflow refuses more than 10
    http_backoff_factor: int = Field(default=1, ge=0, le=120)
    # The same for `clickrec stream`, whose micro-batch waits for MLflow when it follows the model.
    stream_http_timeout_seconds: int = Field(default=10, ge=1, le=3600)
    stream_http_max_retries: int = Field(default=1, ge=0, le=10)


class TrainGridConfig(_Section):
    """Hyperparameter grid searched by cross-validation (every combination is tried)."""

    rank: list[int] = Field(default_factory=lambda: [16, 48])
    reg_param: list[float] = Field(default_factory=lambda: [0.1, 1.0])
    # The implicit rating is about 1-20 (see ingest.rating): small alphas keep confidence sane.
    alpha: list[float] = Field(default_factory=lambda: [0.5, 2.0])
    max_iter: list[int] = Field(default_factory=lambda: [10])

    @field_validator("rank", "alpha", "max_iter")
    @classmethod
    def _positive(cls, value: list[Any]) -> list[Any]:
        if not value or any(v <= 0 for v in value):
            raise ValueError("must list at least one value, all > 0")
        return value

    @field_validator("reg_param")
    @classmethod
    def _non_negative(cls, value: list[float]) -> list[float]:
        if not value or any(v < 0 for v in value):
            raise ValueError("must list at least one value, all >= 0")
        return value


class TrainConfig(_Section):
    """`clickrec train`: split, tuning, evaluation and promotion."""

    split: Literal["stratified_random", "temporal"] = "stratified_random"
    test_fraction: float = Field(default=0.25, gt=0.0, lt=1.0)
    seed: int = 42
    k: int = Field(default=10, ge=1, le=1000)
    tuning: Literal["cv", "train_validation"] = "cv"
    num_folds: int = Field(default=3, ge=2, le=20)
    train_ratio: float = Field(default=0.75, gt=0.0, lt=1.0)
    metric: Literal["ndcg", "precision", "recall", "map"] = "ndcg"
    parallelism: int = Field(default=1, ge=1)
    implicit_prefs: bool = True
    nonnegative: bool = False
    checkpoint_interval: int = Field(default=5, ge=1)
    # ALS user and item blocks (Spark's default is 10; fewer suits small data on few cores).
    num_blocks: int = Field(default=10, ge=1)
    # The rating column ALS reads: the implicit rating, or the explicit one of --format ratings.
    rating_col: str = "rating"
    grid: TrainGridConfig = Field(default_factory=TrainGridConfig)
    promote: PromoteMode = "auto"
    # A challenger replaces the champion when its metric on the same test split exceeds the
    # champion's by more than this (absolute) margin.
    promotion_margin: float = Field(default=0.0, ge=0.0)

    @model_validator(mode="after")
    def _tuning_follows_the_split(self) -> TrainConfig:
        # k-fold CV deals validation rows at random; tuning a temporal model on them would
        # select on a protocol the test does not follow (and train on each user's future).
        if self.split == "temporal" and self.tuning == "cv":
            raise ValueError(
                "train.split=temporal needs train.tuning=train_validation (each user's latest "
                "1 - train.train_ratio of the training part is the validation set); "
                "train.tuning=cv deals its folds at random"
            )
        return self


class RatingConfig(_Section):
    """Weights of the implicit rating; the formula is documented once, in
    clickrec.transforms.clickstream.add_implicit_rating."""

    view_weight: float = 1.0
    dwell_weight: float = 1.0
    dwell_unit_seconds: float = Field(default=60.0, gt=0)
    cart_weight: float = 4.0
    purchase_weight: float = 10.0
    # None: no decay. Otherwise the rating halves for every half-life between the pair's last
    # event and the user's latest event (per user, so incremental equals a full recompute).
    decay_half_life_days: float | None = Field(default=None, gt=0)


class IngestConfig(_Section):
    """`clickrec ingest`: input parsing, column mapping, validation bounds, dwell and rating."""

    format: InputFormat = "rees46"
    # csv or json lines; auto picks json for *.json, *.jsonl, *.ndjson (optionally .gz).
    file_format: Literal["auto", "csv", "json"] = "auto"
    header: bool = True  # csv: a line equal to the joined source_columns is a header, not a row
    # One character; escape sequences are decoded, so `--set 'ingest.delimiter=\t'` is a tab
    # (also \x1f, \u0001 and the like).
    delimiter: str = Field(default=",", min_length=1, max_length=1)
    # Column names of the source, in file order (csv) or as keys (json).
    source_columns: tuple[str, ...] = (
        "event_time", "event_type", "product_id", "category_id", "category_code",
        "brand", "price", "user_id", "user_session",
    )
    # canonical REES46 name (or event_id) -> source column. Unmapped canonical columns are taken
    # by their own name when the source has them, else null. A session-only log can map
    # user_id and user_session to the same source column.
    column_mapping: dict[str, str] = Field(default_factory=dict)
    # canonical column -> the value every row gets, for a column the source lacks (e.g.
    # {event_type: view} for a log of views only). A constant replaces what the source has.
    constants: dict[str, str] = Field(default_factory=dict)
    # source event-type value (case-insensitive) -> clickrec's event type, e.g.
    # {addtocart: cart, transaction: purchase}. Values neither mapped nor clickrec's own are
    # quarantined as event_type_unknown.
    event_type_values: dict[str, EventType] = Field(default_factory=dict)
    # Tried in order; Spark datetime patterns, or epoch numbers: epoch_seconds (fractions
    # allowed, e.g. 1443440412.25), epoch_millis, epoch_micros.
    event_time_formats: tuple[str, ...] = Field(
        default=("yyyy-MM-dd HH:mm:ss 'UTC'", "yyyy-MM-dd HH:mm:ss", "yyyy-MM-dd'T'HH:mm:ss[.SSSSSS]XXX"),
        min_length=1,
    )
    event_time_min: str = "1995-01-01 00:00:00"
    event_time_max: str = "2100-01-01 00:00:00"

    @field_validator("event_time_min", "event_time_max")
    @classmethod
    def _bound_is_a_time(cls, value: str) -> str:
        return _iso_datetime(value)
    dwell_cap_seconds: float = Field(default=1800.0, gt=0)
    last_view_dwell_seconds: float = Field(default=30.0, ge=0)
    rating: RatingConfig = Field(default_factory=RatingConfig)
    # `user item rating timestamp` files: fields split by this regex (tab, comma or ::).
    ratings_delimiter: str = "\\t|,|::"
    events_suite: str = "conf/expectations/clickstream_events.json"
    ratings_suite: str = "conf/expectations/ratings.json"
    # Quality gate: above this fraction of rejected rows the batch fails and nothing is written.
    max_rejected_fraction: float = Field(default=0.5, ge=0, le=1)
    data_docs: bool = True
    # Scratch of a killed ingest or stream batch (<lake.root>/_staging/<run id>) untouched for
    # this long is removed by the next ingest.
    stale_staging_hours: float = Field(default=24.0, gt=0)

    @field_validator("delimiter", mode="before")
    @classmethod
    def _decode_escapes(cls, value: Any) -> Any:
        if isinstance(value, str) and "\\" in value:
            try:
                return codecs.decode(value, "unicode_escape")
            except (UnicodeDecodeError, UnicodeEncodeError) as exc:
                raise ValueError(f"not a valid escape sequence: {exc.reason}") from None
        return value

    @field_validator("column_mapping", "constants")
    @classmethod
    def _keys_are_clickstream_columns(cls, value: dict[str, str], info: ValidationInfo) -> dict[str, str]:
        known = set(C.CANONICAL_EVENT_COLUMNS)
        for key, given in value.items():
            if key not in known:
                raise ValueError(f"{info.field_name}.{key}: not a clickstream column ({sorted(known)})")
            if info.field_name == "column_mapping" and not str(given).strip():
                raise ValueError(f"column_mapping.{key}: the source column name is empty")
        return value

    @field_validator("event_type_values")
    @classmethod
    def _source_values_lower_case(cls, value: dict[str, str]) -> dict[str, str]:
        # type_events lower-cases and trims the source value before it is looked up
        return {str(k).strip().lower(): v for k, v in value.items()}

    @model_validator(mode="after")
    def _constant_or_mapped(self) -> IngestConfig:
        both = sorted(set(self.constants) & set(self.column_mapping))
        if both:
            raise ValueError(f"{both}: in both ingest.constants and ingest.column_mapping; keep one")
        return self


class GenerateConfig(_Section):
    """`clickrec generate`: the shape of the synthetic shop (sizes scale with --events)."""

    seed: int = 42
    start: str = "2019-10-01"

    @field_validator("start")
    @classmethod
    def _start_is_a_date(cls, value: str) -> str:
        return _iso_datetime(value)
    days: int = Field(default=30, ge=1)
    events_per_user: float = Field(default=40.0, gt=0)
    events_per_item: float = Field(default=80.0, gt=0)
    categories: int = Field(default=40, ge=2)
    mean_session_events: float = Field(default=6.0, ge=1)
    taste_concentration: float = Field(default=0.15, gt=0)  # Dirichlet alpha; small = focused
    noise: float = Field(default=0.1, ge=0, le=1)  # share of views on globally popular items


class PublishConfig(_Section):
    """`clickrec publish`: top-N lists of a registered model -> gold/recommendations."""

    # List length written per user (what the service can return at most).
    n: int = Field(default=10, ge=1, le=1000)
    # What a user is never recommended again: items bought (purchases > 0) or every item seen.
    exclude: Literal["bought", "seen"] = "bought"
    # Length of gold/popular_items, the list unknown users get.
    popular_n: int = Field(default=100, ge=1, le=10000)
    # The confidence rule (clickrec.ml.confidence): a user whose factor was fitted on fewer
    # interactions than this is served the popular list (source `popular`); 0 or 1: off.
    min_user_interactions: int = Field(default=0, ge=0)
    # Variants `clickrec pipeline` publishes after training (the champion, and the challenger beside it).
    pipeline_aliases: tuple[Alias, ...] = ("champion", "challenger")
    # Seconds to wait for the broker to acknowledge the `models` announcement.
    announce_timeout_seconds: float = Field(default=30.0, gt=0)


class ServeConfig(_Section):
    """`clickrec serve` and the clickrec.serving reader."""

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    # How often the service (and a long-lived reader) checks for a new Delta version.
    poll_seconds: float = Field(default=5.0, gt=0, le=3600)
    # Largest `n` a request may ask for (422 above it).
    max_n: int = Field(default=100, ge=1, le=1000)
    # Longest user id accepted (422 above it).
    max_user_id_length: int = Field(default=128, ge=1, le=1024)
    # At most one reload per this many seconds: a table that commits every stream trigger is
    # reloaded at this pace, not at every commit (0: whenever a poll sees a new version).
    min_reload_seconds: float = Field(default=10.0, ge=0, le=3600)
    # /healthz answers 503 once the snapshot has not matched the tables' newest versions for
    # this long (a failing or rate-limited reload, an unreachable store); null: never.
    max_staleness_seconds: float | None = Field(default=300.0, gt=0)
    # Serve /metrics on this port instead of the API's (null: the API's port serves it).
    metrics_port: int | None = Field(default=None, ge=1, le=65535)

    @model_validator(mode="after")
    def _staleness_allows_a_reload(self) -> ServeConfig:
        limit = self.max_staleness_seconds
        if limit is not None and limit <= self.poll_seconds + self.min_reload_seconds:
            raise ValueError(
                f"max_staleness_seconds ({limit}) must exceed poll_seconds + min_reload_seconds "
                f"({self.poll_seconds} + {self.min_reload_seconds}): a healthy service would be stale"
            )
        if self.metrics_port is not None and self.metrics_port == self.port:
            raise ValueError(f"metrics_port ({self.metrics_port}) must differ from port (null: the same port)")
        return self


class StreamConfig(_Section):
    """`clickrec stream` and `clickrec replay`: the Kafka clickstream -> bronze/silver/gold refresh."""

    # The query's name: its checkpoint is <lake.root>/_checkpoints/stream/<query_name>, its
    # progress metrics <lake.root>/_metrics/stream/<query_name>.json.
    query_name: str = Field(default="clickstream-refresh", pattern=r"^[A-Za-z0-9_.-]+$")
    starting_offsets: Literal["earliest", "latest"] = "earliest"
    # Most Kafka records per micro-batch (None: everything available).
    max_offsets_per_trigger: int | None = Field(default=20000, ge=1)
    trigger_seconds: float = Field(default=1.0, ge=0)
    fail_on_data_loss: bool = True
    # The served list refreshed by fold-in (the champion's item factors).
    variant: Alias = "champion"
    # Seconds a SIGTERM waits for the running micro-batch before stopping the query.
    stop_timeout_seconds: float = Field(default=120.0, gt=0)
    # `clickrec replay`: events per second (0: as fast as the broker takes them).
    replay_rate: float = Field(default=100.0, ge=0)
    # Longest wait of a micro-batch for a batch job's lease on bronze, silver or gold (an ingest
    # or publish holds one while it writes) before the stream fails with exit 4 naming the holder.
    lease_wait_seconds: float = Field(default=1800.0, gt=0)


class ClickrecConfig(_Section):
    """The whole config. Sections for later jobs are added here, one model each."""

    spark: SparkConfig = Field(default_factory=SparkConfig)
    lake: LakeConfig = Field(default_factory=LakeConfig)
    s3: S3Config = Field(default_factory=S3Config)
    kafka: KafkaConfig = Field(default_factory=KafkaConfig)
    mlflow: MlflowConfig = Field(default_factory=MlflowConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    ingest: IngestConfig = Field(default_factory=IngestConfig)
    generate: GenerateConfig = Field(default_factory=GenerateConfig)
    publish: PublishConfig = Field(default_factory=PublishConfig)
    serve: ServeConfig = Field(default_factory=ServeConfig)
    stream: StreamConfig = Field(default_factory=StreamConfig)

    @field_validator("lake")
    @classmethod
    def _lake_root_not_empty(cls, value: LakeConfig) -> LakeConfig:
        if not value.root.strip():
            raise ValueError("lake.root must not be empty")
        return value


def _expand_env(value: Any, key: str) -> Any:
    """Replace ${NAME} and ${NAME:-default} in strings; an unset NAME without default is an error."""
    if isinstance(value, dict):
        return {k: _expand_env(v, f"{key}.{k}" if key else str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand_env(v, f"{key}[{i}]") for i, v in enumerate(value)]
    if not isinstance(value, str):
        return value

    def replace(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        found = os.environ.get(name)
        if found is not None and found != "":
            return found
        if default is not None:
            return default
        raise ConfigKeyError(
            key, f"environment variable {name} is not set (for conf/stack.yaml run `clickrec services up`, "
            "then `source .clickrec/services/services.env`)"
        )

    expanded = _ENV_REF.sub(replace, value)
    # A whole-value reference may stand for a non-string (port number, boolean, null).
    if _ENV_REF.fullmatch(value):
        if expanded == "":
            return None
        try:
            return _load_yaml(expanded)
        except yaml.YAMLError:  # not a YAML scalar (e.g. "{oops"): the text itself
            return expanded
    return expanded


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split `a.b.c=value` into (["a", "b", "c"], parsed value); the value is read as YAML."""
    if "=" not in text:
        raise ConfigError(f"--set '{text}': expected dotted.key=value")
    key, raw = text.split("=", 1)
    parts = [p for p in key.strip().split(".")]
    if not key.strip() or any(not p for p in parts):
        raise ConfigError(f"--set '{text}': the key must be dotted names like spark.master")
    # Whitespace and a lone punctuation character are kept as typed (delimiters: a tab, `|`,
    # `;`); YAML would read them as null, a block scalar or an error.
    if not raw.strip() or (len(raw) == 1 and not raw.isalnum() and raw != "~"):
        return parts, raw
    try:
        value = _load_yaml(raw)
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set '{text}': value is not valid YAML: {exc}") from exc
    return parts, value


# Free-form maps whose own keys contain dots (Spark options): `--set spark.conf.spark.x.y=1`.
FREEFORM_MAPS: tuple[tuple[str, ...], ...] = (("spark", "conf"),)


def _apply_override(data: dict[str, Any], parts: list[str], value: Any) -> None:
    for prefix in FREEFORM_MAPS:
        if tuple(parts[: len(prefix)]) == prefix and len(parts) > len(prefix):
            parts = [*prefix, ".".join(parts[len(prefix) :])]
            if not isinstance(value, str):
                value = str(value).lower() if isinstance(value, bool) else str(value)
    node = data
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = {}
            node[part] = child
        elif not isinstance(child, dict):
            dotted = ".".join(parts[: i + 1])
            raise ConfigError(f"--set {'.'.join(parts)}: '{dotted}' is a value, not a section")
        node = child
    node[parts[-1]] = value


def _format_validation_error(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(root)"
        problem = "unknown key" if err["type"] == "extra_forbidden" else f"{err['msg']} (got {err.get('input')!r})"
        lines.append(str(ConfigKeyError(key, problem)))
    return "; ".join(lines)


def build_config(data: Mapping[str, Any] | None = None, overrides: Iterable[str] = ()) -> ClickrecConfig:
    """Validate a raw mapping plus `--set` overrides into a ClickrecConfig."""
    raw: dict[str, Any] = _deep_copy(dict(data or {}))
    for text in overrides:
        parts, value = parse_override(text)
        _apply_override(raw, parts, value)
    raw = _expand_env(raw, "")
    try:
        return ClickrecConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc)) from exc


def load_config(path: str | Path | None = None, overrides: Iterable[str] = ()) -> ClickrecConfig:
    """Read `path` (default conf/local.yaml), apply overrides and validate.

    A file may start from another with a top-level `extends: <file>` (relative to its own
    folder): its sections are merged key by key over that file's, lists and values replaced.
    """
    file = Path(path) if path is not None else DEFAULT_CONFIG
    if not file.is_file():
        where = f" in {Path.cwd()}" if not file.is_absolute() else ""
        raise ConfigError(
            f"config file {file} not found{where} (pass --config FILE; the default "
            f"{DEFAULT_CONFIG} and the relative paths in it are read from the repository root)"
        )
    return build_config(_read_config_file(file, ()), overrides)


def _read_config_file(file: Path, seen: tuple[Path, ...]) -> dict[str, Any]:
    """The mapping of one config file, with its `extends` chain merged under it."""
    try:
        data = _load_yaml(file.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {file} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"config file {file}: the top level must be a mapping of sections")
    base_name = data.pop("extends", None)
    if base_name is None:
        return data
    base = file.parent / str(base_name)
    if not base.is_file():
        raise ConfigKeyError("extends", f"{base} (from {file}) not found")
    if base.resolve() in seen:
        raise ConfigKeyError("extends", f"{file} extends itself through {[str(p) for p in seen]}")
    return _merged(_read_config_file(base, (*seen, file.resolve())), data)


def _merged(base: dict[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merged(out[key], value)
        else:
            out[key] = value
    return out


def _deep_copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _deep_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_deep_copy(v) for v in value]
    return value
