"""Q5 — scale of the record: `status`, `log --json` and `report` at 1k, 10k and 100k experiments.

The ledgers are built synthetically by bench/report_scale.py's builder (realistic rows: a
~1.5 KB diff, a rationale, secondary metrics and a measurement per experiment, 2 % keeps);
running the loop that long would take weeks. Each command runs as a user runs it: a
subprocess, Python start-up included (the `--help` row is that start-up alone). Cells are
the median of the repeats and their range.

    python bench/record_scale.py [--sizes 1000,10000,100000] [--repeats 5] [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import table  # noqa: E402
from report_scale import build_ledger, cli, make_repo  # noqa: E402

COMMANDS = {
    "`overnight --help` (start-up alone)": ("--help",),
    "`overnight status --json`": ("status", "--json"),
    "`overnight log --json`": ("log", "--json"),
    "`overnight report`": ("report", "--out", "{out}"),
}


def cell(times: list[float]) -> str:
    med = statistics.median(times)
    if len(times) == 1:
        return f"{med:.2f} s"
    return f"{med:.2f} s [{min(times):.2f}–{max(times):.2f}]"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1000,10000,100000")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="tiny setting, for the tests")
    args = ap.parse_args()
    sizes = [200] if args.quick else [int(s) for s in args.sizes.split(",")]
    repeats = 1 if args.quick else args.repeats
    cols: dict[str, list[str]] = {name: [] for name in COMMANDS}
    built: list[str] = []
    with tempfile.TemporaryDirectory(prefix="bench-record-") as tmp:
        for n in sizes:
            repo = make_repo(Path(tmp) / f"r{n}")
            t0 = time.perf_counter()
            path = build_ledger(repo, n)
            built.append(
                f"{n:,}: {path.stat().st_size / 1e6:.1f} MB ledger, built in "
                f"{time.perf_counter() - t0:.1f} s"
            )
            for name, argv in COMMANDS.items():
                times = []
                for _ in range(repeats):
                    out = str(repo / "out")
                    t = time.perf_counter()
                    cli(repo, *(a.format(out=out) for a in argv))
                    times.append(time.perf_counter() - t)
                cols[name].append(cell(times))
            html = repo / "out" / "report.html"
            built[-1] += f"; report.html {html.stat().st_size / 1e6:.1f} MB"
    print(f"## Q5. Scale of the record (subprocess wall time, median [range] of {repeats})\n")
    rows = [[name, *cols[name]] for name in COMMANDS]
    print(table(["command", *[f"{n:,} experiments" for n in sizes]], rows))
    print()
    for line in built:
        print(f"- {line}")


if __name__ == "__main__":
    main()
