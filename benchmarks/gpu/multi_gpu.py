"""`bench_gpu.py multi-gpu` (GPU machine): the train stage, unchanged, on 1 GPU (plain
`python stages/train.py`: it pins itself to GPU 0) and on N GPUs (accelerate launch, data
parallel), on the random-weight Mistral-7B in 4-bit, for each recipe; and `stage-train`, which
runs stages/train.py (with `--no-live` where dvclive is not installed)."""
from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import random
import runpy
import shutil
import subprocess
import sys
import time
from pathlib import Path

from .common import BENCH_GPU, REPO, VARLEN, Log, build_random_model, env_info, load_bench, md_table

TUNED_TRAIN = {"batch_size": 4, "grad_accum": 1, "gradient_checkpointing": True, "padding_free": True,
               "attention": VARLEN, "fp32_upcast": False}     # the tuned QLoRA settings (train params)
STAGE = REPO / "stages" / "train.py"


def cmd_stage_train(argv):
    """stages/train.py with these arguments; where dvclive is not installed (the GPU machine) with
    `--no-live` (no per-step DVCLive logging; metrics.json is still written)."""
    argv = list(argv)
    if importlib.util.find_spec("dvclive") is None and "--no-live" not in argv:
        print("dvclive not installed here: stages/train.py runs with --no-live", file=sys.stderr)
        argv.append("--no-live")
    sys.argv = [str(STAGE), *argv]
    runpy.run_path(str(STAGE), run_name="__main__")


def _recipe_params(params: dict, recipe: str) -> dict:
    import yaml

    rp = yaml.safe_load(yaml.safe_dump(params))
    if recipe == "tuned":
        rp["train"].update(TUNED_TRAIN)
    elif recipe != "ref":
        raise SystemExit(f"unknown recipe {recipe!r} (ref, tuned)")
    return rp


def _launch_command(work: Path, recipe: str, tag: str, n: int) -> list[str]:
    stage = [str(BENCH_GPU), "stage-train", "--run", "run1", "--data",
             str(work / "train.jsonl"), "--out", str(work / f"out_{tag}"), "--metrics-dir",
             str(work / f"metrics_{tag}"), "--params", str(work / f"params_{recipe}.yaml")]
    if n == 1:     # no CUDA_VISIBLE_DEVICES: the stage itself must keep to one GPU
        return [sys.executable, *stage]
    return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(n),
            "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", *stage]


def _run_stage(a, out: Path, work: Path, recipe: str, rp: dict, n: int, env: dict, log) -> dict:
    """One train stage run (1 process or accelerate launch of n); its table row."""
    tag = f"{recipe}_{n}"
    cmd = _launch_command(work, recipe, tag, n)
    log("multi-gpu:", " ".join(cmd))
    t0 = time.time()
    proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=a.variant_timeout)
    wall = time.time() - t0
    (out / f"multi_gpu_{tag}.log").write_text(proc.stdout)
    info = {}
    for line in proc.stdout.splitlines():
        if line.startswith("{") and '"steps"' in line:
            with contextlib.suppress(ValueError):
                info = json.loads(line)
    t = rp["train"]
    row = {"recipe": recipe, "processes": n, "rc": proc.returncode, "command_wall_s": round(wall, 1),
           "examples_per_step": t["batch_size"] * t["grad_accum"] * n,
           "adapter_written": (work / f"out_{tag}" / "adapter" / "adapter_model.safetensors").is_file(),
           **info}
    if proc.returncode != 0:
        row["tail"] = "\n".join(proc.stdout.strip().splitlines()[-8:])
    log("multi-gpu:", json.dumps(row)[:600])
    return row


def _setup(a, log) -> tuple[Path, dict]:
    """The random model, the work folder with 1,024 training examples; params.yaml pointed at both."""
    import yaml

    bench = load_bench(a)
    model_dir = Path(a.model_dir)
    build_random_model(model_dir, Path(a.prep) / "mistral-tokenizer", log)
    work = Path(a.work) / "multi_gpu"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["model"].update({"path": str(model_dir), "load_in_4bit": True, "cache_dir": str(work / "cache")})
    params["train"].update({"max_steps": a.steps, "save_steps": 10 ** 6})
    maxlen = int(params["train"]["max_length"])
    rng = random.Random(0)
    rows = [r for r, n in zip(bench["train"], bench["train_lengths"]) if n <= maxlen]
    (work / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rng.sample(rows, 1024)))
    return work, params


def cmd_multi_gpu(a):
    """Each recipe (ref: params.yaml; tuned: TUNED_TRAIN) on 1 GPU and on all; prints a table."""
    import torch
    import yaml

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    log = Log(out / "multi_gpu_log.txt")
    n_gpu = torch.cuda.device_count()
    results = {"env": env_info(log), "gpus": n_gpu}
    work, params = _setup(a, log)
    env = dict(os.environ, NCCL_NVLS_ENABLE="0", TORCH_SYMM_MEM_DISABLE_MULTICAST="1", NVSHMEM_DISABLE_NVLS="1")
    env.pop("CUDA_VISIBLE_DEVICES", None)
    rows_out = []
    for recipe in a.recipes.split(","):
        rp = _recipe_params(params, recipe)
        (work / f"params_{recipe}.yaml").write_text(yaml.safe_dump(rp))
        for n in [1, n_gpu] if n_gpu > 1 else [1]:
            rows_out.append(_run_stage(a, out, work, recipe, rp, n, env, log))
    results["runs"] = rows_out
    (out / "multi_gpu.json").write_text(json.dumps(results, indent=1))
    table = md_table(["recipe", "processes (GPUs)", "exit", "adapter", "optimizer steps", "examples / step",
                      "train wall s", "tokens/s", "command wall s"],
                     [[r["recipe"], r["processes"], r["rc"], "yes" if r["adapter_written"] else "no",
                       r.get("steps", ""), r["examples_per_step"], r.get("wall_time_s", ""),
                       r.get("tokens_per_s", ""), r["command_wall_s"]] for r in rows_out])
    print("\n" + table)
    (out / "multi_gpu.md").write_text(table + "\n")
