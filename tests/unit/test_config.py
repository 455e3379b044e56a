from __future__ import annotations

from pathlib import Path

import pytest

from clickrec.config import build_config, load_config, parse_override
from clickrec.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


def test_unknown_key_is_reported_by_name() -> None:
    with pytest.raises(ConfigError, match=r"config key 'spark\.mastr': unknown key"):
        build_config({"spark": {"mastr": "local[1]"}})


def test_unknown_section_is_reported_by_name() -> None:
    with pytest.raises(ConfigError, match=r"config key 'sparks': unknown key"):
        build_config({"sparks": {}})


def test_bad_value_is_reported_by_key_and_value() -> None:
    with pytest.raises(ConfigError, match=r"spark\.shuffle_partitions.*'many'"):
        build_config({}, ["spark.shuffle_partitions=many"])


def test_set_overrides_are_typed_and_nested() -> None:
    cfg = build_config({"spark": {"master": "local[4]"}}, ["spark.shuffle_partitions=3", "spark.master=local[1]", "spark.conf.spark.foo=bar"])
    assert cfg.spark.shuffle_partitions == 3
    assert cfg.spark.master == "local[1]"
    assert cfg.spark.conf == {"spark.foo": "bar"}


def test_set_without_equals_is_an_error() -> None:
    with pytest.raises(ConfigError, match=r"expected dotted\.key=value"):
        parse_override("spark.master")


def test_env_references(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("X_BOOT", "127.0.0.1:1234")
    cfg = build_config({"kafka": {"bootstrap_servers": "${X_BOOT}"}, "lake": {"root": "${X_NOPE:-/tmp/l}"}})
    assert cfg.kafka.bootstrap_servers == "127.0.0.1:1234"
    assert cfg.lake.root == "/tmp/l"


def test_missing_env_reference_names_key_and_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("X_MISSING", raising=False)
    with pytest.raises(ConfigError, match=r"'s3\.endpoint'.*X_MISSING"):
        build_config({"s3": {"endpoint": "${X_MISSING}"}})


def test_config_is_frozen() -> None:
    cfg = build_config({})
    with pytest.raises(Exception):  # noqa: B017 - pydantic raises ValidationError
        cfg.spark.master = "x"  # type: ignore[misc]


@pytest.mark.parametrize("name", ["local.yaml", "stack.yaml", "k8s.yaml"])
def test_shipped_configs_validate(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLICKREC_S3_ENDPOINT", "http://127.0.0.1:9000")
    monkeypatch.setenv("CLICKREC_KAFKA_BOOTSTRAP", "127.0.0.1:9092")
    monkeypatch.setenv("CLICKREC_MLFLOW_URI", "http://127.0.0.1:5000")
    cfg = load_config(REPO / "conf" / name)
    assert cfg.lake.root


def test_missing_config_file() -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config("conf/nope.yaml")


def test_temporal_split_refuses_random_cv_folds() -> None:
    with pytest.raises(ConfigError, match=r"train.split=temporal needs train.tuning=train_validation"):
        build_config(overrides=["train.split=temporal"])
    assert build_config(overrides=["train.split=temporal", "train.tuning=train_validation"]).train.split == "temporal"


def test_dates_are_checked_when_the_config_loads() -> None:
    with pytest.raises(ConfigError, match=r"config key 'generate.start': .*not an ISO date"):
        build_config(overrides=["generate.start=bogus"])
    with pytest.raises(ConfigError, match=r"config key 'ingest.event_time_max': .*not an ISO date"):
        build_config(overrides=["ingest.event_time_max=2100-13-01"])
    assert build_config(overrides=["ingest.event_time_min=2001-02-03 04:05:06"]).ingest.event_time_min


def test_a_whole_value_env_reference_that_is_not_yaml_stays_text(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLICKREC_TEST_EXPERIMENT", "{oops")
    config = build_config({"mlflow": {"experiment": "${CLICKREC_TEST_EXPERIMENT}"}})
    assert config.mlflow.experiment == "{oops"


def test_unquoted_dates_in_yaml_and_set_stay_text(tmp_path: Path) -> None:
    file = tmp_path / "c.yaml"
    file.write_text("generate:\n  start: 2019-11-01\ningest:\n  event_time_min: 2000-01-01 00:00:00\n")
    config = load_config(file, overrides=["ingest.event_time_max=2030-01-01 00:00:00"])
    assert (config.generate.start, config.ingest.event_time_min, config.ingest.event_time_max) == (
        "2019-11-01", "2000-01-01 00:00:00", "2030-01-01 00:00:00")


@pytest.mark.parametrize(("typed", "delimiter"), [("\\t", "\t"), ("\t", "\t"), ("\\x1f", "\x1f"), ("|", "|"), (";", ";")])
def test_delimiter_takes_escape_sequences_and_a_literal_tab(typed: str, delimiter: str) -> None:
    assert build_config({}, [f"ingest.delimiter={typed}"]).ingest.delimiter == delimiter


def test_delimiter_of_two_characters_is_refused_by_key() -> None:
    with pytest.raises(ConfigError, match=r"ingest\.delimiter"):
        build_config({}, ["ingest.delimiter=\\t\\t"])


def test_layout_keys_are_checked() -> None:
    cfg = build_config({}, ["ingest.constants={event_type: view}",
                            "ingest.event_type_values={AddToCart: cart, transaction: purchase}"])
    assert cfg.ingest.constants == {"event_type": "view"}
    assert cfg.ingest.event_type_values == {"addtocart": "cart", "transaction": "purchase"}
    with pytest.raises(ConfigError, match=r"ingest\.event_type_values\.wish"):
        build_config({}, ["ingest.event_type_values={wish: like}"])
    with pytest.raises(ConfigError, match=r"constants\.colour: not a clickstream column"):
        build_config({}, ["ingest.constants={colour: red}"])
    with pytest.raises(ConfigError, match=r"in both ingest\.constants and ingest\.column_mapping"):
        build_config({}, ["ingest.constants={event_type: view}", "ingest.column_mapping={event_type: kind}"])


@pytest.mark.parametrize("path", sorted((REPO / "conf" / "examples").glob("*.yaml")), ids=lambda p: p.name)
def test_example_layouts_validate(path: Path) -> None:
    assert load_config(path).ingest.source_columns
