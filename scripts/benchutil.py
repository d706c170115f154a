"""What the benchmark and training scripts of this folder share: the machine they ran on
and the process's resident memory.

    from benchutil import machine, machine_info, cpu_flags, load_average, rss_mib, peak_rss_mib
"""

import os
import platform
import resource
import sys
from pathlib import Path


def cpu_model():
    """The CPU's model name (:func:`model_core.inference.cpu_model`)."""
    from model_core.inference import cpu_model as model_name

    return model_name()


def cpu_flags():
    """The CPU's SIMD flags that matter for torch (AVX2, AVX-512, AMX), as one line."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            flags = next(line for line in cpuinfo if line.startswith("flags")).split(":")[1].split()
    except (OSError, StopIteration):
        return "unknown"
    return " ".join(sorted(flag for flag in flags if flag.startswith(("avx", "amx")))) or "none"


def machine_info():
    """The machine as a dict: cpu, cores, gpu (None without CUDA), torch, threads, system."""
    import torch

    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "system": f"{platform.system()} {platform.release()}",
    }


def load_average(digits=1):
    """The 1, 5 and 15 minute load averages rounded to ``digits``, or None where the system has none."""
    try:
        return tuple(round(v, digits) for v in os.getloadavg())
    except (OSError, AttributeError):
        return None


def machine(load=False):
    """One line: CPU model, cores, GPU, torch version and threads, system; with ``load``
    the 1-minute load average too."""
    info = machine_info()
    text = (
        f"{info['cpu']}, {info['cores']} CPUs, {info['gpu'] or 'no GPU'}, "
        f"torch {info['torch']} ({info['threads']} threads), {info['system']}"
    )
    if load:
        average = load_average(2)
        text += f", load average {average[0]:.2f}" if average else ", load average unknown"
    return text


def rss_mib():
    """Current resident memory of this process, MiB (Linux /proc; 0 elsewhere)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        return 0.0
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mib():
    """Peak resident memory of this process so far, MiB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return peak / 1024 if sys.platform != "darwin" else peak / 2**20
