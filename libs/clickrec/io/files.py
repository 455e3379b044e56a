"""Input and scratch files through Hadoop's FileSystem (local paths, globs and s3a:// alike)."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from clickrec.errors import InputError
from clickrec.io.failures import is_truncated_read

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


# What Hadoop decompresses by the file name; a truncated one fails its read (truncated_files).
COMPRESSED_SUFFIXES = (".gz", ".bz2", ".zst", ".lz4", ".snappy", ".deflate")


@dataclass(frozen=True)
class InputFile:
    """One input file: its fully qualified path, size in bytes and modification time (ms)."""

    path: str
    size: int
    modified_ms: int


def _hadoop_path(spark: SparkSession, path: str) -> tuple[Any, Any]:
    jvm = spark.sparkContext._jvm
    assert jvm is not None  # a classic (JVM-backed) session
    hpath = jvm.org.apache.hadoop.fs.Path(path)
    fs = hpath.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())
    return fs, hpath


def list_input_files(spark: SparkSession, pattern: str) -> list[InputFile]:
    """Expand a file, a folder (its visible files) or a glob into files, sorted by path.

    An existing folder without files gives [] (an empty landing folder is not an error); a
    path or glob that matches nothing raises InputError naming `pattern`.
    """
    fs, hpath = _hadoop_path(spark, pattern)
    statuses = fs.globStatus(hpath)
    if not statuses:
        raise InputError(f"--input {pattern}: no input file found there")
    found: list[InputFile] = []
    for status in statuses:
        children = fs.listStatus(status.getPath()) if status.isDirectory() else [status]
        for child in children:
            name = child.getPath().getName()
            if child.isDirectory() or name.startswith(("_", ".")):
                continue
            found.append(InputFile(str(child.getPath()), int(child.getLen()), int(child.getModificationTime())))
    if not found and not all(status.isDirectory() for status in statuses):
        raise InputError(f"--input {pattern}: no input file found there")
    return sorted(found, key=lambda f: f.path)


def truncated_files(spark: SparkSession, files: list[InputFile]) -> list[str]:
    """The compressed files among `files` that end before their stream does, each read alone.

    For the rare batch whose read failed with is_truncated_read: one Spark read per compressed
    file, so the summary can name every broken file, not only the first the read met.
    """
    broken: list[str] = []
    for f in files:
        if not f.path.lower().endswith(COMPRESSED_SUFFIXES):
            continue
        try:
            spark.read.text(f.path).count()
        except Exception as exc:
            if not is_truncated_read(exc):
                raise
            broken.append(f.path)
    return broken


@contextmanager
def ignoring_corrupt_files(spark: SparkSession) -> Iterator[None]:
    """Within the block, a file read that fails keeps the lines read before the failure and skips
    the rest of that file (spark.sql.files.ignoreCorruptFiles), instead of failing the job."""
    key = "spark.sql.files.ignoreCorruptFiles"
    before = spark.conf.get(key, "false") or "false"
    spark.conf.set(key, "true")
    try:
        yield
    finally:
        spark.conf.set(key, before)


def check_local_input(pattern: str) -> None:
    """Fail fast, before Spark starts, when a local (scheme-less) input matches nothing."""
    import glob

    if "://" in pattern or pattern.startswith("file:"):
        return
    if not glob.glob(pattern):
        raise InputError(f"--input {pattern}: no input file found there")


def fingerprint(files: list[InputFile], *extra: str) -> str:
    """A stable id of an input (paths, sizes, mtimes) plus `extra` settings, as hex."""
    digest = hashlib.sha256()
    for f in files:
        digest.update(f"{f.path}\0{f.size}\0{f.modified_ms}\n".encode())
    for e in extra:
        digest.update(f"{e}\n".encode())
    return digest.hexdigest()


def delete_path(spark: SparkSession, path: str) -> None:
    """Remove `path` recursively when it exists (scratch folders of a job)."""
    fs, hpath = _hadoop_path(spark, path)
    if fs.exists(hpath):
        fs.delete(hpath, True)


def copy_local_dir(spark: SparkSession, local_dir: str, target: str) -> int:
    """Copy every file under the local folder `local_dir` to the same relative path under `target`.

    For files rendered on the driver that belong in the lake (GX data docs), wherever the lake
    is: through Hadoop's FileSystem, with the session's s3a settings. Overwrites; returns the
    number of files copied.
    """
    jvm = spark.sparkContext._jvm
    assert jvm is not None  # a classic (JVM-backed) session
    fs, root = _hadoop_path(spark, target)
    copied = 0
    for folder, _, names in os.walk(local_dir):
        rel = os.path.relpath(folder, local_dir)
        for name in names:
            dst = root if rel == "." else jvm.org.apache.hadoop.fs.Path(root, rel)
            fs.copyFromLocalFile(False, True, jvm.org.apache.hadoop.fs.Path(f"file://{os.path.join(folder, name)}"),
                                 jvm.org.apache.hadoop.fs.Path(dst, name))
            copied += 1
    return copied


def remove_stale_dirs(spark: SparkSession, parent: str, *, older_than_hours: float) -> list[str]:
    """Delete the folders under `parent` in which nothing changed for `older_than_hours`.

    For the scratch of jobs that were killed (`<lake>/_staging/<run id>`): a `finally` cannot
    run after SIGKILL, and a 10M-event batch leaves gigabytes there. A running job writes into
    its own folder as it goes, so only abandoned ones are old. Returns the removed paths.
    """
    fs, hpath = _hadoop_path(spark, parent)
    if not fs.exists(hpath):
        return []
    cutoff = int(time.time() * 1000) - int(older_than_hours * 3_600_000)
    removed: list[str] = []
    for child in fs.listStatus(hpath):
        if not child.isDirectory():
            continue
        newest = int(child.getModificationTime())  # 0 for an S3 "folder": its files decide
        files = fs.listFiles(child.getPath(), True)
        while files.hasNext():
            newest = max(newest, int(files.next().getModificationTime()))
        if newest < cutoff:
            fs.delete(child.getPath(), True)
            removed.append(str(child.getPath()))
    return removed
