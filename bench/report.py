"""Measures, their one-line printout, and the markdown section appended to bench/RESULTS.md.

Every measure carries its baseline (measured in the same run, or a stated reference) and a goal.
`ratio` is always value / baseline; the goal says which way is good (e.g. `ratio <= 0.1` is
"10x faster than the baseline", `ratio >= 0.95` is "at least 95 % of the baseline's throughput").
"""

from __future__ import annotations

import os
import platform
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


@dataclass
class Measure:
    name: str
    value: float | None
    unit: str
    baseline: float | None = None
    baseline_label: str = ""
    goal: str = ""  # words, e.g. "p50 <= 50 ms and ratio <= 0.1"
    check: Callable[[Measure], bool] | None = None  # None: informational
    note: str = ""
    passed: bool | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        if self.check is not None:
            try:
                self.passed = self.value is not None and bool(self.check(self))
            except (TypeError, ZeroDivisionError):
                self.passed = False

    @property
    def ratio(self) -> float | None:
        if self.value is None or not self.baseline:
            return None
        return self.value / self.baseline

    @property
    def verdict(self) -> str:
        return "info" if self.passed is None else ("PASS" if self.passed else "FAIL")

    def line(self) -> str:
        base = f"{fmt(self.baseline)} {self.unit}" if self.baseline is not None else "-"
        if self.baseline_label and self.baseline is not None:
            base += f" ({self.baseline_label})"
        ratio = f"{self.ratio:.3g}" if self.ratio is not None else "-"
        goal = f"goal {self.goal}" if self.goal else ""
        return (f"{self.name}: {fmt(self.value)} {self.unit}  baseline {base}  ratio {ratio}  {goal}  "
                f"{self.verdict}").strip()


def failed(name: str, error: str) -> Measure:
    """A benchmark that could not run is a failed measure, with the reason."""
    return Measure(name, None, "", goal="runs", check=lambda m: False, note=error)


def fmt(value: float | None) -> str:
    if value is None:
        return "n/a"
    magnitude = abs(value)
    if magnitude >= 1000:
        return f"{value:,.0f}"
    if magnitude >= 100:
        return f"{value:.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def git_commit() -> str:
    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    return commit + ("+dirty" if git("status", "--porcelain", "--untracked-files=no") else "")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def machine() -> dict[str, str]:
    import torch

    if torch.cuda.is_available():
        device = f"cuda ({torch.cuda.get_device_name(0)})"
    else:
        device = "cpu (no CUDA device)"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": git_commit(),
        "cpu": cpu_model(),
        "cores": str(cores),
        "torch": f"{torch.__version__} ({torch.get_num_threads()} threads)",
        "device": device,
        "python": platform.python_version(),
    }


def markdown_section(info: dict[str, str], measures: list[Measure], notes: list[str], title: str) -> str:
    lines = [
        f"## {info['date']} — {title}",
        "",
        f"commit `{info['commit']}` · CPU {info['cpu']} · {info['cores']} cores · torch {info['torch']} · "
        f"device {info['device']} · Python {info['python']}",
        "",
        "| measure | value | baseline | ratio | goal | result |",
        "|---|---|---|---|---|---|",
    ]
    for m in measures:
        base = "—" if m.baseline is None else f"{fmt(m.baseline)} {m.unit}"
        if m.baseline_label and m.baseline is not None:
            base += f" ({m.baseline_label})"
        ratio = "—" if m.ratio is None else f"{m.ratio:.3g}"
        verdict = {"PASS": "PASS", "FAIL": "**FAIL**", "info": "info"}[m.verdict]
        lines.append(f"| {m.name} | {fmt(m.value)} {m.unit} | {base} | {ratio} | {m.goal or '—'} | {verdict} |")
    notes_from_measures = [f"`{m.name}`: {m.note}" for m in measures if m.note]
    if notes or notes_from_measures:
        lines += ["", "Notes:", ""]
        lines += [f"- {n}" for n in [*notes, *notes_from_measures]]
    return "\n".join(lines) + "\n\n"


RESULTS_HEADER = """# Benchmark results

Appended by `make bench` (`python -m bench`), newest last. `ratio` is value / baseline; each goal
says which way is good. Baselines are measured in the same run unless marked "reference" (a
number measured for KTRDR on this kind of machine, quoted from the issue).

"""


def append_results(section: str, path: Path = RESULTS) -> None:
    if not path.exists():
        path.write_text(RESULTS_HEADER)
    with open(path, "a") as f:
        f.write(section)
