"""sqltradeoff/cpu.py: the CPU thread setting is applied and overridable (issue 11 §3)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sqltradeoff.cpu import ENV, cpu_threads
from sqltradeoff.errors import UserError

REPO = Path(__file__).resolve().parents[1]


def test_thread_count_precedence():
    assert cpu_threads("auto", {}) is None                                   # torch's default, untouched
    assert cpu_threads(5, {"OMP_NUM_THREADS": "3"}) == 5                     # the param beats OMP_NUM_THREADS
    assert cpu_threads(5, {ENV: "2", "OMP_NUM_THREADS": "3"}) == 2           # the env var beats the param
    assert cpu_threads(5, {ENV: "auto"}) is None
    assert cpu_threads("4", {}) == 4
    for bad in (0, -1, True, 1.5, "many", None):
        with pytest.raises(UserError, match="cpu_threads must be `auto` or a positive integer"):
            cpu_threads(bad, {})
    with pytest.raises(UserError, match=f"{ENV} must be"):
        cpu_threads("auto", {ENV: "0"})


_CHILD = """
import json, os, sys
sys.path.insert(0, {repo!r})
from sqltradeoff.cpu import apply_cpu_threads
n = apply_cpu_threads(sys.argv[1])
import torch
print(json.dumps({{"n": n, "torch": torch.get_num_threads(), "policy": os.environ.get("OMP_WAIT_POLICY")}}))
"""


def _child(value: str, **env: str) -> dict:
    base = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", ENV)}
    out = subprocess.run([sys.executable, "-c", _CHILD.format(repo=str(REPO)), value], env={**base, **env},
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def test_apply_sets_torch_threads_and_the_passive_wait_policy():
    assert _child("1") == {"n": 1, "torch": 1, "policy": "PASSIVE"}
    assert _child("auto", **{ENV: "1"}) == {"n": 1, "torch": 1, "policy": "PASSIVE"}
    default = _child("auto", OMP_NUM_THREADS="1")       # auto leaves torch's default (here OMP_NUM_THREADS)
    assert default == {"n": 1, "torch": 1, "policy": "PASSIVE"}
    assert _child("2", OMP_NUM_THREADS="1")["torch"] == 2
    # a wait policy the user set is kept
    assert _child("1", OMP_WAIT_POLICY="ACTIVE")["policy"] == "ACTIVE"


def test_train_stage_applies_the_param_and_the_env_override(tmp_path):
    """The train stage calls apply_cpu_threads with params.yaml `cpu_threads` (bad values: one line)."""
    import yaml

    params = yaml.safe_load((REPO / "params.yaml").read_text())    # every other section valid
    (tmp_path / "params.yaml").write_text(json.dumps({**params, "cpu_threads": 0}))
    base = {k: v for k, v in os.environ.items() if k not in (ENV,)}
    res = subprocess.run([sys.executable, str(REPO / "stages" / "train.py"), "--run", "run1", "--data", "d.jsonl",
                          "--out", "m"], cwd=tmp_path, env=base, capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and res.stderr.startswith("error: params: cpu_threads must be"), res.stderr
    assert "Traceback" not in res.stderr
    (tmp_path / "params.yaml").write_text(json.dumps({**params, "cpu_threads": "auto"}))
    res = subprocess.run([sys.executable, str(REPO / "stages" / "train.py"), "--run", "run1", "--data", "d.jsonl",
                          "--out", "m"], cwd=tmp_path, env={**base, ENV: "x"}, capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 2 and res.stderr.startswith(f"error: {ENV} must be"), res.stderr
