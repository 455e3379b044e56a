"""Which unforeseen exceptions are a store that failed (exit 4), not a bug (exit 1).

Spark's S3A and Delta calls fail through Py4J (`Py4JJavaError`, or PySpark's converted
`CapturedException`) with the Java exception chain behind them; delta-rs fails with a bare
`OSError` (object_store's "Generic S3 error ... error sending request") or a `DeltaError`.
`storage_error` looks through the Python and Java cause chains once for an I/O failure:

- a Java throwable that is a `java.io.IOException` (java.net.ConnectException,
  UnknownHostException, SocketTimeoutException, every `org.apache.hadoop.fs.s3a` error such as
  AWSClientIOException) or an AWS SDK `SdkClientException` (v1 or v2), except a file that is
  not there (FileNotFoundException and the like);
- a Python `ConnectionError`, `TimeoutError` or `socket.gaierror`, and delta-rs' `OSError`
  (no errno: the object store's, not a local file's);
- a delta-rs `DeltaError` whose message is the object store's transport failure.

Everything else (AnalysisException, a Python error, a local FileNotFoundError) is left alone:
the CLI reports it as a bug. Used by `clickrec.cli.run` for every batch job and by the stream's
`_query_failure`.
"""

from __future__ import annotations

import re
import socket
from typing import Any

from clickrec.errors import StorageUnavailableError

# Java classes (or superclasses) that make a throwable an I/O failure of a store.
JAVA_IO_CLASSES = frozenset({
    "java.io.IOException",
    "java.io.UncheckedIOException",
    "com.amazonaws.SdkClientException",
    "software.amazon.awssdk.core.exception.SdkClientException",
})
JAVA_IO_PACKAGES = ("org.apache.hadoop.fs.s3a.",)
# A file that is not there is an answer of the store, not a failure to answer: these links of
# a chain do not count (S3A reports a 404 as FileNotFoundException).
JAVA_NOT_THERE = frozenset({
    "java.io.FileNotFoundException",
    "java.nio.file.NoSuchFileException",
    "org.apache.hadoop.mapred.InvalidInputException",
})
# A Python worker that died (killed, out of memory) ends Spark's socket to it with an
# EOFException or a reset: an IOException of Spark's own, not of a store.
_PYTHON_WORKER = re.compile(r"Python worker|PythonRunner|python\.PythonException", re.IGNORECASE)
# What delta-rs (object_store) says when the store did not answer.
_TRANSPORT_WORDS = re.compile(
    r"error sending request|connection refused|connect error|timed out|dns error|S3 error",
    re.IGNORECASE,
)
_IO_IN_TEXT = re.compile(
    r"\b(java\.io\.\w*IOException|java\.net\.\w+Exception|java\.io\.UncheckedIOException"
    r"|org\.apache\.hadoop\.fs\.s3a\.\w+|software\.amazon\.awssdk\.[\w.]*SdkClientException"
    r"|com\.amazonaws\.SdkClientException)\b"
)
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_MAX_DETAIL = 600
_MAX_DEPTH = 20


def storage_error(exc: BaseException) -> StorageUnavailableError | None:
    """A StorageUnavailableError (exit 4) naming what failed when `exc` is a store's I/O
    failure, else None."""
    for link in _python_chain(exc):
        detail = _java_io_detail(link) or _python_io_detail(link)
        if detail:
            return StorageUnavailableError(detail)
    return None


def is_truncated_read(exc: BaseException) -> bool:
    """True when a Spark read failed because a compressed file ends before its stream does
    (java.io.EOFException in the Java cause chain): the input's problem, which ingest handles
    (clickrec.io.files.truncated_files), before it could count as the store's."""
    throwable = _java_throwable(exc)
    if throwable is None:
        return False
    try:
        chain = _java_chain(throwable)
    except Exception:  # the JVM is gone: nothing to look at
        return False
    return any(hierarchy[0] == "java.io.EOFException" for hierarchy, _ in chain)


def _python_chain(exc: BaseException) -> list[BaseException]:
    """`exc`, then its __cause__ / __context__ links (each once)."""
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain and len(chain) < _MAX_DEPTH:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def _python_io_detail(exc: BaseException) -> str | None:
    if isinstance(exc, ConnectionError | TimeoutError | socket.gaierror):
        return f"{type(exc).__name__}: {_one_line(str(exc))}"
    if type(exc) is OSError and exc.errno is None:  # delta-rs / object_store, not a local file
        return _one_line(str(exc))
    try:
        from deltalake.exceptions import DeltaError
    except ImportError:  # pragma: no cover - deltalake is a dependency
        return None
    if isinstance(exc, DeltaError) and _TRANSPORT_WORDS.search(str(exc)):
        return _one_line(str(exc))
    return None


def _java_throwable(exc: BaseException) -> Any | None:
    """The Java throwable behind a Py4J or PySpark exception, if there is one."""
    java = getattr(exc, "java_exception", None)  # py4j.protocol.Py4JJavaError
    if java is None:
        java = getattr(exc, "_origin", None)  # pyspark.errors CapturedException
    return java


def _java_io_detail(exc: BaseException) -> str | None:
    """The first I/O throwable of the Java cause chain behind `exc`: class and message, plus the
    deepest cause when it adds something ("Connection refused")."""
    throwable = _java_throwable(exc)
    if throwable is None:
        stack = getattr(exc, "_stackTrace", None)  # a CapturedException built from text only
        return _io_from_stack_text(stack) if isinstance(stack, str) else None
    try:
        chain = _java_chain(throwable)
    except Exception:  # the JVM is gone: nothing to look at
        return None
    if any(_PYTHON_WORKER.search(message) for _, message in chain):
        return None
    for i, (hierarchy, message) in enumerate(chain):
        if JAVA_NOT_THERE.intersection(hierarchy):
            continue
        if JAVA_IO_CLASSES.intersection(hierarchy) or any(n.startswith(JAVA_IO_PACKAGES) for n in hierarchy):
            detail = f"{hierarchy[0]}: {_one_line(message)}"
            root = _one_line(chain[-1][1])
            if i < len(chain) - 1 and root and root not in detail:
                detail += f" (cause: {root})"
            return _cut(detail)
    # A task's failure can reach the driver as text only ("Job aborted due to stage failure:
    # ... java.net.ConnectException: ..."), without the exception as a cause.
    for _, message in chain:
        found = _IO_IN_TEXT.search(message)
        if found:
            return _cut(_one_line(message[found.start():]))
    return None


def _java_chain(throwable: Any) -> list[tuple[tuple[str, ...], str]]:
    """(class hierarchy, message) of each throwable along getCause()."""
    out: list[tuple[tuple[str, ...], str]] = []
    current = throwable
    while current is not None and len(out) < _MAX_DEPTH:
        names: list[str] = []
        cls = current.getClass()
        while cls is not None:
            names.append(str(cls.getName()))
            cls = cls.getSuperclass()
        out.append((tuple(names), str(current.getMessage() or "")))
        cause = current.getCause()
        current = None if cause is None or cause.equals(current) else cause
    return out


def _io_from_stack_text(stack: str) -> str | None:
    for line in stack.splitlines():
        line = line.strip().removeprefix("Caused by: ")
        if line.startswith(("java.io.", "java.net.", "org.apache.hadoop.fs.s3a.", "software.amazon.awssdk.")):
            return _cut(line)
    return None


def _one_line(text: str) -> str:
    """A multi-line message (delta-rs' `↳` chain) as one line without colour codes."""
    parts = [p.strip(" ↳\t") for p in _ANSI.sub("", text).splitlines()]
    return _cut(" ".join(p for p in parts if p))


def _cut(text: str) -> str:
    return text if len(text) <= _MAX_DETAIL else text[: _MAX_DETAIL - 3] + "..."
