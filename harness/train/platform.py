"""What a run's numbers depend on beyond its config: the processor and its kernels, torch, the
thread count. Two runs of one cell agree bit for bit only when all of these agree; the report
reads this tag to say whether bit-identical reruns are to be expected."""

from __future__ import annotations

import platform as _platform

import torch


def cpu_model() -> str:
    """The processor's model name (/proc/cpuinfo on Linux), else what `platform` knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return _platform.processor() or _platform.machine() or "unknown CPU"


def platform_tag(device: torch.device) -> str:
    """e.g. `AMD EPYC, CPU kernels AVX512, 2 threads, torch 2.14.1` or
    `NVIDIA H100 80GB HBM3, CUDA 13.0, torch 2.14.1`."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        return f"{name}, CUDA {torch.version.cuda}, torch {torch.__version__}"
    threads = torch.get_num_threads()
    capability = torch.backends.cpu.get_cpu_capability()
    return (f"{cpu_model()}, CPU kernels {capability}, {threads} thread{'s' if threads != 1 else ''}, "
            f"torch {torch.__version__}")
