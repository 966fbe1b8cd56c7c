#!/usr/bin/env python
"""GPU throughput of the study's stages, before vs after, through the project's own stage scripts.

Each measured configuration runs `stages/train.py`, `stages/predict.py` or `stages/mmlu.py` in its
own process, on the same inputs, with a params file that differs only in the variant's settings
(`--variant STAGE:NAME=JSON`, merged into the base params), so "before" and "after" are the
project's own code paths side by side in one run of this script on one card.

Models are random-weight copies of real architectures (cost does not depend on the weight
values; with random weights no answer stops early, so every prompt generates exactly
`predict.max_new_tokens` tokens under every variant): `qwen2.5-0.5b` (the config and tokenizer of
Qwen2.5-Coder-0.5B-Instruct) and `mistral-7b` (Mistral-7B-Instruct-v0.2's shape). `--model-dir`
takes a real model directory instead.

  assets (CPU, once): copy config + tokenizer of the converted GGUF model to --assets
      python benchmarks/bench_throughput.py assets --from .cache/models/qwen2.5-coder-... --out .gpu/assets/qwen2.5-0.5b
  run (GPU):
      python3 benchmarks/bench_throughput.py run --arch qwen2.5-0.5b --assets .gpu/assets/qwen2.5-0.5b \\
          --params docs/results/qwen2.5-coder-0.5b-gpu/params.yaml --formatted data/formatted \\
          --prepared data/prepared --stages predict,mmlu,train --out $OUT/throughput.json
  steady (anywhere): the training rows' rate after a warm-up (a compile or the first steps), from the
  trainer's per-step log lines that `run` leaves in its output (stdout of stages/train.py):
      python3 benchmarks/bench_throughput.py run ... --stages train ... > train.log 2>&1
      python benchmarks/bench_throughput.py steady --log train.log --rows $OUT/throughput.json --skip 100 --out steady.json
  merge (anywhere): add rows to benchmarks/results/gpu_throughput.json and print markdown tables
      python benchmarks/bench_throughput.py merge $OUT/throughput.json

Rows (one per measured configuration): stage (train | predict | mmlu | run), model, variant
(before | after | another name), tokens_per_s or seconds, card, date, command, and details.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.record import card  # noqa: E402

RESULTS = REPO / "benchmarks" / "results" / "gpu_throughput.json"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja",
                   "generation_config.json", "config.json", "vocab.json", "merges.txt", "added_tokens.json")
MISTRAL_7B_V02 = dict(
    architectures=["MistralForCausalLM"], model_type="mistral", hidden_size=4096, intermediate_size=14336,
    num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8, head_dim=128, vocab_size=32000,
    max_position_embeddings=32768, rope_theta=1e6, sliding_window=None, rms_norm_eps=1e-5, hidden_act="silu",
    tie_word_embeddings=False, bos_token_id=1, eos_token_id=2, initializer_range=0.02)

# The padded batches of the CUDA-graph variants (static shapes need few lengths)
PADDED = {"padding_free": False, "attention": "eager", "pad_to_multiple_of": 64}
# Default variants: "before" = the reference paths (what the issue measured), "after" = the fast ones.
DEFAULT_VARIANTS = {
    "predict": {"before": {"predict": {"backend": "reference"}}, "prefix": {"predict": {"backend": "prefix"}},
                "static": {"predict": {"backend": "static"}},
                "after": {"predict": {"backend": "graphs"}},
                "after_liger": {"predict": {"backend": "graphs", "use_liger_kernel": True}},
                "continuous": {"predict": {"backend": "continuous"}},
                "continuous_graphs": {"predict": {"backend": "continuous", "cuda_graphs": True}}},
    "mmlu": {"before": {"mmlu": {"scoring": "reference", "batch_size": 8}},
             "after": {"mmlu": {"scoring": "batched", "batch_size": 512, "batch_tokens": 262144}}},
    "train": {"before": {"train": {"gradient_checkpointing": True, "use_liger_kernel": False}},
              "after": {"train": {"gradient_checkpointing": False, "use_liger_kernel": True}},
              "compile": {"train": {"gradient_checkpointing": False, "torch_compile": True}},
              # regional + liger failed in dynamo on an H100 (seventh lease) and is refused by the train stage
              "regional": {"train": {"gradient_checkpointing": False, "torch_compile": "regional"}},
              # padded batches (bucketed to multiples of 64 tokens; eager attention: sdpa with the extra padding
              # gave NaN gradients on real weights) and CUDA graphs of the compiled blocks; regional_padded
              # isolates the padding (the same batches, no graphs)
              "regional_padded": {"train": {"gradient_checkpointing": False, "torch_compile": "regional", **PADDED}},
              "regional_graphs": {"train": {"gradient_checkpointing": False, "torch_compile": "regional_graphs",
                                            **PADDED}},
              # the same with torch's AdamW (isolates bitsandbytes' paged 8-bit optimizer; another optimisation)
              "regional_graphs_adamw": {"train": {"gradient_checkpointing": False, "torch_compile": "regional_graphs",
                                                  **PADDED, "optim_cuda": "adamw_torch"}}},
}


def deep_merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def cmd_assets(a) -> int:
    src, dest = Path(a.src), Path(a.out)
    dest.mkdir(parents=True, exist_ok=True)
    for name in TOKENIZER_FILES:
        if (src / name).is_file():
            shutil.copy(src / name, dest / name)
    print(f"assets -> {dest}: {sorted(p.name for p in dest.iterdir())}")
    return 0


def build_random_model(arch: str, assets: Path | None, dest: Path) -> dict:
    """A random-weight bf16 model directory of the architecture, with the real tokenizer."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    marker = dest / "RANDOM_WEIGHTS.json"
    if marker.is_file():
        return json.loads(marker.read_text())
    t0 = time.time()
    shutil.rmtree(dest, ignore_errors=True)
    if arch == "mistral-7b":
        from transformers import MistralConfig
        shape = {k: v for k, v in MISTRAL_7B_V02.items() if k not in ("architectures", "model_type")}
        if assets is not None:
            # the prompts are tokenised with the assets' tokenizer (Qwen's: ids up to 151,935), so the
            # vocabulary (embedding, lm_head) and special ids are the tokenizer's; the layers are Mistral-7B's
            qcfg = AutoConfig.from_pretrained(assets)
            shape.update(vocab_size=qcfg.vocab_size, bos_token_id=qcfg.bos_token_id, eos_token_id=qcfg.eos_token_id)
        cfg = MistralConfig(**shape)
    else:
        cfg = AutoConfig.from_pretrained(assets)
    cfg.torch_dtype = torch.bfloat16
    torch.manual_seed(0)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        model = AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16)
    n = sum(p.numel() for p in model.parameters())
    model.save_pretrained(dest, max_shard_size="4GB")
    if assets is not None:
        for name in TOKENIZER_FILES:
            if name != "config.json" and (assets / name).is_file():
                shutil.copy(assets / name, dest / name)
    del model
    info = {"arch": arch, "parameters": n, "vocab_size": cfg.vocab_size, "seconds_to_build": round(time.time() - t0, 1)}
    marker.write_text(json.dumps(info))
    return info


def stage_command(stage: str, variant: str, params: Path, a, work: Path) -> tuple[list[str], dict]:
    py = sys.executable
    if stage == "predict":
        out = work / f"pred_{variant}.jsonl"
        cmd = [py, "stages/predict.py", "--params", str(params), "--job",
               str(Path(a.formatted) / "eval_zeroshot.jsonl"), str(out), "--stats-dir", str(work / f"stats_{variant}")]
        if a.limit:
            cmd += ["--limit", str(a.limit)]
        return cmd, {"predictions": out, "stats": work / f"stats_{variant}" / f"pred_{variant}.json"}
    if stage == "mmlu":
        rows, metrics = work / f"mmlu_{variant}.jsonl", work / f"mmlu_{variant}.json"
        cmd = [py, "stages/mmlu.py", "--params", str(params), "--name", variant, "--no-progress",
               "--test", str(Path(a.prepared) / "mmlu_test.jsonl"), "--dev", str(Path(a.prepared) / "mmlu_dev.jsonl"),
               "--out-rows", str(rows), "--out-metrics", str(metrics)]
        return cmd, {"rows": rows, "metrics": metrics}
    if stage == "train":
        out, mdir = work / f"model_{variant}", work / f"train_{variant}"
        cmd = [py, "stages/train.py", "--params", str(params), "--run", a.run,
               "--data", str(Path(a.formatted) / "train.jsonl"), "--out", str(out), "--metrics-dir", str(mdir)]
        if a.train_no_live:
            cmd.append("--no-live")
        return cmd, {"metrics": mdir / "metrics.json"}
    raise SystemExit(f"unknown stage {stage}")


def read_result(stage: str, files: dict, wall: float) -> dict:
    res: dict = {"wall_s": round(wall, 2)}
    if stage == "predict":
        st = json.loads(files["stats"].read_text())
        res.update(tokens_per_s=st.get("tokens_per_s"), seconds=st.get("wall_time_s"),
                   details={k: st.get(k) for k in st if k not in ("input", "output")})
    elif stage == "mmlu":
        m = json.loads(files["metrics"].read_text())
        res.update(seconds=m.get("seconds"), details={"n": m.get("n"), "accuracy": m.get("accuracy"),
                                                      "debiased_accuracy": (m.get("debiased") or {}).get("accuracy"),
                                                      **{k: m[k] for k in ("scoring", "subjects") if k in m}})
    elif stage == "train":
        m = json.loads(files["metrics"].read_text())
        res.update(tokens_per_s=m.get("tokens_per_s"), seconds=m.get("wall_time_s"),
                   details={k: m.get(k) for k in ("steps", "seconds_per_step", "tokens_seen", "final_loss")
                            + (("cudagraph_skips",) if "cudagraph_skips" in m else ())})
    return res


def same_outputs(stage: str, files_by_variant: dict) -> dict:
    """Agreement of each variant's outputs with the first (the reference)."""
    names = list(files_by_variant)
    if stage not in ("predict", "mmlu") or len(names) < 2:
        return {}
    key = "predictions" if stage == "predict" else "rows"
    field = "raw_output" if stage == "predict" else "pred"

    def load(p):
        return [json.loads(line) for line in Path(p).read_text().splitlines() if line.strip()]

    ref = load(files_by_variant[names[0]][key])
    out = {}
    for n in names[1:]:
        rows = load(files_by_variant[n][key])
        out[n] = {"equal": sum(1 for x, y in zip(ref, rows) if x.get(field) == y.get(field)), "of": len(ref)}
    return out


def cmd_run(a) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("DEEPEVAL_TELEMETRY_OPT_OUT", "YES")
    base = yaml.safe_load(Path(a.params).read_text())
    work = Path(a.work) / a.arch
    work.mkdir(parents=True, exist_ok=True)
    if a.model_dir:
        model_dir, model_info = Path(a.model_dir), {"arch": a.arch, "weights": "real"}
    else:
        model_dir = work / "model"
        model_info = build_random_model(a.arch, Path(a.assets) if a.assets else None, model_dir)
        model_info["weights"] = "random"
    print(f"[bench] model {model_info}", file=sys.stderr, flush=True)
    arch_over = {"model": {"path": str(model_dir.resolve()), "load_in_4bit": a.arch == "mistral-7b"}}
    if a.override:
        arch_over = deep_merge(arch_over, json.loads(a.override))
    variants = copy.deepcopy(DEFAULT_VARIANTS)
    for spec in a.variant or []:
        head, _, js = spec.partition("=")
        stage, _, name = head.partition(":")
        variants.setdefault(stage, {})[name] = json.loads(js)
    if a.only_variants:
        keep = set(a.only_variants.split(","))
        variants = {s: {n: v for n, v in vs.items() if n in keep} for s, vs in variants.items()}
    rows = []
    date = datetime.now(timezone.utc).isoformat(timespec="seconds")
    this_cmd = a.command
    for stage in a.stages.split(","):
        files_by_variant = {}
        for name, over in variants[stage].items():
            params = work / f"params_{stage}_{name}.yaml"
            params.write_text(yaml.safe_dump(deep_merge(deep_merge(base, arch_over), over), sort_keys=False))
            cmd, files = stage_command(stage, f"{stage}_{name}", params, a, work)
            print(f"[bench] {stage}/{name}: {' '.join(cmd)}", file=sys.stderr, flush=True)
            t0 = time.time()
            proc = subprocess.run(cmd, cwd=REPO, stderr=subprocess.PIPE, text=True)
            wall = time.time() - t0
            (work / f"stderr_{stage}_{name}.log").write_text(proc.stderr)   # all of it (a crash's stacks, TORCH_LOGS)
            tail = proc.stderr[-3000:]
            if proc.returncode != 0:
                print(f"[bench] {stage}/{name} FAILED rc={proc.returncode}\n{tail}", file=sys.stderr, flush=True)
                rows.append({"stage": stage, "model": a.arch, "variant": name, "error": tail[-800:], "card": card(),
                             "date": date, "command": this_cmd})
                continue
            files_by_variant[name] = files
            row = {"stage": stage, "model": a.arch, "variant": name, **read_result(stage, files, wall),
                   "settings": over, "weights": model_info.get("weights"), "card": card(), "date": date,
                   "command": this_cmd}
            rows.append(row)
            print(f"[bench] {stage}/{name}: tokens/s={row.get('tokens_per_s')} seconds={row.get('seconds')} "
                  f"wall={row['wall_s']}", file=sys.stderr, flush=True)
            Path(a.out).write_text(json.dumps(rows, indent=1) + "\n")   # after every measurement
        agreement = same_outputs(stage, files_by_variant)
        for r in rows:
            if r["stage"] == stage and r["variant"] in agreement:
                r["agreement_with_reference"] = agreement[r["variant"]]
    Path(a.out).write_text(json.dumps(rows, indent=1) + "\n")
    print(markdown(rows))
    return 0


def after_warmup(row: dict) -> float | None:
    """The rate after a warm-up: a predict row's after its first batch, a train row's `steady` one."""
    st = (row.get("details") or {}).get("steady")
    return st["tokens_per_s"] if row.get("stage") == "train" and st else after_first_batch(row)


def after_first_batch(row: dict) -> float | None:
    """Generated tokens/s after the first batch (the static backend compiles and captures its CUDA
    graph there): only where it is exact from the row, i.e. every output ran to max_new_tokens
    (random weights) so the first batch's tokens are batch_size x max_new_tokens."""
    d = row.get("details") or {}
    need = ("first_batch_s", "generated_tokens", "batches", "batch_size", "max_new_tokens", "prompts")
    if row.get("stage") != "predict" or any(d.get(k) is None for k in need) or d["batches"] < 2:
        return None
    if d.get("hit_max_new_tokens") != d["prompts"] or d.get("backend") == "continuous":
        return None
    rest_s = row["seconds"] - d["first_batch_s"]
    rest_tokens = d["generated_tokens"] - min(d["batch_size"], d["prompts"]) * d["max_new_tokens"]
    return round(rest_tokens / rest_s, 1) if rest_s > 0 else None


def markdown(rows: list[dict]) -> str:
    lines = ["| stage | model | variant | tokens/s | after warm-up | seconds | card | agreement |",
             "|---|---|---|---:|---:|---:|---|---|"]
    for r in rows:
        agr = r.get("agreement_with_reference")
        agreement = f"{agr['equal']}/{agr['of']}" if agr else ""
        value = r.get("tokens_per_s", "")
        steady = after_warmup(r)
        lines.append(f"| {r['stage']} | {r['model']} | {r['variant']} | {value} | {'' if steady is None else steady} | "
                     f"{r.get('seconds', '')} | {r.get('card', '')} | {agreement} |")
    return "\n".join(lines)


def train_log_points(text: str) -> dict[str, list[tuple[int, float]]]:
    """Per training variant of a `run` log: (input tokens seen, seconds since the training started)
    at each logged step, from the trainer's log dicts stages/train.py prints (one per step) after the
    `[bench] train/NAME: <command>` line that starts the variant."""
    import ast

    points: dict[str, list[tuple[int, float]]] = {}
    current = None
    for line in text.splitlines():
        if line.startswith("[bench] train/") and ": " in line:
            name, _, rest = line[len("[bench] train/"):].partition(": ")
            if " " not in name and not rest.startswith("tokens/s=") and "FAILED" not in name:
                current = name
                points[current] = []
        elif current and line.startswith("{") and "'train_runtime'" in line and "'num_input_tokens_seen'" in line:
            d = ast.literal_eval(line.strip())
            if "loss" not in d:   # the summary dict at the end of training, not a step
                continue
            points[current].append((int(d["num_input_tokens_seen"]), float(d["train_runtime"])))
    return points


def steady_rate(points: list[tuple[int, float]], skip: int) -> dict | None:
    """Tokens/s from logged step `skip` to the last one, and the seconds the first `skip` steps took."""
    if len(points) <= skip or skip < 1:
        return None
    (t0, s0), (t1, s1) = points[skip - 1], points[-1]
    if s1 <= s0:
        return None
    return {"from_step": skip, "to_step": len(points), "tokens_per_s": round((t1 - t0) / (s1 - s0), 1),
            "seconds_per_step": round((s1 - s0) / (len(points) - skip), 4), "seconds_first_steps": round(s0, 2)}


def cmd_steady(a) -> int:
    points = train_log_points(Path(a.log).read_text(errors="replace"))
    rows = json.loads(Path(a.rows).read_text())
    this_cmd = a.command
    out = []
    for r in rows:
        if r.get("stage") == "train" and "error" not in r and r["variant"] in points:
            st = steady_rate(points[r["variant"]], a.skip)
            if st is None:
                raise SystemExit(f"{a.log}: train/{r['variant']} has {len(points[r['variant']])} logged steps, "
                                 f"not more than --skip {a.skip}")
            r = {**r, "details": {**(r.get("details") or {}), "steady": st},
                 "command": f"{r['command']} > LOG 2>&1 && {this_cmd}"}
            if a.note:
                r["note"] = a.note
        out.append(r)
    Path(a.out).write_text(json.dumps(out, indent=1) + "\n")
    print(markdown(out))
    return 0


def cmd_merge(a) -> int:
    rows = json.loads(RESULTS.read_text()) if RESULTS.is_file() else []
    for f in a.files:
        for r in json.loads(Path(f).read_text()):
            if "error" in r:   # a configuration that failed has no figure; its error stays in the source file
                print(f"[merge] left out {r['stage']}/{r['variant']} of {f}: it failed", file=sys.stderr)
            else:
                rows.append(r)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(rows, indent=1) + "\n")
    print(markdown(rows))
    return 0


def cmd_timings(a) -> int:
    """`run` rows from the stage timings of a study run through scripts/stage_plan.py: for each
    run, train one epoch + predict the dev set + MMLU (the issue's "one run of the study")."""
    stages = {}
    for line in Path(a.timings).read_text().splitlines():
        if line.strip():
            t = json.loads(line)
            if t.get("rc") == 0:
                stages[t["stage"]] = t
    rows = []
    for run in sorted({n.split("@", 1)[1] for n in stages if n.startswith("train@")}):
        parts = [f"train@{run}", f"predict@{run}", f"mmlu@{run}"]
        if all(p in stages for p in parts):
            rows.append({"stage": "run", "model": a.model, "variant": a.variant, "run": run,
                         "seconds": round(sum(stages[p]["seconds"] for p in parts), 1),
                         "details": {p: stages[p]["seconds"] for p in parts}, "card": a.card,
                         "date": stages[parts[-1]]["finished"],
                         "command": "python3 scripts/stage_plan.py run --plan PLAN " + " ".join(parts)})
    for spec in a.stage_row or []:
        name, _, kind = spec.partition(":")
        if name in stages:
            rows.append({"stage": kind or name.split("@", 1)[0], "model": a.model, "variant": a.variant,
                         "seconds": stages[name]["seconds"], "details": {"timing": name}, "card": a.card,
                         "date": stages[name].get("finished", ""),
                         "command": stages[name].get("cmd") or "(not recorded in the timings; see the study's RUN.md)"})
    for r in rows:
        if a.note:
            r["note"] = a.note
    Path(a.out).write_text(json.dumps(rows, indent=1) + "\n")
    print(markdown(rows))
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("assets")
    s.add_argument("--from", dest="src", required=True)
    s.add_argument("--out", required=True)
    r = sub.add_parser("run")
    r.add_argument("--arch", choices=("qwen2.5-0.5b", "mistral-7b"), required=True)
    r.add_argument("--assets", help="config + tokenizer directory (qwen2.5-0.5b), tokenizer (mistral-7b)")
    r.add_argument("--model-dir", help="a real model directory instead of random weights")
    r.add_argument("--params", required=True, help="base params file")
    r.add_argument("--override", help="JSON merged into the params for every variant")
    r.add_argument("--formatted", default="data/formatted")
    r.add_argument("--prepared", default="data/prepared")
    r.add_argument("--stages", default="predict,mmlu,train")
    r.add_argument("--variant", action="append", help="STAGE:NAME=JSON params overrides (adds or replaces)")
    r.add_argument("--only-variants", help="comma-separated variant names to run")
    r.add_argument("--run", default="run1", help="the run whose train settings are used")
    r.add_argument("--limit", type=int, default=None, help="predict: first N prompts")
    r.add_argument("--train-no-live", action="store_true",
                   help="train without DVCLive's per-step logging (a machine without dvc and dvclive)")
    r.add_argument("--work", default="/tmp/bench_throughput")
    r.add_argument("--out", required=True)
    m = sub.add_parser("merge")
    m.add_argument("files", nargs="+")
    st = sub.add_parser("steady", help="training rows with their rate after --skip logged steps, from a `run` log")
    st.add_argument("--log", required=True, help="what `run --stages train` printed (stdout and stderr)")
    st.add_argument("--rows", required=True, help="the rows that `run` wrote (--out)")
    st.add_argument("--skip", type=int, default=100, help="logged steps counted as warm-up")
    st.add_argument("--note", help="a note stored in each training row (e.g. a second run on the same machine)")
    st.add_argument("--out", required=True)
    t = sub.add_parser("timings", help="`run` rows from a study's stage timings")
    t.add_argument("timings")
    t.add_argument("--model", default="qwen2.5-0.5b")
    t.add_argument("--variant", default="after")
    t.add_argument("--card", required=True)
    t.add_argument("--stage-row", action="append",
                   help="NAME[:STAGE]: also a row for the timed stage NAME (e.g. mmlu_all@base:mmlu)")
    t.add_argument("--note", help="a note stored in every row (e.g. what shared the card)")
    t.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    # what the rows record as their command: this invocation, as typed
    a.command = "python3 benchmarks/bench_throughput.py " + " ".join(
        shlex.quote(x) for x in (argv if argv is not None else sys.argv[1:]))
    return {"assets": cmd_assets, "run": cmd_run, "merge": cmd_merge, "timings": cmd_timings,
            "steady": cmd_steady}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
