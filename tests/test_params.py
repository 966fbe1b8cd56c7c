from pathlib import Path

import pytest

from sqltradeoff.errors import UserError
from sqltradeoff.params import experiment_origin, load_params, parse_n, resolve_path, run_config

REPO = Path(__file__).resolve().parents[1]


def test_repository_params_define_the_study_runs():
    params = load_params(REPO / "params.yaml")
    run1, run2 = run_config(params, "run1"), run_config(params, "run2")
    assert (run1["learning_rate"], run2["learning_rate"]) == (2e-4, 5e-5)
    for cfg in (run1, run2):
        assert (cfg["lora_r"], cfg["lora_alpha"], cfg["lora_dropout"]) == (8, 16, 0.05)
        assert cfg["target_modules"] == ["q_proj", "k_proj", "v_proj", "o_proj"]
        assert cfg["optim_cuda"] == "paged_adamw_8bit" and cfg["seed"] == 42
        assert (cfg["batch_size"], cfg["grad_accum"]) == (1, 4)


def test_run_overrides_and_errors(tmp_path):
    f = tmp_path / "params.yaml"
    f.write_text("train: {learning_rate: 1.0, lora_r: 8}\nruns:\n  a: {lora_r: 16}\n  b: {lr: 3}\n")
    params = load_params(f)
    assert run_config(params, "a") == {"learning_rate": 1.0, "lora_r": 16}
    with pytest.raises(UserError, match="unknown training key"):
        run_config(params, "b")
    with pytest.raises(UserError, match="unknown run `c`.*a, b"):
        run_config(params, "c")


def test_load_params_errors(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_params(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1,\n")
    with pytest.raises(UserError, match="not valid YAML"):
        load_params(bad)


@pytest.mark.parametrize("value,expected", [(100, 100), ("all", None), (None, None), ("7", 7)])
def test_parse_n(value, expected):
    assert parse_n(value, "n") == expected


@pytest.mark.parametrize("value", [0, -1, "many", 1.5j])
def test_parse_n_rejects(value):
    with pytest.raises(UserError):
        parse_n(value, "n")


def test_paths_resolve_to_the_origin_repo_inside_a_queued_experiment(tmp_path):
    repo = tmp_path / "repo"
    (repo / "mirror").mkdir(parents=True)
    ws = repo / ".dvc" / "tmp" / "exps" / "standalone" / "tmpx"
    ws.mkdir(parents=True)
    assert experiment_origin(ws) == repo and experiment_origin(repo) is None
    assert resolve_path("mirror", ws) == repo / "mirror"
    (ws / "mirror").mkdir()
    assert resolve_path("mirror", ws) == ws / "mirror"  # the workspace's own copy wins
    assert resolve_path("/abs/x", ws) == Path("/abs/x")
    (ws / "params.yaml").write_text("model: {path: org/name, cache_dir: .cache/models}\ndata: {mirror_dir: ../elsewhere}\n")
    params = load_params(ws / "params.yaml")
    assert params["model"]["path"] == "org/name"  # a hub id stays a hub id
    assert params["model"]["cache_dir"] == str(repo / ".cache" / "models")
