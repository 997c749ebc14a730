"""Host facts for /health/detailed: CPU, memory, disk (psutil) and GPUs (NVML)."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import psutil

MB = 1024 * 1024


def system_summary(disk_path: Path) -> dict[str, Any]:
    memory = psutil.virtual_memory()
    path = disk_path if disk_path.exists() else Path(".")
    disk = psutil.disk_usage(str(path))
    return {
        "cpu_percent": psutil.cpu_percent(interval=None),
        "cpu_count": psutil.cpu_count(),
        "load_average": list(psutil.getloadavg()),
        "memory": {"total_mb": memory.total // MB, "used_mb": memory.used // MB, "percent": memory.percent},
        "disk": {"path": str(path), "total_mb": disk.total // MB, "free_mb": disk.free // MB,
                 "percent": disk.percent},
    }


@cache
def _nvml() -> Any:
    """The initialised pynvml module, or the reason there is none (a normal answer, not an error)."""
    try:
        import pynvml

        pynvml.nvmlInit()
        return pynvml
    except Exception as exc:  # no driver, no library, no device: all mean "no GPU here"
        return f"no NVIDIA GPU available ({type(exc).__name__})"


def gpu_summary() -> dict[str, Any]:
    nvml = _nvml()
    if isinstance(nvml, str):
        return {"available": False, "reason": nvml, "devices": []}
    devices = []
    for index in range(nvml.nvmlDeviceGetCount()):
        handle = nvml.nvmlDeviceGetHandleByIndex(index)
        memory = nvml.nvmlDeviceGetMemoryInfo(handle)
        name = nvml.nvmlDeviceGetName(handle)
        devices.append({
            "index": index,
            "name": name.decode() if isinstance(name, bytes) else name,
            "memory_used_mb": memory.used // MB,
            "memory_total_mb": memory.total // MB,
            "utilization_percent": nvml.nvmlDeviceGetUtilizationRates(handle).gpu,
            "temperature_c": nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU),
        })
    return {"available": bool(devices), "devices": devices}
