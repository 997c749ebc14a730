"""Which trainings may share one packed step (jobs/pipeline/packed_trainer.py), and how they are
grouped into packs. Pure Python on purpose: the producer decides the packs before anything is
enqueued, in the light client that has no torch."""

from __future__ import annotations

from collections.abc import Hashable, Sequence

from trainhost.jobs.pipeline.strategy import Strategy

CPU_PACK_SIZE = 16  # `pack_size: 0` (auto) where the workers train on CPUs
GPU_PACK_SIZE = 256  # ... and where they train on GPUs


def pack_signature(strategy: Strategy) -> tuple[Hashable, ...] | None:
    """What trainings must share to be stacked into one set of parameters: the network's shape
    (an MLP's input width, layer sizes, activation, outputs), the loss, the optimizer's kind and the
    batch size; None for a network that is never packed (LSTM/GRU). Everything else (data, labels,
    split, learning rate, weight decay, clipping, dropout, early stopping, schedule, epochs, seed)
    is each model's own."""
    spec, training = strategy.model_spec, strategy.training
    if spec["type"] != "mlp":
        return None
    return ("mlp", spec["input_size"], tuple(spec["hidden_layers"]), spec["activation"], spec["output_size"],
            training.loss, training.optimizer, training.batch_size)


def plan_packs(signatures: Sequence[Hashable | None], pack_size: int, workers: int = 1) -> list[list[int]]:
    """The packs, as lists of indices into `signatures`: same-signature trainings in submission order,
    in chunks of at most `pack_size`, spread evenly (33 at 16 make 11 + 11 + 11, not 16 + 16 + 1), and
    into at least one pack per worker where there are enough (16 for 2 workers: 8 + 8, so that neither
    waits). A training left alone, or with no signature, is in no pack (it trains as it would anyway)."""
    if pack_size < 2:
        return []
    groups: dict[Hashable, list[int]] = {}
    for index, signature in enumerate(signatures):
        if signature is not None:
            groups.setdefault(signature, []).append(index)
    packs = []
    for members in groups.values():
        count = max(-(-len(members) // pack_size), min(workers, len(members) // 2), 1)
        size = -(-len(members) // count)
        packs.extend(chunk for start in range(0, len(members), size) if len(chunk := members[start:start + size]) > 1)
    return packs
