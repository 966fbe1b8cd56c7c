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


BAD_PARAMS = [
    ("data: {source: mirror, mirror_dir: 5}\n", "data.mirror_dir must be a path or name (a string), got 5"),
    ("data: {source: mirror, mirror_dir: [a, b]}\n", "data.mirror_dir must be a path or name (a string), got ['a', 'b']"),
    ("model: {path: 5}\n", "model.path must be a path or name (a string), got 5"),
    ("model: {path: x.gguf, cache_dir: [a]}\n", "model.cache_dir must be a path or name (a string), got ['a']"),
    ("runs: [run1, run2]\n", "`runs` must be a mapping, got ['run1', 'run2']"),
    ("model: 5\n", "`model` must be a mapping, got 5"),
]


@pytest.mark.parametrize("text,message", BAD_PARAMS)
def test_wrongly_typed_params_are_one_line_errors(tmp_path, text, message):
    f = tmp_path / "params.yaml"
    f.write_text(text)
    with pytest.raises(UserError) as exc:
        load_params(f)
    assert message in str(exc.value)


def test_a_run_that_is_not_a_mapping_is_refused(tmp_path):
    f = tmp_path / "params.yaml"
    f.write_text("train: {learning_rate: 1.0}\nruns:\n  run1: 5\n")
    with pytest.raises(UserError, match=r"runs.run1 must be a mapping of `train` keys.*got 5"):
        run_config(load_params(f), "run1")


@pytest.mark.parametrize("content", [b"data: {mirror_dir: caf\xe9}\n", b"train: {lora_r: 8}\nruns: [run1, run2]\n"])
def test_a_stage_reports_bad_params_in_one_line(tmp_path, content):
    """Through a real stage (download, which every `dvc repro` runs first): exit 2, one `error:`
    line naming the problem, no traceback, nothing written."""
    import subprocess
    import sys
    f = tmp_path / "params.yaml"
    f.write_bytes(content)
    out = tmp_path / "raw"
    proc = subprocess.run([sys.executable, str(REPO / "stages" / "download.py"), "spider", "--out", str(out),
                           "--params", str(f)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "Traceback" not in proc.stderr and not out.exists()
    assert ("not UTF-8" in lines[0]) if b"\xe9" in content else ("`runs` must be a mapping" in lines[0])


@pytest.mark.parametrize("value", [1.9, True, False, 0, -3, "ten", float("inf"), float("nan"), [5]])
def test_sample_sizes_that_are_not_positive_integers_are_refused(value):
    with pytest.raises(UserError, match=r"sample.spider_dev_n must be a positive integer or `all`"):
        parse_n(value, "sample.spider_dev_n")


@pytest.mark.parametrize("value,expected", [(30, 30), (30.0, 30), ("12", 12), ("all", None), (None, None)])
def test_sample_sizes_accepted(value, expected):
    assert parse_n(value, "sample.spider_dev_n") == expected
