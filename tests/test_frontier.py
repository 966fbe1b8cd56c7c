"""Adapter-scale points: W + s·ΔW on the tiny Llama, and the DVC `matrix` stages over the scales."""
from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sqltradeoff.errors import UserError  # noqa: E402
from sqltradeoff.modeling import apply_adapter, load_model  # noqa: E402

TEXTS = ["SELECT count(*) FROM singer WHERE age > 20;", "How many singers do we have?"]


@pytest.fixture(scope="module")
def adapter(tiny_model_cfg, tmp_path_factory) -> Path:
    """A LoRA adapter with non-zero B (so ΔW != 0) on q/v/gate projections of the tiny Llama."""
    from peft import LoraConfig, get_peft_model

    base, _ = load_model(tiny_model_cfg, for_training=True)
    torch.manual_seed(5)
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "gate_proj"],
                                            init_lora_weights=False, task_type="CAUSAL_LM"))
    out = tmp_path_factory.mktemp("adapter") / "adapter"
    model.save_pretrained(out)
    return out


def _logits(model, tok) -> torch.Tensor:
    enc = tok(TEXTS, return_tensors="pt", padding=True)
    with torch.no_grad():
        return model(**enc).logits


def test_scale_zero_is_the_base_model_and_scale_one_the_adapter(tiny_model_cfg, adapter):
    base, tok = load_model(tiny_model_cfg)
    full, _ = load_model(tiny_model_cfg, adapter=adapter)                     # the existing path
    zero, _ = load_model(tiny_model_cfg, adapter=adapter, adapter_scale=0.0)
    one, _ = load_model(tiny_model_cfg, adapter=adapter, adapter_scale=1.0)
    half, _ = load_model(tiny_model_cfg, adapter=adapter, adapter_scale=0.5)
    lb, lf, l0, l1, lh = (_logits(m, tok) for m in (base, full, zero, one, half))
    assert torch.equal(l0, lb)                     # exactly, in fp32
    assert torch.equal(l1, lf)
    assert not torch.allclose(lf, lb, atol=1e-4)   # the adapter does change the model
    assert not torch.allclose(lh, lb, atol=1e-5) and not torch.allclose(lh, lf, atol=1e-5)


def test_merged_weights_are_base_plus_scaled_delta(tiny_model_cfg, adapter):
    base, _ = load_model(tiny_model_cfg)
    full, _ = load_model(tiny_model_cfg, adapter=adapter)
    q, _ = load_model(tiny_model_cfg, adapter=adapter, adapter_scale=0.25)
    name = "model.layers.0.self_attn.q_proj.weight"
    w0, w1, wq = (dict(m.named_parameters())[name].detach() for m in (base, full, q))
    assert not torch.equal(w1, w0)
    torch.testing.assert_close(wq, w0 + 0.25 * (w1 - w0), rtol=0, atol=1e-6)
    # an untouched projection stays the base weight exactly
    k = "model.layers.0.self_attn.k_proj.weight"
    assert torch.equal(dict(q.named_parameters())[k], dict(base.named_parameters())[k])


def test_unmerged_scale_is_kept_for_the_model_lifetime(tiny_model_cfg, adapter):
    """The 4-bit path keeps the adapter unmerged; its scaling is multiplied once, for good."""
    from peft import PeftModel
    from peft.helpers import rescale_adapter_scale

    base, tok = load_model(tiny_model_cfg)
    zero = apply_adapter(load_model(tiny_model_cfg)[0], adapter, merge=False, scale=0.0).eval()
    assert isinstance(zero, PeftModel)
    assert torch.equal(_logits(zero, tok), _logits(base, tok))
    half = apply_adapter(load_model(tiny_model_cfg)[0], adapter, merge=False, scale=0.5).eval()
    ref = PeftModel.from_pretrained(load_model(tiny_model_cfg)[0], str(adapter)).eval()
    with rescale_adapter_scale(ref, 0.5):
        expected = _logits(ref, tok)
    assert torch.equal(_logits(half, tok), expected)
    assert torch.equal(_logits(half, tok), expected)     # still scaled on a second call
    merged_half, _ = load_model(tiny_model_cfg, adapter=adapter, adapter_scale=0.5)
    torch.testing.assert_close(_logits(merged_half, tok), expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("scale", [-0.5, float("nan"), float("inf"), "0.5", True])
def test_bad_scale_is_a_user_error(tiny_model_cfg, adapter, scale):
    with pytest.raises(UserError, match="adapter scale"):
        load_model(tiny_model_cfg, adapter=adapter, adapter_scale=scale)


def test_scale_needs_an_adapter_and_inference(tiny_model_cfg, adapter):
    with pytest.raises(UserError, match="--adapter"):
        load_model(tiny_model_cfg, adapter_scale=0.5)
    with pytest.raises(UserError, match="inference"):
        load_model(tiny_model_cfg, adapter=adapter, for_training=True, adapter_scale=0.5)


# --------------------------------------------------------------------------------------------
# dvc.yaml: the scaled stages expand from params over runs x adapter_scales

def _dvc_project(tmp_path: Path, runs: dict, scales) -> Path:
    proj = tmp_path / "proj"
    proj.mkdir()
    shutil.copy2(REPO / "dvc.yaml", proj / "dvc.yaml")
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["runs"] = runs
    params["adapter_scales"] = scales
    (proj / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    subprocess.run(["git", "init", "-q"], cwd=proj, check=True)
    subprocess.run([str(Path(sys.executable).parent / "dvc"), "init", "-q"], cwd=proj, check=True, env=env)
    return proj


def _stage_list(proj: Path) -> dict[str, str]:
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    out = subprocess.run([str(Path(sys.executable).parent / "dvc"), "stage", "list"], cwd=proj, env=env,
                         capture_output=True, text=True, check=True).stdout
    return {line.split()[0]: line for line in out.splitlines() if line.strip()}


def _stage_cmds(proj: Path) -> dict[str, dict]:
    """Stage name -> resolved definition, from DVC's own parser."""
    from dvc.repo import Repo

    with Repo(str(proj)) as repo:
        return {s.name: {"cmd": s.cmd, "outs": [str(o.def_path) for o in s.outs],
                               "deps": [str(d.def_path) for d in s.deps]}
                for s in repo.index.stages}


def test_matrix_expands_to_one_stage_per_run_and_scale(tmp_path):
    proj = _dvc_project(tmp_path, {"run1": {"learning_rate": 2e-4}, "run2": {"learning_rate": 5e-5}},
                        [0.25, 0.50, 0.75])
    stages = _stage_list(proj)
    want = {f"{kind}@{run}-{s}" for kind in ("predict_scaled", "score_scaled", "mmlu_scaled")
            for run in ("run1", "run2") for s in ("0.25", "0.5", "0.75")}
    assert want <= set(stages), sorted(stages)
    assert len([s for s in stages if "_scaled@" in s]) == 18
    assert "data/predictions/run2@0.75.jsonl" in stages["predict_scaled@run2-0.75"]
    d = _stage_cmds(proj)
    p = d["predict_scaled@run1-0.5"]
    assert "--adapter models/run1/adapter --adapter-scale 0.5" in p["cmd"]
    assert p["outs"] == ["data/predictions/run1@0.5.jsonl"] and "models/run1/adapter" in p["deps"]
    s = d["score_scaled@run1-0.5"]
    assert "data/predictions/run1@0.5.jsonl" in s["deps"] and "data/scores/run1@0.5.jsonl" in s["outs"]
    m = d["mmlu_scaled@run2-0.25"]
    assert "--name run2@0.25" in m["cmd"] and "--adapter-scale 0.25" in m["cmd"]
    assert "data/mmlu/run2@0.25.jsonl" in m["outs"] and "metrics/mmlu/run2@0.25.json" in m["outs"]
    # scale 1 is the run itself: the existing stages, not duplicated
    assert {"predict@run1", "score@run1", "mmlu@run1"} <= set(stages)
    assert not any(name.endswith("-1.0") or name.endswith("-1") for name in stages)


def test_no_scales_gives_no_scaled_stages(tmp_path):
    proj = _dvc_project(tmp_path, {"run1": {}}, [])
    stages = _stage_list(proj)
    assert not [s for s in stages if "_scaled" in s]
    assert {"predict@run1", "mmlu@run1", "report"} <= set(stages)


# --------------------------------------------------------------------------------------------
# scripts/sweep.py collects the scale points of `dvc exp` experiments; `dvc plots` draws the curves

FAKE_REPORT = '''
import json, yaml
p = yaml.safe_load(open("params.yaml"))
lr = p["runs"]["run1"]["learning_rate"] * 1e4           # gain and forgetting grow with the learning rate

def point(f):
    return {"ex_gain_pp": 10 * f * lr, "mmlu_change_pp": -f * lr, "ex_gain_ci_low_pp": 10 * f * lr - 1,
            "ex_gain_ci_high_pp": 10 * f * lr + 1, "mmlu_change_ci_low_pp": -f * lr - 1,
            "mmlu_change_ci_high_pp": -f * lr + 1}

run = {**point(1.0), "scales": {str(float(s)): {"scale": s, **point(s)} for s in p["adapter_scales"]}}
json.dump({"runs": {"run1": run}}, open("metrics/summary.json", "w"))
'''


def _run(cmd, cwd, **kw):
    env = {**os.environ, "DVC_NO_ANALYTICS": "1",
           "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", "")}
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, check=True, **kw)


def test_sweep_collects_scale_points_and_plots_template_draws_curves(tmp_path):
    proj = tmp_path / "sweep_proj"
    (proj / "scripts").mkdir(parents=True)
    (proj / "metrics/plots").mkdir(parents=True)
    shutil.copy2(REPO / "scripts/sweep.py", proj / "scripts/sweep.py")
    (proj / "fake_report.py").write_text(FAKE_REPORT)
    (proj / "params.yaml").write_text(yaml.safe_dump({"runs": {"run1": {"learning_rate": 2e-4}},
                                                      "adapter_scales": [0.5]}))
    plots = yaml.safe_load((REPO / "dvc.yaml").read_text())["plots"]
    trade = next(p for p in plots if "metrics/plots/tradeoff.json" in p)
    (proj / "dvc.yaml").write_text(yaml.safe_dump({
        "stages": {"report": {"cmd": "python fake_report.py", "deps": ["fake_report.py"],
                              "params": ["runs", "adapter_scales"],
                              "metrics": [{"metrics/summary.json": {"cache": False}}]}},
        "plots": [trade]}))
    (proj / "metrics/plots/tradeoff.json").write_text(json.dumps([
        {"run": "run1", "scale": s, "mmlu_change_pp": -s, "ex_gain_pp": 10 * s, "mmlu_ci_low_pp": -s - 1,
         "mmlu_ci_high_pp": -s + 1, "ex_ci_low_pp": 10 * s - 1, "ex_ci_high_pp": 10 * s + 1}
        for s in (0.0, 0.5, 1.0)]))
    _run(["git", "init", "-q"], proj)
    _run(["dvc", "init", "-q"], proj)
    shutil.copytree(REPO / ".dvc/plots", proj / ".dvc/plots")
    _run(["dvc", "repro", "-q"], proj)
    _run(["git", "add", "-A"], proj)
    _run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init"], proj)
    for lr in ("1e-4", "3e-4"):
        _run(["dvc", "exp", "run", "-q", "-S", f"runs.run1.learning_rate={lr}"], proj)
    out = _run([sys.executable, "scripts/sweep.py", "runs.run1.learning_rate", "1e-4", "3e-4", "--collect-only"], proj)
    rows = list(csv.DictReader((proj / "sweep/frontier.csv").open()))
    assert [(r["runs.run1.learning_rate"], r["scale"]) for r in rows] == [
        ("0.0001", "0.5"), ("0.0001", "1.0"), ("0.0003", "0.5"), ("0.0003", "1.0")], out.stdout
    assert [float(r["ex_gain_pp"]) for r in rows] == pytest.approx([5.0, 10.0, 15.0, 30.0])
    assert float(rows[2]["mmlu_ci_low_pp"]) == pytest.approx(-2.5)
    assert (proj / "sweep/frontier.png").stat().st_size > 10_000

    shown = json.loads(_run(["dvc", "plots", "show", "--json"], proj).stdout)
    spec = shown["data"]["metrics/plots/tradeoff.json"][0]["content"]
    assert spec["encoding"]["color"]["field"] == "run" and spec["encoding"]["x"]["field"] == "mmlu_change_pp"
    marks = [layer["mark"]["type"] for layer in spec["layer"]]
    assert marks[:3] == ["line", "rule", "rule"]
    assert spec["layer"][0]["encoding"]["order"]["field"] == "scale"
    assert len(spec["data"]["values"]) == 3


def test_run_label_is_short_for_the_legend():
    from sqltradeoff.report.markdown import SEVEN, run_label
    assert run_label({"learning_rate": 2e-4}) == "lr 0.0002"
    assert run_label({"target_modules": list(SEVEN), "learning_rate": 1e-4}) == "7 proj., lr 0.0001"
    assert run_label({"target_modules": ["q_proj", "v_proj"], "epochs": 3}) == "q/v, 3 epochs"
    assert run_label({"lora_r": 32, "lora_alpha": 64}) == "r 32, alpha 64"
    assert run_label({}) == "train defaults"


def test_train_loss_smoothing_is_a_trailing_mean():
    from sqltradeoff.report.plots import _smooth
    assert _smooth([1.0, 3.0, 5.0, 7.0], 2) == [1.0, 2.0, 4.0, 6.0]
    assert _smooth([2.0, 4.0], 1) == [2.0, 4.0]
