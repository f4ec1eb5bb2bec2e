"""Whether a network trains faster in bfloat16 autocast or in float32 on this CPU, decided by what the CPU reports
and by a measurement, never by the CPU's name.

A CPU without native bf16 instructions (neither `amx_bf16` nor `avx512_bf16` among its flags, e.g. AVX2 only)
emulates bf16 and runs it many times slower than float32 (a bf16 convolution about 70x slower on an AVX2 EPYC,
`bench/pretrain_throughput.py`): float32 is chosen there without measuring. A CPU with them (AMX on recent Xeons,
AVX512-BF16 on recent EPYCs) may or may not gain, depending on the network: a large network's convolutions run
faster in bf16, a small one's time goes to element-wise operators and the conversions autocast adds. So the caller
gives one training step of its own network at its own batch size, both precisions are timed, alternating, and bf16
is chosen only when its median step is faster by the margin.

The flags come from `/proc/cpuinfo` (what `lscpu` prints as Flags), else from `lscpu`.
"""

from __future__ import annotations

import statistics
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

BF16_FLAGS = ("amx_bf16", "avx512_bf16")  # either makes bf16 matrix products native
MARGIN = 1.10  # bf16 must be this many times faster: autocast changes the numbers, a tie keeps float32


@dataclass(frozen=True)
class PrecisionChoice:
    """The chosen precision ("fp32" | "bf16"), why, and the measured median step seconds (None: not measured)."""

    precision: str
    reason: str
    fp32_s: float | None = None
    bf16_s: float | None = None


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str] | None:
    """The CPU's feature flags, or None when neither /proc/cpuinfo nor lscpu tells them."""
    try:
        for line in cpuinfo.read_text().splitlines():
            if line.split(":", 1)[0].strip() in ("flags", "Features"):
                return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    for line in out.splitlines():
        if line.startswith("Flags:"):
            return frozenset(line.split(":", 1)[1].split())
    return None


def native_bf16(flags: frozenset[str] | None) -> tuple[str, ...]:
    """The native bf16 flags among `flags` (empty: none, or the flags are unknown)."""
    return tuple(f for f in BF16_FLAGS if flags and f in flags)


def choose_cpu_precision(step: Callable[[str], None], *, flags: frozenset[str] | None = None, repeats: int = 3,
                         margin: float = MARGIN, clock: Callable[[], float] = time.perf_counter) -> PrecisionChoice:
    """float32 or bf16 for a training step on this CPU.

    `step(precision)` runs one training step (forward, backward) of the caller's network in that precision;
    `flags`: the CPU's flags (default: `cpu_flags()`). Without native bf16, float32 without measuring. Otherwise
    one warm-up step of each, then `repeats` steps of each, alternating (so a change of the machine's load falls
    on both), and bf16 when the float32 median is at least `margin` times the bf16 median."""
    flags = cpu_flags() if flags is None else flags
    found = native_bf16(flags)
    if not found:
        what = "the CPU's flags are unknown" if flags is None else f"no native bf16 ({' / '.join(BF16_FLAGS)} absent)"
        return PrecisionChoice("fp32", f"{what}: float32, bf16 would be emulated")
    times: dict[str, list[float]] = {"fp32": [], "bf16": []}
    for precision in times:
        step(precision)  # warm-up: oneDNN chooses and caches its kernels for the shapes
    for _ in range(max(1, repeats)):
        for precision, seconds in times.items():
            t0 = clock()
            step(precision)
            seconds.append(clock() - t0)
    fp32_s, bf16_s = statistics.median(times["fp32"]), statistics.median(times["bf16"])
    chosen = "bf16" if fp32_s >= margin * bf16_s else "fp32"
    reason = (f"{', '.join(found)}: a step took {fp32_s:.3f} s in float32 and {bf16_s:.3f} s in bf16 autocast "
              f"(median of {max(1, repeats)}); {chosen} (bf16 needs {margin:.2f}x)")
    return PrecisionChoice(chosen, reason, fp32_s, bf16_s)
