"""6. GPU benchmark (run by bench/gpu.sh on a CUDA machine; about 2-4 minutes, capped at 8).

Benchmark 2 on the real-world shape: ~885,000 training samples (v3_multi_indicator's features of a
seeded synthetic 1h series), the strategy's small MLP (6 -> 64 -> 32 -> 3):

1. real training sessions through `trainhost worker --gpu 0` (producer API, progress reporting on):
   batch 32 and batch 4096; the device the job saw, its samples/s, and device memory (NVML) before
   the worker starts, while the job runs (peak) and after it ended (a work horse releases it all);
2. in this process, on the same tensors: our trainer (`train_model`, a reporting callback on) against
   a minimal eager PyTorch loop on the same GPU (fp32 at batch 32; bf16 autocast at batch 4096, as the
   trainer uses autocast on CUDA), with torch's allocator numbers before and after;
3. packed training: 256 variants (own learning rate and seed) in one pack for an epoch at batch 32,
   against the single-model graph step's epoch (models per hour, epoch time per model), and the
   allocator's numbers before and after the pack.

Without CUDA it stops at once with a message (exit status 2). `--cpu-dry-run` runs the same code
on the CPU at a small size, to check the script on a machine without a GPU.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from contextlib import nullcontext

from bench.report import Measure, append_results, fmt, load_average, machine, markdown_section

REAL_WORLD_SAMPLES = 885_000
PACKED_MODELS = 256  # the packed case: one pack of this many variants
TRAIN_FRACTION = 0.7
WARMUP_BARS = 200
SYMBOL = "SYNTH"


def no_cuda_message() -> str | None:
    try:
        import torch
    except ImportError:
        return "torch is not installed in this environment (make setup)"
    if not torch.cuda.is_available():
        build = torch.version.cuda or "none (a CPU-only build)"
        return (f"no CUDA device visible to torch {torch.__version__} (CUDA build: {build}); this benchmark needs "
                "an NVIDIA GPU and torch's CUDA build (make TORCH=torch==2.13.0+cu128 setup). Nothing was run.")
    return None


# -- device memory as the driver sees it (NVML: no CUDA context needed) ------------------------------
class DeviceMemory:
    def __init__(self, index: int = 0):
        self.handle = None
        try:
            import pynvml

            pynvml.nvmlInit()
            self.nvml = pynvml
            self.handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        except Exception:  # no NVML: the numbers are reported as n/a
            self.nvml = None

    def used_mb(self) -> float | None:
        if self.handle is None:
            return None
        return self.nvml.nvmlDeviceGetMemoryInfo(self.handle).used / 2**20

    def pids(self) -> set[int]:
        if self.handle is None:
            return set()
        try:
            return {p.pid for p in self.nvml.nvmlDeviceGetComputeRunningProcesses(self.handle)}
        except Exception:
            return set()


class PeakSampler:
    """Samples device memory in a thread while a job runs."""

    def __init__(self, memory: DeviceMemory, interval: float = 0.1):
        self.memory, self.interval = memory, interval
        self.peak: float | None = None
        self.pids: set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            used = self.memory.used_mb()
            if used is not None:
                self.peak = used if self.peak is None else max(self.peak, used)
            self.pids |= self.memory.pids()
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


# -- 1. through the worker -------------------------------------------------------------------------
def worker_jobs(stack, yaml_text: str, plan: dict[int, int], memory: DeviceMemory, gpu_flag: list[str],
                log) -> list[Measure]:
    from rq.job import Job
    from rq.serializers import JSONSerializer

    from bench.harness import wait_result
    from trainhost.jobs import keys, producer

    measures = []
    before_worker = memory.used_mb()
    worker = stack.start_worker(*gpu_flag)
    idle = memory.used_mb()
    parent_on_gpu = worker.pid in memory.pids()
    log(f"worker {worker.worker_name} up; device memory used: {fmt(before_worker)} MB before it, {fmt(idle)} MB "
        f"with it idle; parent holds a CUDA context: {parent_on_gpu}")
    settings = stack.settings()
    for batch_size, epochs in plan.items():
        session = producer.submit_training(stack.redis, settings, {
            "strategy_yaml": yaml_text, "symbols": [SYMBOL], "epochs": epochs, "batch_size": batch_size, "seed": 42})
        job = Job(session["session_id"], connection=stack.redis, serializer=JSONSerializer)
        started = time.perf_counter()
        with PeakSampler(memory) as sampler:
            outcome = wait_result(job, 300)
        wall = time.perf_counter() - started
        view = producer.get_session(stack.redis, job.id)
        if outcome is None or outcome.type != outcome.Type.SUCCESSFUL:
            raise RuntimeError(f"GPU training job (batch {batch_size}) ended {view['status']}: {view.get('error')}")
        time.sleep(0.5)  # the work horse has exited: its CUDA context is gone
        after = memory.used_mb()
        result = producer.get_result(stack.redis, job.id)
        history = [JSONSerializer.loads(h) for h in stack.redis.lrange(keys.history_key(job.id), 0, -1)]
        best = max(h["samples_per_second"] for h in history)
        device = result.get("device") or {}
        resources = view.get("resources") or {}
        log(f"job batch {batch_size}: device {device}, {result['data']['split_sizes']['train']:,} samples, "
            f"{epochs} epochs, best epoch {best:,.0f} samples/s, wall {wall:.1f} s; torch peak "
            f"{resources.get('gpu_memory_peak_mb')} MB; device memory peak {fmt(sampler.peak)} MB, "
            f"after {fmt(after)} MB")
        measures.append(Measure(
            f"gpu.job.bs{batch_size}.samples_per_s", best, "samples/s", goal="",
            note=f"through `trainhost worker {' '.join(gpu_flag)}`: device seen by the job {device.get('type')} "
                 f"({device.get('name')}), {epochs} epochs, wall {wall:.1f} s incl. data and features"))
        measures.append(Measure(
            f"gpu.job.bs{batch_size}.device_memory_after", after, "MB", idle, "worker idle, before the job",
            "memory back to the idle level (<= +64 MB) once the job ended",
            lambda m: m.baseline is not None and m.value - m.baseline <= 64,
            note=f"device memory used: {fmt(before_worker)} MB before the worker, {fmt(idle)} MB idle, peak "
                 f"{fmt(sampler.peak)} MB while the job ran (torch peak in the job "
                 f"{resources.get('gpu_memory_peak_mb')} MB), {fmt(after)} MB after; worker parent on the GPU: "
                 f"{parent_on_gpu}; processes seen on the GPU during the job: {sorted(sampler.pids) or 'n/a'}"))
        if memory.used_mb() is None:  # no NVML: the check cannot be made
            measures[-1].passed = None
    stack.stop(worker)
    return measures


# -- 2. in process ---------------------------------------------------------------------------------
def minimal_loop(strategy, x, y, batch_size: int, epochs: int, device, autocast: bool) -> float:
    import torch
    import torch.nn.functional as F

    from trainhost.jobs.pipeline.model import build_mlp
    from trainhost.jobs.pipeline.trainer import class_weights

    config = strategy.training
    torch.manual_seed(config.seed)
    m = strategy.model
    model = build_mlp(x.shape[1], m.hidden_layers, m.activation, m.dropout, m.output_size).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    X, Y = torch.as_tensor(x, device=device), torch.as_tensor(y, device=device)
    weight = class_weights(Y.cpu(), m.output_size).to(device)
    amp = torch.autocast(device.type, dtype=torch.bfloat16) if autocast else nullcontext()
    n, rates = len(X), []
    model.train()
    for epoch in range(epochs + 1):  # epoch 0: warm-up (kernels, allocator), not counted
        limit = min(n, 200 * batch_size) if epoch == 0 else n
        _sync(device)
        started = time.perf_counter()
        perm = torch.randperm(n, device=device)[:limit]
        for i in range(0, limit, batch_size):
            idx = perm[i:i + batch_size]
            with amp:
                loss = F.cross_entropy(model(X[idx]), Y[idx], weight=weight)
            optimizer.zero_grad()
            loss.backward()
            if config.gradient_clip is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.gradient_clip)
            optimizer.step()
        _sync(device)
        if epoch:
            rates.append(n / (time.perf_counter() - started))
    return max(rates)


def ours(strategy, x, y, xv, yv, batch_size: int, epochs: int, device, step_mode: str = "auto") -> float:
    """Our trainer's best epoch (samples/s); on CUDA "auto" replays the step as a CUDA graph."""
    import torch

    from trainhost.jobs.pipeline.model import build_mlp
    from trainhost.jobs.pipeline.trainer import train_model

    def make_model():
        torch.manual_seed(strategy.training.seed)
        m = strategy.model
        return build_mlp(x.shape[1], m.hidden_layers, m.activation, m.dropout, m.output_size)

    seen = {}

    def on_batch(progress) -> None:  # what the job's reporter does per batch: keep the latest
        seen["last"] = progress

    config = strategy.training.model_copy(update={"batch_size": batch_size})
    options = {"device": str(device), "step_mode": step_mode, "on_batch": on_batch, "should_stop": lambda: False}
    warm = min(len(x), 200 * batch_size)
    train_model(make_model(), x[:warm], y[:warm], xv, yv, config.model_copy(update={"epochs": 1}), **options)
    result = train_model(make_model(), x, y, xv, yv, config.model_copy(update={"epochs": epochs}), **options)
    return max(h["samples_per_second"] for h in result.history)


def graph_numerics(strategy, x, y, xv, yv, device) -> float:
    """Largest weight difference after 2 epochs of 20,000 samples at batch 32: the step replayed as a
    CUDA graph against the same step run eagerly (same seed, data, dropout draws)."""
    import torch

    from trainhost.jobs.pipeline.model import build_mlp
    from trainhost.jobs.pipeline.trainer import train_model

    weights = []
    for step_mode in ("eager", "auto" if device.type == "cuda" else "static"):
        torch.manual_seed(strategy.training.seed)
        m = strategy.model
        model = build_mlp(x.shape[1], m.hidden_layers, m.activation, m.dropout, m.output_size)
        config = strategy.training.model_copy(update={"batch_size": 32, "epochs": 2, "early_stopping": None})
        train_model(model, x[:20_000], y[:20_000], xv, yv, config, device=str(device), step_mode=step_mode)
        _sync(device)
        weights.append([p.detach().float().cpu() for p in model.parameters()])
    return max(float((a - b).abs().max()) for a, b in zip(*weights, strict=True))


def packed(strategy, x, y, xv, yv, device, models: int, single_epoch_s: float, log) -> list[Measure]:
    """`models` variants (own learning rate and seed each) trained as one pack for one epoch at batch 32
    on the same tensors, against the single-model step's epoch time measured in this run; the allocator's
    numbers before and after (the pack must give its device memory back)."""
    import torch

    from trainhost.jobs.pipeline.model import build_mlp
    from trainhost.jobs.pipeline.packed_trainer import PackMember, train_packed

    def member(k: int):
        torch.manual_seed(k)
        m = strategy.model
        model = build_mlp(x.shape[1], m.hidden_layers, m.activation, m.dropout, m.output_size)
        config = strategy.training.model_copy(update={"batch_size": 32, "epochs": 1, "early_stopping": None,
                                                      "seed": k, "learning_rate": 0.0005 * (1 + k % 8)})
        return model, PackMember(x, y, xv, yv, config)

    if device.type == "cuda":
        torch.cuda.empty_cache()
    before = torch.cuda.memory_allocated() / 2**20 if device.type == "cuda" else None
    warm = [member(k) for k in range(models)]
    train_packed([m for m, _ in warm], [PackMember(p.X_train[:6400], p.y_train[:6400], xv, yv, p.config)
                                        for _, p in warm], device=str(device))  # capture and warm-up
    pack = [member(k) for k in range(models)]
    _sync(device)
    started = time.perf_counter()
    results = train_packed([m for m, _ in pack], [p for _, p in pack], device=str(device))
    _sync(device)
    elapsed = time.perf_counter() - started
    failed = [r for r in results if isinstance(r, Exception)]
    del pack, warm, results
    if device.type == "cuda":
        torch.cuda.empty_cache()
    after = torch.cuda.memory_allocated() / 2**20 if device.type == "cuda" else None
    per_model = elapsed / models
    log(f"packed K={models}: one epoch of {len(x):,} samples each in {elapsed:.1f} s ({per_model:.3f} s a model); "
        f"single-model step {single_epoch_s:.2f} s an epoch; torch allocated {fmt(before)} -> {fmt(after)} MB; "
        f"{len(failed)} failed")
    return [
        Measure(f"gpu.packed.k{models}.models_per_hour", 3600 / per_model, "models/h", 3600 / single_epoch_s,
                "single-model graph step, same GPU", "ratio >= 50", lambda m: m.ratio >= 50 and not failed,
                note=f"one epoch each, {len(x):,} samples at batch 32, {models} models in one pack"),
        Measure(f"gpu.packed.k{models}.epoch_seconds_per_model", per_model, "s", single_epoch_s,
                "single-model epoch", "<= 0.1 s", lambda m: m.value <= 0.1,
                note=f"torch allocated {fmt(before)} MB before the pack, {fmt(after)} MB after"),
    ]


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def in_process(stack, yaml_text: str, plan: dict[int, int], device, memory: DeviceMemory, log) -> list[Measure]:
    import numpy as np
    import torch

    from trainhost.jobs.pipeline.dataset import prepare_dataset
    from trainhost.jobs.pipeline.features import apply_normalization, fit_normalization
    from trainhost.jobs.pipeline.strategy import parse_strategy

    strategy = parse_strategy(yaml_text, {"symbols": [SYMBOL], "seed": 42})
    data = prepare_dataset(strategy, stack.data_dir)
    norm = fit_normalization(strategy, data.train.features)
    x = apply_normalization(data.train.features, norm).to_numpy(dtype=np.float32, copy=True)
    xv = apply_normalization(data.val.features, norm).to_numpy(dtype=np.float32, copy=True)
    y, yv = data.train.labels.astype(np.int64), data.val.labels.astype(np.int64)
    log(f"in-process tensors: {len(x):,} training samples, {x.shape[1]} features")
    measures = []
    for batch_size, epochs in plan.items():
        autocast = device.type == "cuda" and batch_size >= 1024
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        before = (torch.cuda.memory_allocated() / 2**20) if device.type == "cuda" else None
        nvml_before = memory.used_mb()
        minimal = minimal_loop(strategy, x, y, batch_size, epochs, device, autocast)
        mine = ours(strategy, x, y, xv, yv, batch_size, epochs, device)
        after = (torch.cuda.memory_allocated() / 2**20) if device.type == "cuda" else None
        peak = (torch.cuda.max_memory_allocated() / 2**20) if device.type == "cuda" else None
        kind = "bf16 autocast" if autocast else "fp32 (the trainer autocasts to bf16 on CUDA)"
        log(f"in-process batch {batch_size}: ours {mine:,.0f} samples/s, minimal eager loop ({kind}) "
            f"{minimal:,.0f} samples/s; torch allocated {fmt(before)} -> {fmt(after)} MB, peak {fmt(peak)} MB; "
            f"device used {fmt(nvml_before)} -> {fmt(memory.used_mb())} MB")
        if batch_size == 32:  # (a CPU dry run takes the same static step, without the graph)
            eager = ours(strategy, x, y, xv, yv, batch_size, epochs, device, step_mode="eager")
            log(f"in-process batch 32, eager step (no CUDA graph): {eager:,.0f} samples/s")
            measures.append(Measure(
                "gpu.trainer.bs32.epoch_seconds", len(x) / mine, "s", len(x) / eager, "our eager step",
                "<= 2 s per epoch", lambda m: m.value <= 2,
                note=f"{len(x):,} samples an epoch at batch 32, the step replayed as one CUDA graph"))
            difference = graph_numerics(strategy, x, y, xv, yv, device)
            log(f"CUDA graph vs eager step, 2 epochs at batch 32: largest weight difference {difference:.2e}")
            measures.append(Measure(
                "gpu.trainer.graph_vs_eager.max_weight_diff", difference, "", None, "", "<= 1e-3",
                lambda m: m.value <= 1e-3, note="20,000 samples, 2 epochs, same seed: graph replay against eager"))
            measures += packed(strategy, x, y, xv, yv, device, 8 if device.type == "cpu" else PACKED_MODELS,
                               len(x) / mine, log)
        measures.append(Measure(
            f"gpu.trainer.bs{batch_size}.vs_minimal_eager", mine, "samples/s", minimal, f"minimal eager loop, {kind}",
            "ratio >= 0.95", lambda m: m.ratio >= 0.95,
            note=f"{len(x):,} samples, best of {epochs} epochs; torch allocated {fmt(before)} MB before, "
                 f"{fmt(after)} MB after, peak {fmt(peak)} MB; device memory used {fmt(nvml_before)} -> "
                 f"{fmt(memory.used_mb())} MB (this process's CUDA context included)"))
    return measures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=REAL_WORLD_SAMPLES, help="training samples (default 885,000)")
    parser.add_argument("--cpu-dry-run", action="store_true", help="no GPU: run the same code on the CPU, small")
    parser.add_argument("--no-write", action="store_true", help="do not append to bench/RESULTS.md")
    args = parser.parse_args(argv)

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(124))  # a timeout still cleans up its processes
    problem = no_cuda_message()
    if problem and not args.cpu_dry_run:
        print(f"bench.gpu: {problem}", file=sys.stderr)
        return 2
    import torch

    from bench.harness import Stack
    from bench.synthetic import write_csv
    from tests.helpers.fixtures import strategy_path

    samples = min(args.samples, 30_000) if args.cpu_dry_run else args.samples
    device = torch.device("cpu") if args.cpu_dry_run else torch.device("cuda")
    started = time.monotonic()

    def log(message: str) -> None:
        print(f"[{time.monotonic() - started:6.1f} s] {message}", flush=True)

    info = machine()
    log(f"torch {torch.__version__}, CUDA {torch.version.cuda}, device {info['device']}, load {load_average()}")
    memory = DeviceMemory(0)
    bars = int(samples / TRAIN_FRACTION) + WARMUP_BARS
    yaml_text = strategy_path("v3_multi_indicator").read_text()
    job_plan = {32: 1, 4096: 3}
    loop_plan = {32: 1, 4096: 5}
    measures: list[Measure] = []
    with Stack("gpu") as stack:
        write_csv(stack.data_dir, SYMBOL, bars)
        log(f"wrote {bars:,} synthetic 1h bars")
        # The worker first: this process has not touched CUDA yet, so NVML's numbers are the worker's.
        measures += worker_jobs(stack, yaml_text, job_plan, memory, ["--gpu", "0"], log)
        loops = in_process(stack, yaml_text, loop_plan, device, memory, log)
        measures += loops
    # The jobs' rates against the minimal loop at the same batch size (the job's epochs include its
    # validation pass, and its first epoch the work horse's CUDA warm-up).
    minimal = {int(m.name.split(".bs")[1].split(".")[0]): m.baseline for m in loops
               if m.name.endswith(".vs_minimal_eager")}
    for m in measures:
        if m.name.startswith("gpu.job.") and m.name.endswith(".samples_per_s"):
            m.baseline = minimal.get(int(m.name.split(".bs")[1].split(".")[0]))
            m.baseline_label = "minimal eager loop, same device"
    for measure in measures:
        print(measure.line(), flush=True)
    total = time.monotonic() - started
    failures = [m for m in measures if m.passed is False]
    print(f"{len(measures)} measures, {len(failures)} FAIL, {total:.0f} s")
    if not args.no_write:
        title = "bench/gpu.sh" + (" --cpu-dry-run" if args.cpu_dry_run else "")
        append_results(markdown_section(info, measures, [f"total {total:.0f} s; load average {load_average()}"],
                                        title))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
