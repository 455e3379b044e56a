"""The `clickrec` console script: one subcommand per job, all of the same shape.

Every subcommand takes `--config FILE` and repeatable `--set dotted.key=value`, has `--help`,
exits non-zero with a clear message on bad input, and prints one JSON summary object as its
last line on stdout. Progress and logs go to stderr.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from clickrec.choices import Alias, InputFormat, PromoteMode
from clickrec.config import DEFAULT_CONFIG, ClickrecConfig, load_config
from clickrec.errors import ClickrecError, first_line

app = typer.Typer(
    name="clickrec",
    help="Clickstream -> Delta -> ALS -> MLflow -> serving table, batch and streaming.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
services_app = typer.Typer(help="Local Kafka, MinIO and MLflow server on 127.0.0.1.", no_args_is_help=True)
app.add_typer(services_app, name="services")

ConfigOpt = Annotated[
    Path,
    typer.Option("--config", "-c", help="Config file (YAML).", show_default=True),
]
ServicesConfigOpt = Annotated[
    Path,
    typer.Option(
        "--config", "-c", show_default=True,
        help="Config file (YAML), checked like every command's; the services themselves always run on "
        "127.0.0.1 with their state in .clickrec/services (conf/stack.yaml points at them).",
    ),
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", "-s", metavar="KEY=VALUE", help="Override a config key: dotted.key=value (repeatable)."),
]
InputOpt = Annotated[
    str, typer.Option("--input", "-i", help="File, folder, glob or s3a:// path of the raw input.")
]
# Options with a closed set of values take their choices from clickrec.choices: click lists
# them in --help and refuses any other value (a usage error, exit 2) before anything starts.
FormatOpt = Annotated[
    InputFormat | None,
    typer.Option("--format", "-f", help="rees46 (clickstream) or ratings (default ingest.format)."),
]
AliasOpt = Annotated[
    Alias,
    typer.Option("--alias", "-a", help="Model alias to publish, also the variant served."),
]

SIGTERM_EXIT_CODE = 143  # 128 + 15: what a shell reports for a process SIGTERM ended


def emit(summary: dict[str, Any]) -> None:
    """Print the one-line JSON summary that ends every command's stdout."""
    sys.stdout.flush()
    print(json.dumps(summary, default=str, sort_keys=False), flush=True)


def run(command: str, body: Callable[[], dict[str, Any]], *, on_sigterm: bool = True) -> None:
    """Run a command body; its summary, or an error message, a JSON error line and an exit code.

    A ClickrecError exits with its own code; an I/O failure of a store behind Spark or delta-rs
    (clickrec.io.failures) exits 4 as a StorageUnavailableError; any other exception (a bug, an
    unforeseen failure) prints its traceback and exits 1, and still ends stdout with the JSON
    line scripts read.
    """
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # py4j logs its connection closing at INFO when the process exits; under spark-submit, which
    # merges the job's stderr into its stdout, that line could follow the JSON summary.
    logging.getLogger("py4j").setLevel(logging.WARNING)
    # `serve` leaves SIGTERM to uvicorn, which shuts the server down gracefully.
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: _terminated(command)) if on_sigterm else None
    try:
        summary = body()
    except ClickrecError as exc:
        _failed(command, exc)
    except Exception as exc:
        from clickrec.io.failures import storage_error

        storage = storage_error(exc)  # S3A, Delta, Py4J or delta-rs I/O: a store, not a bug (exit 4)
        if storage is not None:
            _failed(command, storage)
        # a bug or an unforeseen failure: the traceback, and still the JSON line
        traceback.print_exc(file=sys.stderr)
        print(f"clickrec {command}: unexpected error: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        emit({"command": command, "ok": False, "error": first_line(exc), "error_type": type(exc).__name__})
        raise typer.Exit(code=1) from None
    finally:
        if on_sigterm:
            signal.signal(signal.SIGTERM, previous)
    emit({"command": command, "ok": True, **summary})


def _failed(command: str, exc: ClickrecError) -> NoReturn:
    """Report a ClickrecError: its message on stderr, the JSON line, its exit code."""
    print(f"clickrec {command}: error: {exc}", file=sys.stderr, flush=True)
    emit({"command": command, "ok": False, "error": str(exc), "error_type": type(exc).__name__})
    raise typer.Exit(code=exc.exit_code) from None


def _terminated(command: str) -> None:
    """SIGTERM (a pod being stopped): end the MLflow run as KILLED, say so, and leave at once.

    The process leaves without unwinding: an exception raised here could land inside a py4j
    call and leave Spark's connection out of step for every cleanup after it. Nothing needs
    unwinding: Delta commits are atomic, and scratch left behind is removed by the next run.
    Without this handler the run would stay RUNNING in MLflow forever.
    """
    from clickrec.tracking import kill_active_runs

    killed = kill_active_runs()
    print(f"clickrec {command}: stopped by SIGTERM; MLflow run(s) marked KILLED: {killed}", file=sys.stderr, flush=True)
    emit({"command": command, "ok": False, "error": "stopped by SIGTERM", "error_type": "Terminated",
          "killed_runs": killed})
    os._exit(SIGTERM_EXIT_CODE)


def _config(path: Path, overrides: list[str] | None) -> ClickrecConfig:
    return load_config(path, overrides or [])


@app.command()
def status(config: ConfigOpt = DEFAULT_CONFIG, set_: SetOpt = None) -> None:
    """Every table's path, Delta version and row count; champion/challenger versions."""
    from clickrec.status import collect_status

    run("status", lambda: collect_status(_config(config, set_)))


@app.command()
def generate(
    events: Annotated[int, typer.Option("--events", "-n", help="How many events to write.")],
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Output file: *.csv, *.csv.gz, *.jsonl or *.jsonl.gz.")
    ],
    seed: Annotated[int | None, typer.Option("--seed", help="Random seed (default generate.seed).")] = None,
    config: ConfigOpt = DEFAULT_CONFIG,
    set_: SetOpt = None,
) -> None:
    """A synthetic clickstream (REES46 schema) with planted user tastes, sessions and dwell."""

    def body() -> dict[str, Any]:
        from clickrec.generate import generate_clickstream

        cfg = _config(config, set_)
        return generate_clickstream(out, events=events, seed=seed, settings=cfg.generate)

    run("generate", body)


@app.command()
def ingest(
    input_path: InputOpt,
    input_format: FormatOpt = None,
    config: ConfigOpt = DEFAULT_CONFIG,
    set_: SetOpt = None,
) -> None:
    """Raw files -> bronze/events + bronze/quarantine -> silver interactions and id indexes."""

    def body() -> dict[str, Any]:
        cfg = _config(config, set_)
        from clickrec.io.files import check_local_input

        check_local_input(input_path)
        from clickrec.ingest import ingest as run_ingest
        from clickrec.spark import build_spark_session

        return run_ingest(
            build_spark_session(cfg), cfg, input_path=input_path, input_format=input_format
        )

    run("ingest", body)


@app.command()
def train(
    config: ConfigOpt = DEFAULT_CONFIG,
    set_: SetOpt = None,
    promote: Annotated[
        PromoteMode | None,
        typer.Option("--promote", help="auto: when it beats the champion (default train.promote); never; always."),
    ] = None,
) -> None:
    """Split silver, tune ALS (k-fold CV, or train.tuning=train_validation), evaluate vs popularity, log, register, promote."""

    def body() -> dict[str, Any]:
        cfg = _config(config, set_)
        from clickrec.spark import build_spark_session
        from clickrec.tracking import Tracking
        from clickrec.train import run_train

        tracking = Tracking(cfg.mlflow)
        return run_train(build_spark_session(cfg), cfg, promote=promote, tracking=tracking)

    run("train", body)


@app.command()
def publish(
    alias: AliasOpt = "champion",
    model_version: Annotated[
        int | None,
        typer.Option("--model-version", help="Republish this registered version under --alias (rollback).", min=1),
    ] = None,
    config: ConfigOpt = DEFAULT_CONFIG,
    set_: SetOpt = None,
) -> None:
    """Top-N for every user of a registered model -> gold/recommendations (MERGE); announce on Kafka."""

    def body() -> dict[str, Any]:
        cfg = _config(config, set_)
        from clickrec.publish import publish as run_publish
        from clickrec.spark import build_spark_session
        from clickrec.tracking import Tracking

        tracking = Tracking(cfg.mlflow)
        return run_publish(build_spark_session(cfg), cfg, alias=alias, model_version=model_version,
                           tracking=tracking)

    run("publish", body)


@app.command()
def pipeline(
    input_path: InputOpt,
    input_format: FormatOpt = None,
    config: ConfigOpt = DEFAULT_CONFIG,
    set_: SetOpt = None,
) -> None:
    """Ingest, train and publish (publish.pipeline_aliases) in one process and one Spark session.

    Promotion follows train.promote (e.g. --set train.promote=never).
    """

    def body() -> dict[str, Any]:
        cfg = _config(config, set_)
        from clickrec.io.files import check_local_input

        check_local_input(input_path)
        from clickrec.pipeline import run_pipeline
        from clickrec.spark import build_spark_session
        from clickrec.tracking import Tracking

        tracking = Tracking(cfg.mlflow)
        return run_pipeline(build_spark_session(cfg), cfg, input_path=input_path, input_format=input_format,
                            tracking=tracking)

    run("pipeline", body)


@app.command()
def replay(
    input_path: Annotated[str, typer.Option("--input", "-i", help="A CSV or JSON-lines clickstream file.")],
    rate: Annotated[
        float | None, typer.Option("--rate", "-r", help="Events per second (default stream.replay_rate; 0: unthrottled).")
    ] = None,
    topic: Annotated[str | None, typer.Option("--topic", help="Kafka topic (default kafka.clickstream_topic).")] = None,
    config: ConfigOpt = DEFAULT_CONFIG,
    set_: SetOpt = None,
) -> None:
    """Send a clickstream file to Kafka as JSON events (REES46 schema) at --rate events/s.

    Needs kafka.bootstrap_servers (conf/stack.yaml after `clickrec services up`; conf/local.yaml has no Kafka).
    """

    def body() -> dict[str, Any]:
        from clickrec.replay import replay as run_replay

        return run_replay(_config(config, set_), input_path=input_path, rate=rate, topic=topic)

    run("replay", body)


@app.command()
def stream(
    available_now: Annotated[
        bool, typer.Option("--available-now", help="Process what the topic holds now, then stop.")
    ] = False,
    max_seconds: Annotated[
        float | None, typer.Option("--max-seconds", help="Stop (gracefully) after this many seconds.", min=0)
    ] = None,
    config: ConfigOpt = DEFAULT_CONFIG,
    set_: SetOpt = None,
) -> None:
    """Kafka clickstream -> bronze (exactly once) -> silver -> fold-in -> gold, until stopped (SIGTERM).

    Needs kafka.bootstrap_servers (conf/stack.yaml after `clickrec services up`; conf/local.yaml has no Kafka).
    """

    def body() -> dict[str, Any]:
        from clickrec.errors import InputError

        if available_now and max_seconds is not None:
            raise InputError("--available-now and --max-seconds exclude each other")
        cfg = _config(config, set_)
        from clickrec.spark import build_spark_session
        from clickrec.stream import run_stream
        from clickrec.tracking import Tracking

        tracking = Tracking(cfg.mlflow, stream=True)
        spark = build_spark_session(cfg)
        try:
            return run_stream(spark, cfg, available_now=available_now, max_seconds=max_seconds, tracking=tracking)
        finally:
            spark.stop()  # before main's os._exit: the stream's delta-rs commits share the teardown risk

    run("stream", body)


@app.command()
def recommend(
    user: Annotated[str, typer.Option("--user", "-u", help="The user's id, as in the source data.")],
    n: Annotated[int, typer.Option("--n", "-n", help="How many items (1 to serve.max_n).")] = 10,
    variant: Annotated[Alias, typer.Option("--variant", help="The published alias to read.")] = "champion",
    config: ConfigOpt = DEFAULT_CONFIG,
    set_: SetOpt = None,
) -> None:
    """Print a user's list from the serving table (the popular list for an unknown user). No JVM."""

    def body() -> dict[str, Any]:
        from clickrec.serving.reader import RecommendationReader

        cfg = _config(config, set_)
        return RecommendationReader(cfg).recommendations(user, n=n, variant=variant)

    run("recommend", body)


@app.command()
def serve(
    port: Annotated[int | None, typer.Option("--port", "-p", help="TCP port (default serve.port).", min=1, max=65535)] = None,
    host: Annotated[
        str | None, typer.Option("--host", help="Address to bind (default serve.host: 127.0.0.1 in conf/local.yaml).")
    ] = None,
    config: ConfigOpt = DEFAULT_CONFIG,
    set_: SetOpt = None,
) -> None:
    """HTTP: GET /v1/recommendations/{user_id}?n=&variant=, /healthz, /metrics. Read-only, no JVM."""

    def body() -> dict[str, Any]:
        from clickrec.serving.api import serve as run_serve

        return run_serve(_config(config, set_), host=host, port=port)

    run("serve", body, on_sigterm=False)


@services_app.command("up")
def services_up(
    config: ServicesConfigOpt = DEFAULT_CONFIG,
    set_: SetOpt = None,
    only: Annotated[
        list[str] | None, typer.Option("--only", metavar="SERVICE", help="Start only these: kafka, minio, mlflow (repeatable).")
    ] = None,
) -> None:
    """Start Kafka (KRaft), MinIO and the MLflow server on free 127.0.0.1 ports."""
    from clickrec import services

    def body() -> dict[str, Any]:
        _config(config, set_)
        state = services.up(only=only)
        print(
            f"Point conf/stack.yaml at them with: source {services.env_file()}", file=sys.stderr
        )
        return services.public_state(state)

    run("services up", body)


@services_app.command("down")
def services_down(config: ServicesConfigOpt = DEFAULT_CONFIG, set_: SetOpt = None) -> None:
    """Stop only the services that `clickrec services up` started."""
    from clickrec import services

    def body() -> dict[str, Any]:
        _config(config, set_)
        return {"stopped": services.down()}

    run("services down", body)


@services_app.command("status")
def services_status(config: ServicesConfigOpt = DEFAULT_CONFIG, set_: SetOpt = None) -> None:
    """Report whether each local service is running and where."""
    from clickrec import services

    def body() -> dict[str, Any]:
        _config(config, set_)
        return services.status()

    run("services status", body)


# Commands that use delta-rs and whose process ends right after the summary. delta-rs' native
# runtime can abort at interpreter teardown ("terminate called without an active exception",
# exit 134) after all work is done and printed; these commands hold nothing to clean up (the
# stream stops its Spark session itself; the JVM leaves when its parent does), so they leave
# with os._exit and the exit code they chose.
_EXIT_WITHOUT_TEARDOWN = frozenset({"recommend", "status", "stream"})


def invoke(args: list[str]) -> int:
    """Run the app and return its exit code; a usage error also ends stdout with a JSON line.

    Scripts read the last stdout line of every command, so a missing or bad option (click's
    usage errors, exit code 2) gets `{"ok": false, "error_type": "UsageError", ...}` there too,
    besides click's usage message on stderr.
    """
    # typer (pinned in setup.cfg) vendors click and re-exports only BadParameter of its errors.
    from typer._click import exceptions as click_errors

    try:
        result = app(args=args, standalone_mode=False)
    except click_errors.NoArgsIsHelpError as exc:  # `clickrec services`: help, no command ran
        exc.show()
        return exc.exit_code
    except click_errors.UsageError as exc:
        exc.show()
        names, ctx = [], exc.ctx
        while ctx is not None and ctx.parent is not None:  # the subcommands, without the program
            names.append(ctx.info_name or "")
            ctx = ctx.parent
        command = " ".join(reversed(names)) or "clickrec"
        emit({"command": command, "ok": False, "error": exc.format_message(), "error_type": "UsageError"})
        return exc.exit_code
    except click_errors.ClickException as exc:
        exc.show()
        return exc.exit_code
    except typer.Abort:
        print("Aborted!", file=sys.stderr)
        return 1
    return result if isinstance(result, int) else 0


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point; jobs/*.py call it with their subcommand prepended."""
    args = sys.argv[1:] if argv is None else list(argv)
    code = invoke(args)
    if not args or args[0] not in _EXIT_WITHOUT_TEARDOWN or "--help" in args:
        sys.exit(code)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
