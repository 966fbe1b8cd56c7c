"""benchmarks/bench_throughput.py `steady`: a training row's rate after its warm-up (a compile, the
first steps), read from the trainer's per-step log lines that `run` leaves in its output; and
benchmarks/profile_train.py's phase timings and profiler window."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.bench_throughput import main, steady_rate, train_log_points


def _log() -> str:
    lines = ["[bench] model {'arch': 'qwen2.5-0.5b'}",
             "[bench] train/eager: /usr/bin/python3 stages/train.py --params p.yaml --run run1"]
    # eager: 4 steps of 100 tokens at 0.5 s each after a 2 s first step
    for i, t in enumerate([2.0, 2.5, 3.0, 3.5], 1):
        lines.append(str({"loss": "9.1", "num_input_tokens_seen": 100 * i, "train_runtime": str(t)}))
    lines += [str({"train_runtime": "3.6", "train_loss": "9.0", "num_input_tokens_seen": 400}),   # summary: no step
              "[bench] train/eager: tokens/s=111.1 seconds=3.6 wall=9.0",
              "[bench] train/compiled: /usr/bin/python3 stages/train.py --params q.yaml --run run1"]
    # compiled: a 30 s first step (the compile), then 0.25 s per step of 200 tokens
    for i, t in enumerate([30.0, 30.25, 30.5, 30.75], 1):
        lines.append(str({"loss": "9.1", "num_input_tokens_seen": 200 * i, "train_runtime": str(t)}))
    lines += ["[bench] train/compiled: tokens/s=26.0 seconds=30.8 wall=40.0",
              "[bench] train/broken: /usr/bin/python3 stages/train.py --params r.yaml --run run1",
              "[bench] train/broken FAILED rc=1", "Traceback (most recent call last):"]
    return "\n".join(lines) + "\n"


def test_train_log_points_and_the_rate_after_the_warm_up():
    points = train_log_points(_log())
    assert points == {"eager": [(100, 2.0), (200, 2.5), (300, 3.0), (400, 3.5)],
                      "compiled": [(200, 30.0), (400, 30.25), (600, 30.5), (800, 30.75)], "broken": []}
    assert steady_rate(points["eager"], 1) == {"from_step": 1, "to_step": 4, "tokens_per_s": 200.0,
                                               "seconds_per_step": 0.5, "seconds_first_steps": 2.0}
    assert steady_rate(points["compiled"], 2)["tokens_per_s"] == 800.0
    assert steady_rate(points["compiled"], 4) is None     # nothing left after the warm-up


def test_steady_command_adds_the_rate_to_each_training_row(tmp_path):
    (tmp_path / "run.log").write_text(_log())
    rows = [{"stage": "train", "model": "m", "variant": v, "tokens_per_s": r, "details": {"steps": 4},
             "card": "card", "date": "d", "command": "python3 benchmarks/bench_throughput.py run ..."}
            for v, r in (("eager", 111.1), ("compiled", 26.0))]
    rows.append({"stage": "train", "model": "m", "variant": "broken", "error": "Traceback", "card": "card",
                 "date": "d", "command": "python3 benchmarks/bench_throughput.py run ..."})
    (tmp_path / "rows.json").write_text(json.dumps(rows))
    assert main(["steady", "--log", str(tmp_path / "run.log"), "--rows", str(tmp_path / "rows.json"),
                 "--skip", "1", "--note", "second run", "--out", str(tmp_path / "out.json")]) == 0
    out = json.loads((tmp_path / "out.json").read_text())
    assert [r["details"].get("steady", {}).get("tokens_per_s") if "details" in r else None for r in out] == \
        [200.0, 800.0, None]
    assert out[0]["tokens_per_s"] == 111.1 and out[0]["details"]["steps"] == 4   # the row's own figures kept
    assert out[1]["command"].startswith("python3 benchmarks/bench_throughput.py run ... > LOG 2>&1 && ")
    assert out[0]["note"] == out[1]["note"] == "second run"
    assert out[2] == rows[2]                                                    # a failed row as it was
    with pytest.raises(SystemExit, match="not more than --skip 4"):
        main(["steady", "--log", str(tmp_path / "run.log"), "--rows", str(tmp_path / "rows.json"),
              "--skip", "4", "--out", str(tmp_path / "out2.json")])


def test_profile_train_times_each_phase_after_the_warm_up_and_profiles_the_last_steps(tiny_model_cfg, tmp_path):
    """benchmarks/profile_train.py on the tiny model (CPU): host time per phase of the steps after the
    warm-up, then a profiler window of the last steps with its top host operations."""
    import yaml

    from test_training import formatted_rows

    from benchmarks import profile_train
    from sqltradeoff.io import write_jsonl
    from sqltradeoff.modeling import load_tokenizer

    write_jsonl(tmp_path / "train.jsonl", formatted_rows(load_tokenizer(tiny_model_cfg), 8))
    params = yaml.safe_load((Path(__file__).resolve().parents[1] / "params.yaml").read_text())
    params["model"] = tiny_model_cfg
    params["train"].update(batch_size=1, grad_accum=1)
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(params))
    out = tmp_path / "profile.json"
    assert profile_train.main(["--params", str(tmp_path / "p.yaml"), "--data", str(tmp_path / "train.jsonl"),
                               "--steps", "7", "--warmup", "2", "--profile-steps", "2", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["steps"] == 7 and res["timed_steps"] == 3
    assert set(res["host_seconds_per_step"]) == set(profile_train.PHASES)
    assert all(v > 0 for v in res["host_seconds_per_step"].values())
    prof = res["profile"]
    assert prof["steps"] == 2 and prof["wall_s_per_step"] > 0
    assert any(op["name"].startswith("aten::") for op in prof["top_host_ops"])
    with pytest.raises(SystemExit, match="--steps must exceed"):
        profile_train.main(["--params", "p", "--data", "d", "--steps", "3", "--warmup", "2", "--out", "o"])
