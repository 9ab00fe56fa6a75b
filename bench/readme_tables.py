"""Put the benchmarks' tables into the README, rendered from the result files, never typed.

The README marks each table's place with a pair of comments naming a result file under
``bench/results/`` (its stem)::

    <!-- bench-table: quality-video-games -->
    ...the table, rewritten by this script...
    <!-- /bench-table -->

``python -m bench.readme_tables`` rewrites every marked block from its file; ``--check`` only
says which blocks differ from their files (exit 1), so a test can keep the two from drifting.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from bench import bench_predict, bench_quality, bench_serve, bench_update

# Which benchmark renders a result file, by the file's stem; the quality files are the rest.
RENDERERS = {
    "serve": bench_serve.markdown,
    "predict": bench_predict.markdown,
    "update": bench_update.markdown,
    "update-warm-lr0.001": bench_update.markdown,
}

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
BLOCK = re.compile(r"(<!-- bench-table: (?P<name>[\w.-]+) -->\n)(?P<body>.*?)(<!-- /bench-table -->)", re.DOTALL)


def rendered(name: str, results: Path = RESULTS) -> str:
    path = results / f"{name}.json"
    if not path.is_file():
        raise SystemExit(f"README names a table {name!r} but {path} does not exist: run its benchmark first")
    render = RENDERERS.get(name, bench_quality.markdown)
    return f"`bench/results/{name}.json`:\n\n{render(json.loads(path.read_text()))}\n"


def with_tables(readme: str, results: Path = RESULTS) -> tuple[str, list[str]]:
    """(the README with every marked block rendered from its file, the names whose block changed)."""
    changed = []

    def replace(match: re.Match) -> str:
        body = rendered(match["name"], results)
        if body != match["body"]:
            changed.append(match["name"])
        return match.group(1) + body + match.group(4)

    return BLOCK.sub(replace, readme), changed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--readme", type=Path, default=ROOT / "README.md")
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 where a table differs from its file")
    args = parser.parse_args()
    text, changed = with_tables(args.readme.read_text())
    if args.check:
        if changed:
            print(f"{args.readme}: tables differ from their result files: {', '.join(changed)}")
            sys.exit(1)
        print(f"{args.readme}: every table matches its result file")
        return
    args.readme.write_text(text)
    print(f"{args.readme}: {len(changed)} table(s) rewritten{': ' + ', '.join(changed) if changed else ''}")


if __name__ == "__main__":
    main()
