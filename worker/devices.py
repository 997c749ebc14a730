"""A worker's GPU pinning, without ever initialising CUDA in the parent, and its name; the device it
trains on is chosen by `trainhost.jobs.pipeline.model.select_device`."""

from __future__ import annotations

import os
import socket
import uuid


def pin_gpu(gpu: int | None) -> None:
    """Make only GPU `gpu` visible; must run before torch is imported."""
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu)
    # torch.cuda.is_available() then asks NVML instead of creating a CUDA context, so the
    # forked work horses can still initialise CUDA themselves.
    os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")


def worker_name(gpu: int | None, device_type: str, host: str | None = None) -> str:
    """`<host>:gpu<N>-<suffix>` or `<host>:cpu-<suffix>`; the suffix lets a restart never wait for
    the registration of a crashed predecessor to expire."""
    host = host or socket.gethostname().split(".")[0]
    slot = f"gpu{gpu if gpu is not None else 0}" if device_type == "cuda" else device_type
    return f"{host}:{slot}-{uuid.uuid4().hex[:6]}"


def device_of_worker(name: str) -> str:
    """The device type a worker trains on, from its `worker_name`: cuda, mps, cpu (or another type)."""
    slot = name.rpartition(":")[2].rpartition("-")[0]
    return "cuda" if slot.startswith("gpu") else slot
