#!/usr/bin/env python
"""CPU threads on shared cores: seconds per LoRA training step (forward + backward + AdamW) with
and without a competing busy process, for torch thread counts and OpenMP wait policies.

A random-weight Llama of SmolLM2-135M's shape (30 layers, hidden 576, vocab 49,152), LoRA r=8 on
q/k/v/o, one sequence of --tokens tokens per step, fp32. Each configuration runs in a fresh
process (OMP_WAIT_POLICY is read when libgomp loads); the competitor is `--competitors`
processes each spinning one core in pure Python (like another job on the machine).

    python benchmarks/bench_cpu_threads.py [--steps 3] [--tokens 512]
"""
import argparse
import json
import os
import subprocess
import sys
import time

CHILD = r"""
import json, os, sys, time
sys.path.insert(0, os.getcwd())
if os.environ["BENCH_THREADS"] == "project":   # the project's setting: sqltradeoff.cpu (auto)
    from sqltradeoff.cpu import apply_cpu_threads
    apply_cpu_threads("auto")
    import torch
else:                                            # torch's own: N threads, libgomp's wait policy as given
    import torch
    torch.set_num_threads(int(os.environ["BENCH_THREADS"]))
from peft import LoraConfig, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM
torch.manual_seed(0)
cfg = LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                  num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=2048)
model = get_peft_model(LlamaForCausalLM(cfg), LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]))
opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
ids = torch.randint(0, 49152, (1, int(sys.argv[2])))
times = []
for i in range(int(sys.argv[1]) + 1):
    t = time.perf_counter()
    model(input_ids=ids, labels=ids).loss.backward()
    opt.step(); opt.zero_grad()
    times.append(time.perf_counter() - t)
print(json.dumps({"threads": torch.get_num_threads(), "interop": torch.get_num_interop_threads(),
                  "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"), "step_s": times[1:]}))
"""


def run(threads: str, policy: str | None, competitors: int, steps: int, tokens: int) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY",
                                                             "SQLTRADEOFF_CPU_THREADS")}
    env["BENCH_THREADS"] = threads
    if policy:
        env["OMP_WAIT_POLICY"] = policy
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(competitors)]
    try:
        out = subprocess.run([sys.executable, "-c", CHILD, str(steps), str(tokens)], env=env, check=True,
                             capture_output=True, text=True).stdout
    finally:
        for h in hogs:
            h.kill()
            h.wait()
    res = json.loads(out.strip().splitlines()[-1])
    res.update(setting=threads, competitors=competitors, mean_step_s=round(sum(res["step_s"]) / len(res["step_s"]), 3))
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--tokens", type=int, default=512)
    ap.add_argument("--configs", default="2:,2:PASSIVE,1:,project:",
                    help="comma-separated THREADS:OMP_WAIT_POLICY pairs (empty policy: unset, libgomp's "
                         "default); THREADS `project`: sqltradeoff.cpu.apply_cpu_threads('auto')")
    ap.add_argument("--competitors", default="0,1")
    ap.add_argument("--cpus", default=None,
                    help="run everything (benchmark and competitors) on these CPUs, e.g. 0,1: a 2-core "
                         "machine simulated on a larger one")
    args = ap.parse_args()
    if args.cpus:
        os.sched_setaffinity(0, {int(c) for c in args.cpus.split(",")})
    import platform
    model = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "?")
    print(json.dumps({"processor": model, "machine": platform.machine(), "cpus": sorted(os.sched_getaffinity(0)),
                      "loadavg_before": os.getloadavg()}), flush=True)
    for c in args.competitors.split(","):
        for conf in args.configs.split(","):
            threads, _, policy = conf.partition(":")
            r = run(threads, policy or None, int(c), args.steps, args.tokens)
            r["loadavg"] = os.getloadavg()
            print(json.dumps(r), flush=True)


if __name__ == "__main__":
    t0 = time.time()
    main()
    print(f"# {time.time() - t0:.0f} s", file=sys.stderr)
