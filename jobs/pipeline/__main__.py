"""Train a strategy in-process, without Redis:

    python -m jobs.pipeline STRATEGY.yaml --data-dir data --models-dir models [--start D] [--end D] [--epochs N]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from tqdm import tqdm

from trainhost.jobs.pipeline.errors import PipelineError
from trainhost.jobs.pipeline.reporter import NullReporter
from trainhost.jobs.pipeline.result_text import result_text
from trainhost.jobs.pipeline.session import train_strategy
from trainhost.jobs.pipeline.strategy import parse_strategy
from trainhost.jobs.pipeline.trainer import BatchProgress


class ProgressBar(NullReporter):
    """A tqdm bar over all batches of all epochs, with the latest epoch's metrics beside it."""

    def __init__(self) -> None:
        self.bar: tqdm | None = None

    def phase(self, name: str, message: str = "") -> None:
        if self.bar is None:
            print(f"[{name}] {message}", file=sys.stderr)

    def batch(self, progress: BatchProgress) -> None:
        if self.bar is None:
            self.bar = tqdm(total=progress.total_epochs * progress.total_batches, unit="batch",
                            dynamic_ncols=True, mininterval=0.2)
        position = (progress.epoch - 1) * progress.total_batches + progress.batch
        if position - self.bar.n >= 50 or progress.batch == progress.total_batches:
            self.bar.update(position - self.bar.n)

    def epoch(self, record: dict[str, Any]) -> None:
        if self.bar is not None:
            self.bar.set_postfix(epoch=record["epoch"], loss=f"{record['train_loss']:.4f}",
                                 val_acc=f"{record['val_accuracy']:.3f}", refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.pipeline", description="Train a KTRDR v3 strategy.")
    parser.add_argument("strategy", type=Path, help="strategy YAML file")
    parser.add_argument("--data-dir", type=Path, default=Path("data"))
    parser.add_argument("--models-dir", type=Path, default=Path("models"))
    parser.add_argument("--start", help="first date (inclusive), e.g. 2017-05-01")
    parser.add_argument("--end", help="last date (inclusive), e.g. 2018-02-07")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--symbol", action="append", dest="symbols", help="override the strategy's symbol")
    parser.add_argument("--device", default="auto", help="auto (cuda, then mps, then cpu), cuda, mps or cpu")
    args = parser.parse_args(argv)

    overrides = {"start_date": args.start, "end_date": args.end, "epochs": args.epochs, "symbols": args.symbols}
    bar = ProgressBar()
    try:
        strategy = parse_strategy(args.strategy.read_bytes(), {k: v for k, v in overrides.items() if v})
        result = train_strategy(strategy, args.data_dir, args.models_dir, bar, device=args.device)
    except (PipelineError, OSError) as exc:
        bar.close()
        print(f"error: {exc}", file=sys.stderr)
        return 1
    bar.close()
    print(result_text(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
