"""`python -m bench` (or `make bench`): every benchmark, each against a baseline measured in the same
run; one line per measure (value, baseline, ratio, goal, PASS/FAIL), and a section appended to
bench/RESULTS.md with the date, commit and machine. Exit status 1 when a goal is not met.

    python -m bench [--only latency,throughput,...] [--quick] [--no-write]
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
import time
import traceback

from bench.report import RESULTS, Measure, append_results, failed, load_average, machine, markdown_section

# Cheapest first; each module has run(quick) -> list[Measure].
BENCHMARKS = ("features", "backtest", "latency", "memory", "end_to_end", "throughput", "polling", "experiments",
              "packed")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default="", help=f"comma-separated subset of: {', '.join(BENCHMARKS)}")
    parser.add_argument("--quick", action="store_true", help="fewer runs and smaller sizes (a smoke test)")
    parser.add_argument("--no-write", action="store_true", help=f"do not append to {RESULTS.name}")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads for this process and every process it starts (OMP_NUM_THREADS); "
                             "default: torch's own choice, as the product runs")
    args = parser.parse_args(argv)
    if args.threads:
        import os

        import torch

        os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(args.threads)
        torch.set_num_threads(args.threads)
    chosen = [name.strip() for name in args.only.split(",") if name.strip()] or list(BENCHMARKS)
    unknown = [name for name in chosen if name not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(124))  # a timeout still cleans up its processes
    info = machine()
    print(f"bench: {info['date']}, commit {info['commit']}, {info['cpu']}, {info['cores']} cores, torch "
          f"{info['torch']}, device {info['device']}; load average {load_average()}", flush=True)
    started = time.monotonic()
    measures: list[Measure] = []
    notes = [f"load average (1, 5, 15 min) at start: {load_average()}"]
    for name in chosen:
        t = time.monotonic()
        print(f"\n[{name}]", flush=True)
        try:
            results = importlib.import_module(f"bench.{name}").run(quick=args.quick)
        except Exception as exc:  # one broken benchmark must not hide the others
            traceback.print_exc()
            results = [failed(f"{name}", f"{type(exc).__name__}: {exc}".splitlines()[0][:300])]
        for measure in results:
            print(measure.line(), flush=True)
        measures += results
        notes.append(f"{name}: {time.monotonic() - t:.0f} s")
    total = time.monotonic() - started
    notes[0] += f"; at end: {load_average()}"
    notes.insert(1, f"total benchmark time {total:.0f} s" + (" (--quick)" if args.quick else ""))
    failures = [m for m in measures if m.passed is False]
    print(f"\n{len(measures)} measures, {sum(m.passed is True for m in measures)} PASS, {len(failures)} FAIL, "
          f"{total:.0f} s", flush=True)
    if not args.no_write:
        title = "python -m bench" + (" --quick" if args.quick else "") + (f" --only {args.only}" if args.only else "")
        title += f" --threads {args.threads}" if args.threads else ""
        append_results(markdown_section(info, measures, notes, title))
        print(f"appended to {RESULTS}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
