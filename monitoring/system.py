"""GET /metrics/system: the machine and this process, from psutil."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import psutil
from django.conf import settings


def _disk(path: Path) -> dict[str, Any]:
    path.mkdir(parents=True, exist_ok=True)
    usage = psutil.disk_usage(str(path))
    return {"path": str(path), "total_bytes": usage.total, "free_bytes": usage.free, "used_percent": usage.percent}


def report() -> dict[str, Any]:
    process = psutil.Process()
    memory = psutil.virtual_memory()
    with process.oneshot():
        process_info = {
            "pid": process.pid,
            "rss_bytes": process.memory_info().rss,
            "cpu_percent": process.cpu_percent(interval=None),
            "threads": process.num_threads(),
            "open_files": len(process.open_files()),
            "create_time": process.create_time(),
        }
    return {
        "cpu": {
            "count": os.cpu_count(),
            "percent": psutil.cpu_percent(interval=0.1),
            "load_average": list(os.getloadavg()),
        },
        "memory": {"total_bytes": memory.total, "available_bytes": memory.available, "used_percent": memory.percent},
        "process": process_info,
        "disk": {
            "media": _disk(Path(settings.MEDIA_ROOT)),
            "temp": _disk(settings.CONFIG.temp_dir),
        },
    }
