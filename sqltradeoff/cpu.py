"""CPU threads for the stages that run a model (train, predict, mmlu).

`apply_cpu_threads(value)` sets torch's intra-op threads and returns the number used:
* `value`: params.yaml `cpu_threads` -- `auto` (default) or a positive integer;
* the environment variable SQLTRADEOFF_CPU_THREADS (`auto` or an integer) overrides the param;
* `auto`: torch's own default, left as it is (OMP_NUM_THREADS when set, else the physical cores
  OpenMP may use); the thread count can change float rounding, so `auto` keeps the outputs of
  earlier runs byte-identical.

It also sets `OMP_WAIT_POLICY=PASSIVE` when the variable is unset and torch is not imported yet
(libgomp reads it once, when torch loads): OpenMP worker threads then sleep at a barrier instead
of spinning on a core. On cores shared with another job, a spinning thread takes CPU time from the
thread the barrier waits for. Measured with benchmarks/bench_cpu_threads.py (a LoRA step of a
SmolLM2-135M-shaped model, 2 threads): on the 2-core AMD EPYC (Zen 4, AVX-512) with other jobs running
(load 8-9), 24.5 s -> 3.2 s per step, and 42.4 s -> 4.5 s with one more busy process; on 2
pinned cores of an Intel Xeon host, alone 1.35 s (libgomp's default) vs 1.46 s (PASSIVE), with one
busy process 33 s vs 2.0 s. Call it before importing torch (the stages do), or the policy is left
as it is.
"""
from __future__ import annotations

import os
import sys

from .errors import UserError

ENV = "SQLTRADEOFF_CPU_THREADS"


def _parse(value, where: str) -> int | None:
    """None for `auto`, else a positive int; `where` names the setting in the error."""
    if isinstance(value, str) and value.strip().lower() == "auto":
        return None
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UserError(f"{where} must be `auto` or a positive integer, got {value!r}")
    return value


def cpu_threads(value="auto", environ=os.environ) -> int | None:
    """The thread count `apply_cpu_threads(value)` sets, None for torch's default (see the module
    docstring); a bad value is a UserError naming the setting."""
    if environ.get(ENV, "").strip():
        return _parse(environ[ENV].strip(), ENV)
    return _parse(value, "params: cpu_threads")


def apply_cpu_threads(value="auto", environ=os.environ) -> int:
    """Set torch's CPU threads (and the OpenMP wait policy, before torch loads); returns the count."""
    n = cpu_threads(value, environ)
    if "torch" not in sys.modules:
        environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import torch

    if n is not None:
        torch.set_num_threads(n)
    return torch.get_num_threads()
