"""Shared pieces of the benchmarks: timing, the matmul FLOP limit, FLOP counting, peak memory, tables and JSON.

Every benchmark runs all its variants in one process and interleaves them (variant A, B, C, then again A, B, C...),
keeping the best time of several rounds: on a shared machine the best round is the one least disturbed by other
jobs, and interleaving keeps slow phases from landing on one variant only. Ratios are taken within one run.
"""
from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch.profiler import profile, ProfilerActivity
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

REPO_ROOT = Path(__file__).resolve().parents[1]


def synchronize(device: torch.device) -> None:
    """Waits for queued kernels, so wall-clock times include them (a no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def best_time(fn: Callable[[], object], *, calls: int, device: torch.device) -> float:
    """Seconds per call of ``fn``, averaged over ``calls`` back-to-back calls (one timing round)."""
    synchronize(device)
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    synchronize(device)
    return (time.perf_counter() - start) / calls


def time_interleaved(
    variants: dict[str, Callable[[], object]],
    *,
    calls: int | None = None,
    rounds: int,
    warmup: int,
    device: torch.device,
    round_seconds: float = 0.2,
) -> dict[str, float]:
    """Best seconds per call of each variant over ``rounds`` interleaved rounds.

    A round makes ``calls`` back-to-back calls, or, with ``calls=None``, as many as fill about ``round_seconds``
    (estimated from the warm-up calls, between 3 and 2000).
    """
    per_variant = {}
    for name, fn in variants.items():
        for _ in range(max(warmup - 1, 0)):
            fn()
        estimate = best_time(fn, calls=1, device=device)
        per_variant[name] = calls if calls is not None else int(min(2000, max(3, round_seconds / estimate)))
    best = {name: float("inf") for name in variants}
    for _ in range(rounds):
        for name, fn in variants.items():
            best[name] = min(best[name], best_time(fn, calls=per_variant[name], device=device))
    return best


def matmul_rate(device: torch.device, *, sizes: Sequence[int] = (256, 512, 1024, 2048), rounds: int = 5) -> dict:
    """The fp32 matmul rate (FLOP/s) of this machine: the best over square GEMMs of a few sizes.

    This is the ceiling the FLOP-limit columns divide by: a figure at 100% of its limit would run every matmul at
    the best rate this machine reaches and spend no time on anything else.
    """
    per_size = {}
    for n in sizes:
        a = torch.randn(n, n, device=device)
        b = torch.randn(n, n, device=device)
        calls = max(2, int(2e9 / (2 * n**3)))
        seconds = time_interleaved({"mm": lambda: a @ b}, calls=calls, rounds=rounds, warmup=2, device=device)["mm"]
        per_size[n] = 2 * n**3 / seconds
    best_size = max(per_size, key=per_size.get)
    return {"flops_per_s": per_size[best_size], "best_size": best_size, "per_size": per_size}


class _MatmulFlops(TorchDispatchMode):
    """Adds up the FLOPs of every op PyTorch's FLOP counter knows (matmuls and convolutions, with their backward)."""

    def __init__(self) -> None:
        super().__init__()
        self.flops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        count = flop_registry.get(func._overloadpacket)
        if count is not None:
            self.flops += count(*args, **kwargs, out_val=out)
        return out


def count_flops(fn: Callable[[], object]) -> int:
    """Matmul FLOPs (forward and backward: mm, addmm, bmm...) that one call of ``fn`` executes.

    (``torch.utils.flop_counter.FlopCounterMode`` would do, but its per-module tracker chokes on TensorDict modules.)
    """
    counter = _MatmulFlops()
    with counter:
        fn()
    return counter.flops


def peak_step_memory(fn: Callable[[], object], device: torch.device) -> int:
    """Peak bytes allocated during one call of ``fn`` above what was allocated before it.

    On CUDA this is ``torch.cuda.max_memory_allocated``. On CPU, where the allocator keeps no statistics, it replays
    the allocation events of the profiler in time order (activations, gradients and temporaries of the call).
    """
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        fn()
        synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    current = peak = 0
    for event in sorted(prof.events(), key=lambda e: e.time_range.start):
        current += event.cpu_memory_usage if event.name == "[memory]" else event.self_cpu_memory_usage
        peak = max(peak, current)
    return peak


def tensor_bytes(tensors) -> int:
    """Total bytes of an iterable of tensors."""
    return sum(t.numel() * t.element_size() for t in tensors)


@dataclass
class Machine:
    """What the numbers were measured on."""

    device: str
    device_name: str
    threads: int
    cpu_count: int | None
    load_average: tuple[float, float, float] | None
    torch_version: str
    python_version: str
    matmul: dict = field(default_factory=dict)

    @classmethod
    def describe(cls, device: torch.device, matmul: dict) -> Machine:
        if device.type == "cuda":
            name = torch.cuda.get_device_name(device)
        else:
            name = _cpu_model() or platform.processor() or "cpu"
        return cls(
            device=str(device),
            device_name=name,
            threads=torch.get_num_threads(),
            cpu_count=os.cpu_count(),
            load_average=os.getloadavg() if hasattr(os, "getloadavg") else None,
            torch_version=torch.__version__,
            python_version=platform.python_version(),
            matmul=matmul,
        )


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        return None
    return None


def markdown_table(rows: list[dict], columns: Sequence[tuple[str, str]]) -> str:
    """A Markdown table of ``rows`` with ``columns = [(key, header), ...]``; floats are printed compactly."""

    def fmt(value) -> str:
        if isinstance(value, float):
            if value != value:  # nan
                return "-"
            if abs(value) >= 100:
                return f"{value:,.0f}"
            if abs(value) >= 10:
                return f"{value:.1f}"
            if abs(value) >= 0.1:
                return f"{value:.2f}"
            return f"{value:.3f}"
        return "-" if value is None else str(value)

    lines = ["| " + " | ".join(header for _, header in columns) + " |"]
    lines.append("|" + "|".join("---" for _ in columns) + "|")
    for row in rows:
        lines.append("| " + " | ".join(fmt(row.get(key)) for key, _ in columns) + " |")
    return "\n".join(lines)


def write_results(path: Path, machine: Machine, results: dict) -> None:
    """Writes ``{"machine": ..., **results}`` as indented JSON (creating the folder)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"machine": asdict(machine), **results}, indent=2, default=str) + "\n")


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
