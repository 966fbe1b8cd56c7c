"""Time each data stage on the local mirror and print a markdown table.

    .venv/bin/python benchmarks/bench_data.py [--repeat 3] [--out benchmarks/out/data]

Runs the stage CLIs as the pipeline does (download spider, download mmlu, prepare, format) on a
params copy that points at the mirror (data.mirror_dir) and the Qwen GGUF (model.path), writing
under --out. Fast stages run --repeat times (median and min reported); format runs once. The
format time includes loading the tokenizer through sqltradeoff.modeling (the GGUF's one-time
conversion into model.cache_dir when that cache is cold; the table says which).
"""
from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SQLTRADEOFF_SHARED_DATA", REPO.parent / "shared" / "data"))
GGUF_DIR = Path(os.environ.get("SQLTRADEOFF_GGUF_DIR", Path.home() / ".cache" / "offline-models"))
QWEN = "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"


def timed(cmd: list[str], repeat: int) -> list[float]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1", "DVC_NO_ANALYTICS": "1",
           "TOKENIZERS_PARALLELISM": "false"}
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
        times.append(time.perf_counter() - t0)
        if proc.returncode != 0:
            sys.exit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr[-3000:]}")
        last = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    print(f"  {' '.join(Path(c).name if c.endswith('.py') else c for c in cmd[1:3])}: {last}", file=sys.stderr)
    return times


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3, help="runs of each fast stage (default: %(default)s)")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "out" / "data", help="scratch folder")
    ap.add_argument("--model-cache", type=Path, default=REPO / ".cache" / "models",
                    help="model.cache_dir for the GGUF conversion (default: the project's, %(default)s)")
    args = ap.parse_args()
    if not (SHARED / "spider").is_dir():
        sys.exit(f"mirror not found at {SHARED} (set SQLTRADEOFF_SHARED_DATA)")
    if not (GGUF_DIR / QWEN).is_file():
        sys.exit(f"{QWEN} not found in {GGUF_DIR} (set SQLTRADEOFF_GGUF_DIR)")
    out = args.out.resolve()
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["data"].update(source="mirror", mirror_dir=str(SHARED.resolve()))
    params["model"].update(path=str((GGUF_DIR / QWEN).resolve()), cache_dir=str(args.model_cache.resolve()))
    pfile = out / "params.yaml"
    pfile.write_text(yaml.safe_dump(params, sort_keys=False))
    stem = QWEN[: -len(".gguf")]
    cache_warm = args.model_cache.is_dir() and any(p.is_dir() and p.name.startswith(stem + "-")
                                                   for p in args.model_cache.iterdir())

    py = sys.executable
    st = REPO / "stages"
    jobs = [
        ("download spider", [py, str(st / "download.py"), "spider", "--out", str(out / "raw/spider"), "--params", str(pfile)], args.repeat),
        ("download mmlu", [py, str(st / "download.py"), "mmlu", "--out", str(out / "raw/mmlu"), "--params", str(pfile)], args.repeat),
        ("prepare", [py, str(st / "prepare.py"), "--spider", str(out / "raw/spider"), "--mmlu", str(out / "raw/mmlu"),
                     "--out", str(out / "prepared"), "--params", str(pfile)], args.repeat),
        ("format (Qwen GGUF tokenizer)", [py, str(st / "format.py"), "--prepared", str(out / "prepared"),
                                          "--db-dir", str(out / "raw/spider/database"), "--out", str(out / "formatted"),
                                          "--params", str(pfile)], 1),
    ]
    rows = []
    for name, cmd, n in jobs:
        print(f"running {name} x{n}", file=sys.stderr)
        t = timed(cmd, n)
        rows.append((name, n, statistics.median(t), min(t)))
    print(f"\nData stages on the mirror ({platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; "
          f"model cache {'warm' if cache_warm else 'cold: includes the one-time GGUF conversion'}).\n")
    print("| stage | runs | median s | min s |\n| --- | ---: | ---: | ---: |")
    for name, n, med, mn in rows:
        print(f"| {name} | {n} | {med:.2f} | {mn:.2f} |")
    print(f"\nCommand: `.venv/bin/python benchmarks/bench_data.py --repeat {args.repeat}` "
          f"(outputs under {out.relative_to(REPO) if out.is_relative_to(REPO) else out})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
