"""What every benchmark script records beside its figures: the machine (`card`) and one result file
(`write_result`: processor, date, the command that produced it, then the script's own parts)."""
from __future__ import annotations

import datetime as dt
import json
import os
import platform
import sys
from pathlib import Path
from typing import Any


def card() -> str:
    """The accelerator, or the CPU model, its widest vector ISA in /proc/cpuinfo, the ISA torch's kernels
    dispatch to, and the core count."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_name()
    name, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    isa = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"
    try:
        kernels = torch.backends.cpu.get_cpu_capability()
    except AttributeError:
        kernels = "?"
    return f"{name} (cpuinfo: {isa}; torch kernels: {kernels}; {os.cpu_count()} cores)"


def write_result(out: str | os.PathLike, script: str, argv: list[str] | None, **parts: Any) -> dict:
    """Write {processor, date (UTC, to the second), command, **parts} as JSON to `out` (folders made),
    print the processor line, and return the object. `script`: the script's path from the repository
    root; `argv`: its arguments (None: sys.argv's)."""
    result = {"processor": card(), "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
              "command": " ".join(["python", script, *(argv if argv is not None else sys.argv[1:])]), **parts}
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"processor: {result['processor']}")
    return result
