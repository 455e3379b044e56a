"""`make bench`: run every benchmark and write its results section into docs/benchmarks.md.

A benchmark is a module with `run(argv) -> str` returning a Markdown section; add it to
BENCHES. Each bench keeps its scratch data under .bench/ (git-ignored).
"""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path

# (module, default arguments, section name: its markers in docs/benchmarks.md); edit here.
BENCHES: list[tuple[str, list[str], str]] = [
    ("benchmarks.ingest_bench", ["--events", "1000000", "--events", "10000000"], "ingest_bench"),
    ("benchmarks.train_bench", ["--quality", "--speed", "--events", "10000000", "--seed-spread", "1", "2", "3", "4", "5"],
     "train_bench"),
    ("benchmarks.confidence_bench", ["--events", "200000", "--thresholds", "2", "3", "5"], "confidence_bench"),
    ("benchmarks.publish_bench", ["--users", "20000", "--items", "4000", "--rank", "32", "--activity", "heavy"],
     "publish_bench"),
    ("benchmarks.serving_bench", ["--users", "1000000", "--n", "10"], "serving_bench"),
    ("benchmarks.stream_bench", ["--rates", "100", "1000", "2000", "4000", "--seconds", "30"], "stream_bench"),
    ("benchmarks.stream_bench", ["--rates", "1000", "--seconds", "30", "--skip-pipeline", "--stack"],
     "stream_bench_stack"),
    ("benchmarks.commit_race", ["--seconds", "60", "--rs-pause", "0", "0.5"], "commit_race"),
]
DOCS = Path("docs/benchmarks.md")


def write_section(doc: Path, name: str, section: str) -> None:
    """Replace (or add) the section between the markers of benchmark `name` in `doc`."""
    start, end = f"<!-- bench:{name}:start -->", f"<!-- bench:{name}:end -->"
    text = doc.read_text(encoding="utf-8") if doc.is_file() else "# Benchmarks\n\n"
    block = f"{start}\n{section.rstrip()}\n{end}\n"
    if start in text and end in text:
        before, rest = text.split(start, 1)
        text = before + block + rest.split(end, 1)[1].lstrip("\n")
    else:
        text = text.rstrip("\n") + "\n\n" + block
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(text, encoding="utf-8")


def emit(section: str, markdown: Path | None, name: str) -> None:
    """Print a benchmark's section and, when asked, write it into `markdown` (a bench's own CLI)."""
    print(section)
    if markdown:
        write_section(markdown, name, section)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", help="run only the benchmarks whose section name contains this")
    args = parser.parse_args(argv)
    for module_name, bench_args, name in BENCHES:
        if args.only and args.only not in name:
            continue
        module = importlib.import_module(module_name)
        section = module.run(bench_args)
        write_section(DOCS, name, section)
        print(f"wrote {name} results to {DOCS}")


if __name__ == "__main__":
    main()
