"""`bench_gpu.py run` (GPU machine): the peak phase, the random-weight model, then the training
and inference phases; results.json and tables.md in --out."""
from __future__ import annotations

import contextlib
import shutil
import statistics
import time
from pathlib import Path

from .common import MISTRAL_7B_V02, TINY, Log, build_random_model, env_info, load_bench, n_params, save_results
from .infer import phase_infer
from .tables import render_report
from .train import TRAIN_VARIANTS, phase_train, train_in_subprocesses


def measure_peak(torch, log) -> dict:
    """bf16 matmul rate (8192^3, random inputs, 3 rotating input sets, median of CUDA-event timings)
    and device-to-device copy bandwidth (read + write bytes)."""
    res = {}
    for (m, k, n) in [(8192, 8192, 8192), (2048, 4096, 14336)]:
        sets = [(torch.randn(m, k, device="cuda", dtype=torch.bfloat16),
                 torch.randn(k, n, device="cuda", dtype=torch.bfloat16)) for _ in range(3)]
        out = torch.empty(m, n, device="cuda", dtype=torch.bfloat16)
        for j in range(10):
            torch.matmul(*sets[j % 3], out=out)
        times = []
        for j in range(60):
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a_, b_ = sets[j % 3]
            s.record()
            torch.matmul(a_, b_, out=out)
            e.record()
            times.append((s, e))
        torch.cuda.synchronize()
        ms = statistics.median(s.elapsed_time(e) for s, e in times)
        # correctness of what we time: compare a slice with an fp32 product
        a_, b_ = sets[0]
        torch.matmul(a_, b_, out=out)
        ref = a_[:64].float() @ b_.float()
        rel = float((out[:64].float() - ref).norm() / ref.norm())
        key = f"bf16_matmul_{m}x{k}x{n}_tflops"
        res[key] = round(2 * m * k * n / (ms / 1e3) / 1e12, 1)
        res[key.replace("tflops", "rel_err")] = rel
        log(f"peak: {m}x{k}x{n} bf16 matmul {ms:.3f} ms -> {res[key]} TFLOP/s (rel err vs fp32 {rel:.1e})")
        del sets, out
    x = torch.randn(1 << 28, device="cuda", dtype=torch.float32)   # 1 GiB
    y = torch.empty_like(x)
    for _ in range(3):
        y.copy_(x)
    times = []
    for _ in range(20):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        y.copy_(x)
        e.record()
        times.append((s, e))
    torch.cuda.synchronize()
    ms = statistics.median(s.elapsed_time(e) for s, e in times)
    assert torch.equal(x[:1000], y[:1000])
    res["copy_tb_s"] = round(2 * x.numel() * 4 / (ms / 1e3) / 1e12, 2)
    log(f"peak: device copy 1 GiB {ms:.3f} ms -> {res['copy_tb_s']} TB/s (read+write)")
    del x, y
    torch.cuda.empty_cache()
    return res


def cpu_shims(torch):
    """--tiny on a CPU machine: make the CUDA timing/memory calls no-ops (script check only)."""
    class _Ev:
        def __init__(self, **k):
            self.t = 0.0

        def record(self):
            self.t = time.perf_counter()

        def elapsed_time(self, other):
            return (other.t - self.t) * 1e3

    for name in ("synchronize", "reset_peak_memory_stats", "empty_cache"):
        setattr(torch.cuda, name, lambda *a, **k: None)
    for name in ("max_memory_allocated", "max_memory_reserved", "memory_allocated"):
        setattr(torch.cuda, name, lambda *a, **k: 0)
    torch.cuda.Event = _Ev
    torch.cuda.get_device_name = lambda *a: "cpu"

    class _Props:
        multi_processor_count = 0
        total_memory = 0

    torch.cuda.get_device_properties = lambda *a: _Props()


def cmd_run(a):
    import torch

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    log = Log(out / "bench_log.txt")
    if not torch.cuda.is_available():
        if not a.tiny:
            raise SystemExit("no CUDA GPU: `run` is for the GPU machine (prepare runs on CPU; "
                             "--tiny runs a 2-layer model on CPU to check the script)")
        cpu_shims(torch)
    results = {"env": env_info(log), "args": vars(a)}
    bench = load_bench(a)
    results["lengths"] = bench["lengths"]
    phases = a.phases.split(",")
    arch = TINY if a.tiny else MISTRAL_7B_V02
    P = n_params(arch)
    results["params"] = P
    peak = None
    if "peak" in phases:
        results["peak"] = measure_peak(torch, log)
        peak = max(v for k, v in results["peak"].items() if k.endswith("_tflops"))   # the higher rate measured
    peak = peak or a.peak_tflops
    results["peak_tflops_used"] = peak
    save_results(a, results)
    model_dir = Path(a.model_dir)
    with contextlib.suppress(OSError):
        model_dir.parent.mkdir(parents=True, exist_ok=True)
        if not (model_dir / "BENCH_RANDOM_MISTRAL.json").is_file() and shutil.disk_usage(model_dir.parent).free < 20e9:
            log(f"model: {model_dir.parent} has under 20 GB free; using {a.work}/model instead")
            model_dir = Path(a.work) / "model"
    results["model_build_s"] = round(build_random_model(model_dir, Path(a.prep) / "mistral-tokenizer", log, arch), 1)
    model_cfg = {"path": str(model_dir), "revision": "main", "load_in_4bit": torch.cuda.is_available(),
                 "cache_dir": str(Path(a.work) / "models")}
    if "train" in phases:
        names = a.variants.split(",") if a.variants else [v[0] for v in TRAIN_VARIANTS]
        variants = [v for v in TRAIN_VARIANTS if v[0] in names]
        if a.in_process or len(variants) == 1:
            phase_train(a, bench, model_cfg, P, peak, log, results, variants)
        else:
            train_in_subprocesses(a, model_dir, peak, log, results, variants)
    save_results(a, results)
    if "generate" in phases or "mmlu" in phases or "generate_bf16" in phases:
        phase_infer(a, bench, model_cfg, P, log, results, phases)
    save_results(a, results)
    report = render_report(results)
    (out / "tables.md").write_text(report)
    print("\n" + report)
