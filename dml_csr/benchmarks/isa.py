"""Which CPU a benchmark ran on and which instruction sets its runtimes used: the header of ``scripts/benchmark.py``
and the kernels of its OpenVINO rows, so that a table says whether AMX did the work (README, "Deploy on a CPU").

Each runtime's switch for masking AMX (or anything else) on a CPU that has it:

- PyTorch: its oneDNN obeys ``ONEDNN_MAX_CPU_ISA`` (e.g. ``AVX512_CORE_BF16``: AVX-512 with VNNI and bf16, no AMX);
  :func:`onednn_isa` asks it the most it will use (its ceiling, not what a given kernel chose).
- OpenVINO: its CPU plugin's own oneDNN obeys the same variable; :func:`openvino_kernels` lists the kernels a
  compiled model's convolutions run (AMX ones carry ``amx`` in their names, e.g. ``brgconv_avx512_amx_I8``).
  Capped below bf16 on a CPU with bf16, OpenVINO still picks bf16 (under the AVX2 caps its first inference then
  fails), so ``photos.openvino.compile_ir`` asks for f32 there, as on a CPU without bf16.
- ONNX Runtime: no switch. Its MLAS picks kernels from CPUID alone (AMX for its u8 x s8 int8 matrix products where
  the CPU and the kernel allow it) and does not read the variable, so its rows on an AMX CPU may use AMX whatever
  the cap says.
"""
from __future__ import annotations

import collections
import os
import platform
import subprocess
import sys
from typing import Optional

from ..photos.openvino import isa_cap

__all__ = ["cpu_model", "cpu_flags", "onednn_isa", "openvino_kernels", "describe_cpu", "ISA_FLAGS"]

# the flags that decide the fast paths: AMX (tiles, bf16, int8), AVX-512 bf16 and VNNI, AVX2
ISA_FLAGS = ("amx_tile", "amx_bf16", "amx_int8", "avx512_bf16", "avx512_vnni", "avx512f", "avx2")

# one oneDNN convolution in a child process (the variable is read once, at a process's first kernel; the child keeps
# the benchmark's own process and its allocator untouched), with oneDNN's log on: its header names the ISA
_PROBE = ("import torch; x = torch.zeros(1, 8, 8, 8); "
          "torch.ops.aten.mkldnn_convolution(x, torch.zeros(8, 8, 3, 3), None, [1, 1], [1, 1], [1, 1], 1)")


def _cpuinfo(key: str, path: str = "/proc/cpuinfo") -> Optional[str]:
    try:
        with open(path) as f:
            for line in f:
                name, _, value = line.partition(":")
                if name.strip() == key:
                    return value.strip()
    except OSError:
        pass
    return None


def cpu_model(path: str = "/proc/cpuinfo") -> str:
    """The processor's name ("AMD EPYC 9R14", "Intel(R) Xeon(R) Platinum 8488C"), or the platform's machine type
    where ``/proc/cpuinfo`` has none."""
    return _cpuinfo("model name", path) or platform.processor() or platform.machine() or "unknown CPU"


def cpu_flags(path: str = "/proc/cpuinfo") -> set[str]:
    """The CPU's feature flags as Linux names them (empty where ``/proc/cpuinfo`` is not there)."""
    return set((_cpuinfo("flags", path) or "").split())


def onednn_isa(timeout: float = 60.0) -> str:
    """The most PyTorch's oneDNN will use in a process with this one's environment (its cap included), as
    oneDNN's log names it, e.g. "Intel AVX-512 with Intel DL Boost and bfloat16 support": a ceiling (an fp32
    convolution runs AVX-512 on a CPU whose ceiling is AMX); a sentence saying why where it could not be asked."""
    env = dict(os.environ, ONEDNN_VERBOSE="1")
    try:
        done = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True,
                              timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"not known ({type(e).__name__})"
    for line in done.stdout.splitlines():
        head, sep, isa = line.partition(",isa:")
        if sep and head.startswith("onednn_verbose"):
            return isa.strip()
    return f"not known (oneDNN printed no ISA; exit status {done.returncode})"


def openvino_kernels(compiled) -> dict[str, int]:
    """How many of an OpenVINO compiled model's convolutions run each kernel (``primitiveType``), most first."""
    kinds = collections.Counter()
    for op in compiled.get_runtime_model().get_ops():
        info = op.get_rt_info()
        if info["layerType"].astype(str) == "Convolution":
            kinds[info["primitiveType"].astype(str)] += 1
    return dict(kinds.most_common())


def describe_cpu(path: str = "/proc/cpuinfo") -> dict:
    """The CPU, its flags among :data:`ISA_FLAGS`, the cap in force and the most PyTorch's oneDNN will use."""
    flags = cpu_flags(path)
    return {"cpu": cpu_model(path), "flags": [f for f in ISA_FLAGS if f in flags], "amx": "amx_tile" in flags,
            "isa_cap": isa_cap(), "pytorch_onednn_isa": onednn_isa()}
