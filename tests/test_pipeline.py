"""The whole DVC pipeline end to end, in a temporary copy of the repository, on a small real model.

It checks what a user relies on: `dvc repro` completes and writes the outputs the report needs,
a second `dvc repro` does nothing, changing one run's learning rate reruns only that run's
stages, experiments run with `-S`, and `dvc push` / `dvc pull` restore the results in a fresh
clone without retraining.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from shared_paths import GGUF_DIR, SHARED, SPIDER, require

REPO = Path(__file__).resolve().parents[1]
SMOL = "smollm2-135m-instruct-q4_1.gguf"


def _find_gguf() -> Path | None:
    for d in (REPO / ".cache" / "offline-models", GGUF_DIR):
        if (d / SMOL).is_file():
            return (d / SMOL).resolve()
    return None


pytestmark = pytest.mark.slow


def _env() -> dict:
    env = dict(os.environ)
    # Stage commands call `python` and `dvc`: make them the interpreter running the tests.
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env.update(HF_HUB_OFFLINE="1", DVC_NO_ANALYTICS="1", DEEPEVAL_TELEMETRY_OPT_OUT="YES",
               DEEPEVAL_DISABLE_DOTENV="1", PYTHONUNBUFFERED="1")
    return env


def run(cmd: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}")
    return proc


def dvc(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    return run([str(Path(sys.executable).parent / "dvc"), *args], cwd=cwd, check=check)


def git(*args: str, cwd: Path) -> str:
    return run(["git", *args], cwd=cwd).stdout


def ran_stages(output: str) -> set[str]:
    """Stage names DVC reports as run in a `dvc repro` output."""
    stages = set()
    for line in output.splitlines():
        line = line.strip()
        if line.startswith("Running stage '"):
            stages.add(line.split("'")[1])
    return stages


def tiny_params(params: dict, gguf: Path, cache_dir: Path) -> dict:
    params["data"]["mirror_dir"] = str(SHARED)
    params["sample"].update(spider_dev_n=6, spider_train_n=24, mmlu_per_subject=2)
    params["prompt"]["few_shot"] = 1
    params["model"].update(path=str(gguf), cache_dir=str(cache_dir))
    params["train"].update(max_steps=2, max_length=384, grad_accum=2, save_steps=1)
    params["predict"].update(batch_size=6, max_new_tokens=32)
    params["mmlu"].update(k_shot=1)
    params["report"]["bootstrap_samples"] = 200
    params["adapter_scales"] = [0.5]      # one adapter-scale point per run (stages *_scaled@<run>-0.5)
    return params


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    require(SPIDER / "dev.json")
    gguf = _find_gguf()
    if gguf is None:
        pytest.skip(f"{SMOL} not found (run scripts/setup.sh or ../shared/tools/get-offline-models)")
    root = tmp_path_factory.mktemp("pipeline")
    proj = root / "project"
    files = git("ls-files", "--cached", "--others", "--exclude-standard", cwd=REPO).splitlines()
    for rel in files:
        src = REPO / rel
        if src.is_file():
            dst = proj / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
    # Model conversions are cached outside the copy so that repeated runs reuse them.
    cache_dir = REPO / ".cache" / "models"
    params = yaml.safe_load((proj / "params.yaml").read_text())
    (proj / "params.yaml").write_text(yaml.safe_dump(tiny_params(params, gguf, cache_dir), sort_keys=False))
    git("init", "-q", cwd=proj)
    git("add", "-A", cwd=proj)
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "copy", cwd=proj)
    return proj


def test_repro_end_to_end(project: Path):
    out = dvc("repro", cwd=project).stdout
    assert "train@run1" in ran_stages(out) and "report" in ran_stages(out)

    # Outputs and their contents.
    dev = [json.loads(l) for l in (project / "data/prepared/spider_dev.jsonl").read_text().splitlines()]
    assert len(dev) == 6 and all(r["db_id"] != "wta_1" for r in dev)
    mmlu = [json.loads(l) for l in (project / "data/prepared/mmlu_test.jsonl").read_text().splitlines()]
    assert len(mmlu) == 6 and {r["subject"] for r in mmlu} == {
        "high_school_computer_science", "philosophy", "high_school_macroeconomics"}
    for name in ("base_zeroshot", "base_fewshot", "run1", "run2"):
        preds = [json.loads(l) for l in (project / f"data/predictions/{name}.jsonl").read_text().splitlines()]
        assert [p["id"] for p in preds] == [d["id"] for d in dev]
        m = json.loads((project / f"metrics/spider/{name}.json").read_text())
        assert m["n"] == 6 and 0.0 <= m["execution_accuracy"] <= 1.0
    for name in ("base", "run1", "run2"):
        m = json.loads((project / f"metrics/mmlu/{name}.json").read_text())
        assert m["n"] == 6 and 0.0 <= m["accuracy"] <= 1.0
    for run_name in ("run1", "run2"):
        assert (project / f"models/{run_name}/adapter/adapter_config.json").is_file()
    # the adapter-scale points: predictions, scores and MMLU of each run at scale 0.5
    assert {f"{k}_scaled@{r}-0.5" for k in ("predict", "score", "mmlu") for r in ("run1", "run2")} <= ran_stages(out)
    for name in ("run1@0.5", "run2@0.5"):
        preds = [json.loads(l) for l in (project / f"data/predictions/{name}.jsonl").read_text().splitlines()]
        assert [p["id"] for p in preds] == [d["id"] for d in dev]
        assert json.loads((project / f"metrics/spider/{name}.json").read_text())["n"] == 6
        assert json.loads((project / f"metrics/mmlu/{name}.json").read_text())["n"] == 6
    summary = json.loads((project / "metrics/summary.json").read_text())
    assert summary  # the report's own tests check its numbers
    assert summary["runs"]["run1"]["scales"]["0.5"]["n"] == 6 and "ex_mde_pp" in summary["runs"]["run2"]
    assert (project / "metrics/report.md").read_text().strip()

    shown = dvc("metrics", "show", "--json", cwd=project).stdout
    for key in ("metrics/spider/run1.json", "metrics/mmlu/run2.json", "metrics/summary.json"):
        assert key in shown

    # Nothing changed: nothing runs.
    again = dvc("repro", cwd=project).stdout
    assert ran_stages(again) == set(), again

    git("add", "-A", cwd=project)
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "results", cwd=project)


def test_changing_one_run_reruns_only_that_run(project: Path):
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["runs"]["run2"]["learning_rate"] = 1.0e-4
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = dvc("repro", cwd=project).stdout
    # score@run2 reruns only if run2's predictions changed (a 2-step run may predict the same SQL).
    ran = ran_stages(out)
    assert {"train@run2", "predict@run2", "mmlu@run2", "predict_scaled@run2-0.5", "mmlu_scaled@run2-0.5",
            "report"} <= ran, out
    assert ran <= {"train@run2", "predict@run2", "score@run2", "mmlu@run2", "predict_scaled@run2-0.5",
                   "score_scaled@run2-0.5", "mmlu_scaled@run2-0.5", "report"}, out
    diff = dvc("params", "diff", cwd=project).stdout
    assert "runs.run2.learning_rate" in diff
    git("add", "-A", cwd=project)
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "run2 lr", cwd=project)


def test_experiment_variant_and_comparison(project: Path):
    out = dvc("exp", "run", "-S", "runs.run1.learning_rate=1e-4", cwd=project).stdout
    ran = ran_stages(out)
    assert {"train@run1", "predict@run1", "mmlu@run1", "predict_scaled@run1-0.5", "mmlu_scaled@run1-0.5",
            "report"} <= ran, out
    assert ran <= {"train@run1", "predict@run1", "score@run1", "mmlu@run1", "predict_scaled@run1-0.5",
                   "score_scaled@run1-0.5", "mmlu_scaled@run1-0.5", "report"}, out
    shown = dvc("exp", "show", "--no-pager", "--csv", cwd=project).stdout
    header = shown.splitlines()[0]
    assert "runs.run1.learning_rate" in header and "metrics/spider/run1.json:execution_accuracy" in header
    assert "0.0001" in shown
    diff = dvc("metrics", "diff", "HEAD", "--json", cwd=project).stdout
    assert "metrics/summary.json" in diff or diff.strip() in ("{}", "")
    plots = dvc("plots", "diff", "HEAD", "-o", str(project / "plots-html"), cwd=project)
    assert (project / "plots-html" / "index.html").is_file(), plots.stdout + plots.stderr
    # Back to the committed state for the next test.
    run(["git", "checkout", "--", "."], cwd=project)
    dvc("checkout", "--force", cwd=project)


def test_queued_sweep_yields_a_frontier(project: Path):
    out = run([sys.executable, "scripts/sweep.py", "runs.run1.learning_rate", "3e-4", "6e-4"], cwd=project)
    frontier = (project / "sweep" / "frontier.csv").read_text().splitlines()
    assert len(frontier) == 5, out.stdout + out.stderr  # header + per value: the run and its scale-0.5 point
    assert frontier[0].startswith("experiment,runs.run1.learning_rate,mmlu_change_pp,ex_gain_pp")
    assert frontier[0].endswith(",scale")
    assert sorted((row.split(",")[1], row.split(",")[-1]) for row in frontier[1:]) == [
        ("0.0003", "0.5"), ("0.0003", "1.0"), ("0.0006", "0.5"), ("0.0006", "1.0")]
    assert (project / "sweep" / "frontier.png").stat().st_size > 10_000


def test_push_then_pull_restores_results_without_retraining(project: Path, tmp_path):
    remote = tmp_path / "remote"
    dvc("remote", "add", "--local", "-f", "-d", "ci", str(remote), cwd=project)
    dvc("push", cwd=project)
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(project), str(clone)], cwd=tmp_path)
    dvc("remote", "add", "--local", "-f", "-d", "ci", str(remote), cwd=clone)
    dvc("pull", cwd=clone)
    for rel in ("models/run1/adapter/adapter_config.json", "data/predictions/run2.jsonl",
                "data/scores/base_zeroshot.jsonl", "data/mmlu/run1.jsonl"):
        assert (clone / rel).read_bytes() == (project / rel).read_bytes(), rel
    status = dvc("status", cwd=clone).stdout
    assert "up to date" in status, status
    out = dvc("repro", cwd=clone).stdout
    assert ran_stages(out) == set(), out
