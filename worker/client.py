"""`trainhost submit | status | sessions | stop | evaluate | result | experiment | experiment-stop` — the
producer API from a shell."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from trainhost.config import Settings
from trainhost.jobs import experiments, producer
from trainhost.jobs.connection import redis_client
from trainhost.jobs.experiment_text import experiment_text, progress_text
from trainhost.jobs.pipeline.result_text import result_text
from trainhost.jobs.producer import RequestError


def _connection(settings: Settings):
    connection = redis_client(settings)
    if connection is None:
        raise RequestError(503, "redis_unavailable", "no Redis: set REDIS_URL, or start the stack (trainhost up)")
    return connection


def follow(connection, session_id: str, settings: Settings) -> dict[str, Any]:
    """A live progress bar until the session ends; Ctrl-C offers to stop it."""
    from tqdm import tqdm

    bar = tqdm(total=100.0, unit="%", dynamic_ncols=True, bar_format="{l_bar}{bar}| {n:.0f}% {postfix}")
    try:
        while True:
            try:
                session = producer.get_session(connection, session_id)
                progress, current = session.get("progress") or {}, (session.get("metrics") or {}).get("current") or {}
                bar.set_description(f"{session['status']}/{session.get('phase')}")
                bar.set_postfix_str(_progress_text(progress, current), refresh=False)
                # An evaluation reports no percentage: completed is 100 %.
                percent = 100.0 if session["status"] == "completed" else progress.get("percent") or 0.0
                bar.update(max(0.0, percent - bar.n))
                if session["status"] not in ("queued", "running"):
                    return session
                time.sleep(0.5)
            except KeyboardInterrupt:
                bar.clear()
                answer = input(f"\nstop session {session_id}? [y/N] ").strip().lower()
                if answer == "y":
                    try:
                        print(producer.request_stop(connection, settings, session_id)["message"])
                    except RequestError as exc:  # asked before, or it ended meanwhile: keep following
                        print(exc.message)
                else:
                    print("detached; the session goes on (trainhost status", session_id + ")")
                    return producer.get_session(connection, session_id)
    finally:
        bar.close()


def _progress_text(progress: dict[str, Any], current: dict[str, Any]) -> str:
    parts = []
    if progress.get("epoch"):
        parts.append(f"epoch {progress['epoch']}/{progress.get('total_epochs')}")
        parts.append(f"batch {progress.get('batch')}/{progress.get('total_batches')}")
    if current.get("train_loss") is not None:
        parts.append(f"loss {current['train_loss']:.4f}")
    if current.get("val_accuracy") is not None:
        parts.append(f"val acc {current['val_accuracy']:.3f}")
    if progress.get("eta_seconds") is not None:
        parts.append(f"ETA {progress['eta_seconds']:.0f}s")
    return ", ".join(parts)


def print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, default=str))


def cmd_submit(settings: Settings, args: argparse.Namespace) -> int:
    connection = _connection(settings)
    request = {"strategy_yaml": Path(args.strategy).read_text(), "start_date": args.start, "end_date": args.end,
               "epochs": args.epochs, "session_id": args.session_id}
    submitted = producer.submit_training(connection, settings, {k: v for k, v in request.items() if v is not None})
    print(f"session {submitted['session_id']}: {submitted['message']}")
    if not args.follow:
        return 0
    session = follow(connection, submitted["session_id"], settings)
    print_summary(session)
    return 0 if session["status"] in ("completed", "stopped") else 1


def print_summary(session: dict[str, Any]) -> None:
    """How a session ended, and its result as the in-process command prints it."""
    print(f"status: {session['status']}")
    if session.get("error"):
        print(f"error:  {session['error']}")
    if session.get("result"):
        print(result_text(session["result"]))


def cmd_evaluate(settings: Settings, args: argparse.Namespace) -> int:
    connection = _connection(settings)
    request = {"model_path": args.model_path, "symbol": args.symbol, "timeframe": args.timeframe,
               "start_date": args.start, "end_date": args.end}
    submitted = producer.submit_evaluation(connection, settings, {k: v for k, v in request.items() if v})
    print(f"session {submitted['session_id']}: {submitted['message']}")
    session = follow(connection, submitted["session_id"], settings) if args.follow else None
    if session:
        print_summary(session)
    return 0 if session is None or session["status"] == "completed" else 1


def cmd_status(settings: Settings, args: argparse.Namespace) -> int:
    print_json(producer.get_session(_connection(settings), args.session_id))
    return 0


def cmd_result(settings: Settings, args: argparse.Namespace) -> int:
    print_json(producer.get_result(_connection(settings), args.session_id))
    return 0


def cmd_sessions(settings: Settings, args: argparse.Namespace) -> int:
    listing = producer.list_sessions(_connection(settings), args.status, args.limit, 0)
    print(f"{'session':34} {'kind':10} {'status':10} {'phase':18} {'progress':>8}  strategy")
    for s in listing["sessions"]:
        percent = (s.get("progress") or {}).get("percent") or 0
        print(f"{s['session_id']:34} {s['kind'] or '-':10} {s['status']:10} {s['phase'] or '-':18} "
              f"{percent:7.1f}%  {s.get('strategy') or '-'}")
    print(f"{listing['total']} session(s)")
    return 0


def cmd_stop(settings: Settings, args: argparse.Namespace) -> int:
    print(producer.request_stop(_connection(settings), settings, args.session_id)["message"])
    return 0


def load_experiment_file(path: Path) -> dict[str, Any]:
    """An experiment request from a YAML (or `.json`) file, keyed as POST /experiments takes it; a
    `base.strategy_file` (relative to the experiment file) is read into `base.strategy_yaml`."""
    is_json = path.suffix == ".json"
    try:
        text = path.read_text()
        request = json.loads(text) if is_json else yaml.safe_load(text)
    except OSError as exc:
        raise RequestError(422, "invalid_request", f"{path}: {exc.strerror}") from None
    except (ValueError, yaml.YAMLError) as exc:
        raise RequestError(422, "invalid_request", f"{path}: not valid {'JSON' if is_json else 'YAML'}: {exc}"
                           ) from None
    if not isinstance(request, dict):
        raise RequestError(422, "invalid_request", f"{path}: an experiment is a mapping of base, sweep, "
                           "walk_forward, objective, name, experiment_id")
    base = request.get("base")
    if isinstance(base, dict) and "strategy_file" in base:
        base = dict(base)
        strategy = path.parent / str(base.pop("strategy_file"))
        if "strategy_yaml" in base or "strategy" in base:
            raise RequestError(422, "invalid_request", "base.strategy_file: give one of strategy_file, "
                               "strategy_yaml, strategy")
        try:
            base["strategy_yaml"] = strategy.read_text()
        except OSError as exc:
            raise RequestError(422, "invalid_request", f"base.strategy_file: {strategy}: {exc.strerror}") from None
        request = {**request, "base": base}
    return request


def follow_experiment(connection, experiment_id: str) -> dict[str, Any] | None:
    """One progress bar of the experiment's sessions until it has ended (completed or stopped); None
    after a Ctrl-C, which leaves it running."""
    from tqdm import tqdm

    view = experiments.get_experiment(connection, experiment_id)
    bar = tqdm(total=view["children"]["total"], unit="session", dynamic_ncols=True)
    try:
        while True:
            bar.set_description(view["status"])
            bar.set_postfix_str(progress_text(view), refresh=False)
            bar.update(view["children"]["done"] - bar.n)
            if view["status"] in ("completed", "stopped"):
                return view
            time.sleep(1.0)
            view = experiments.get_experiment(connection, experiment_id)
    except KeyboardInterrupt:
        bar.clear()
        print(f"\ndetached; experiment {experiment_id} goes on. Stop it with: trainhost experiment-stop "
              f"{experiment_id} (or POST /experiments/{experiment_id}/stop)")
        return None
    finally:
        bar.close()


def cmd_experiment(settings: Settings, args: argparse.Namespace) -> int:
    request = load_experiment_file(Path(args.file))
    connection = _connection(settings)
    submitted = experiments.submit_experiment(connection, settings, request)
    print(f"experiment {submitted['experiment_id']}: {submitted['message']} ({submitted['trials']} trial(s), "
          f"{submitted['folds']} fold(s))")
    if not args.follow:
        return 0
    view = follow_experiment(connection, submitted["experiment_id"])
    if view is None:
        return 1
    print(experiment_text(view))
    return 0 if view["best"] is not None or view["status"] == "stopped" else 1


def cmd_experiment_stop(settings: Settings, args: argparse.Namespace) -> int:
    stopped = experiments.stop_experiment(_connection(settings), settings, args.experiment_id)
    print(f"experiment {stopped['experiment_id']}: stopping, {stopped['sessions_stopped']} session(s) asked to stop")
    return 0


def add_client_commands(sub) -> None:
    submit = sub.add_parser("submit", help="validate and enqueue a training session")
    submit.add_argument("strategy", help="KTRDR v3 strategy YAML")
    submit.add_argument("--start")
    submit.add_argument("--end")
    submit.add_argument("--epochs", type=int)
    submit.add_argument("--session-id")
    submit.add_argument("--follow", action="store_true", help="show a live progress bar until it ends")
    submit.set_defaults(func=cmd_submit)

    evaluate = sub.add_parser("evaluate", help="evaluate a saved model on a data range")
    evaluate.add_argument("model_path")
    evaluate.add_argument("--symbol")
    evaluate.add_argument("--timeframe")
    evaluate.add_argument("--start")
    evaluate.add_argument("--end")
    evaluate.add_argument("--follow", action="store_true")
    evaluate.set_defaults(func=cmd_evaluate)

    for name, func, helptext in (("status", cmd_status, "one session as JSON"),
                                 ("result", cmd_result, "the result of a finished session"),
                                 ("stop", cmd_stop, "stop a running session, cancel a queued one")):
        command = sub.add_parser(name, help=helptext)
        command.add_argument("session_id")
        command.set_defaults(func=func)

    sessions = sub.add_parser("sessions", help="list sessions, newest first")
    sessions.add_argument("--status")
    sessions.add_argument("--limit", type=int, default=20)
    sessions.set_defaults(func=cmd_sessions)

    experiment = sub.add_parser("experiment", help="validate and enqueue an experiment (a sweep, a walk-forward)")
    experiment.add_argument("file", help="experiment request YAML or JSON (examples/experiments/)")
    experiment.add_argument("--follow", action="store_true",
                            help="one progress bar until it ends, then the comparison table")
    experiment.set_defaults(func=cmd_experiment)

    experiment_stop = sub.add_parser("experiment-stop",
                                     help="cancel an experiment's queued sessions, stop its running ones")
    experiment_stop.add_argument("experiment_id")
    experiment_stop.set_defaults(func=cmd_experiment_stop)


def run_client(func, settings: Settings, args: argparse.Namespace) -> int:
    try:
        return func(settings, args)
    except RequestError as exc:
        print(f"error ({exc.status} {exc.code}): {exc.message}", file=sys.stderr)
        return 1
