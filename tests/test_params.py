import subprocess
import sys
from pathlib import Path

import pytest
import yaml

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


def _full_train(**changes) -> dict:
    train = yaml.safe_load((REPO / "params.yaml").read_text())["train"]
    return {**train, **changes}


def test_run_overrides_and_errors(tmp_path):
    f = tmp_path / "params.yaml"
    f.write_text(yaml.safe_dump({"train": _full_train(learning_rate=1.0, lora_r=8), "runs": {"a": {"lora_r": 16}}}))
    params = load_params(f)
    cfg = run_config(params, "a")
    assert (cfg["learning_rate"], cfg["lora_r"]) == (1.0, 16)
    assert params.config.run("a").lora_r == 16 and params.config.run("a").target_modules == ("q_proj", "k_proj",
                                                                                            "v_proj", "o_proj")
    with pytest.raises(UserError, match="unknown run `c`.*a"):
        run_config(params, "c")
    # an unknown key in a run is refused when the file is read (before: only by the train stage of that run)
    f.write_text("runs:\n  b: {lr: 3}\n")
    with pytest.raises(UserError, match="runs.b sets unknown training key `lr`"):
        load_params(f)


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


# ---------------------------------------------------------------- typed configuration (issue 14 §3)

def _with(**sections) -> dict:
    """params.yaml of the repository with `section__key=value` changes (value DELETE removes the key)."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    for dotted, value in sections.items():
        sec, key = dotted.split("__")
        params[sec][key] = value
    return params


# (changes, message parts: the key, the value, what is allowed)
WRONG_VALUES = [
    ({"sample__spider_dev_N": 5}, ["sample.spider_dev_N is not a known key", "did you mean `spider_dev_n`"]),
    ({"train__lora_rank": 16}, ["train sets unknown training key `lora_rank`", "did you mean `lora_r`"]),
    ({"sample__spider_dev_n": 1.9}, ["sample.spider_dev_n must be a positive integer or `all`, got 1.9"]),
    ({"sample__spider_dev_n": True}, ["sample.spider_dev_n must be a positive integer or `all`, got True"]),
    ({"train__lora_r": True}, ["train.lora_r must be a positive integer, got True"]),
    ({"train__max_steps": True}, ["train.max_steps must be -1 (train for `epochs`) or a positive integer, got True"]),
    ({"train__learning_rate": True}, ["train.learning_rate must be a finite number > 0, got True"]),
    ({"train__learning_rate": float("inf")}, ["train.learning_rate must be a finite number > 0, got inf"]),
    ({"train__learning_rate": float("nan")}, ["train.learning_rate must be a finite number > 0, got nan"]),
    ({"train__learning_rate": "fast"}, ["train.learning_rate must be a finite number > 0, got 'fast'"]),
    ({"train__attention": "bogus"}, ["train.attention must be one of sdpa, eager, torch_varlen", "got 'bogus'"]),
    ({"train__target_modules": []}, ["train.target_modules must be `all-linear` or a non-empty list of module names"]),
    ({"train__target_modules": [5]}, ["train.target_modules must be", "got [5]"]),
    ({"train__target_modules": ["q proj;"]}, ["train.target_modules must be", "got ['q proj;']"]),
    ({"model__load_in_4bit": "no"}, ["model.load_in_4bit must be true or false, got 'no'"]),
    ({"predict__batch_size": 0}, ["predict.batch_size must be a positive integer, got 0"]),
    ({"predict__backend": "fast"}, ["predict.backend must be one of reference, prefix, static, graphs, continuous, got 'fast'"]),
    ({"predict__cuda_graphs": "yes"}, ["predict.cuda_graphs must be auto, true or false, got 'yes'"]),
    ({"predict__compile_level": 4}, ["predict.compile_level must be 0, 1, 2 or 3, got 4"]),
    ({"mmlu__k_shot": -1}, ["mmlu.k_shot must be an integer >= 0, got -1"]),
    ({"mmlu__pride_fraction": 0}, ["mmlu.pride_fraction must be a finite number > 0 and <= 1, got 0"]),
    ({"mmlu__method": "vibes"}, ["mmlu.method must be one of loglik, debiased, pride, generate, got 'vibes'"]),
    ({"mmlu__also_debiased": "yes"}, ["mmlu.also_debiased must be true or false, got 'yes'"]),
    ({"report__power": 1.5}, ["report.power must be a finite number > 0 and < 1, got 1.5"]),
    ({"report__ci_method": "guess"}, ["report.ci_method must be one of percentile, bca, basic, wilson"]),
    ({"prompt__schema": "ddl"}, ["prompt.schema must be one of create_table, none, got 'ddl'"]),
    ({"prompt__few_shot": -1}, ["prompt.few_shot must be a non-negative integer, got -1"]),
    ({"data__source": "ftp"}, ["data.source must be one of mirror, hub or null, got 'ftp'"]),
]


@pytest.mark.parametrize("changes,parts", WRONG_VALUES, ids=[next(iter(c)) + "=" + repr(next(iter(c.values())))
                                                             for c, _ in WRONG_VALUES])
def test_wrong_values_are_one_line_errors_naming_key_value_and_allowed(tmp_path, changes, parts):
    f = tmp_path / "params.yaml"
    f.write_text(yaml.safe_dump(_with(**changes)))
    with pytest.raises(UserError) as exc:
        load_params(f)
    msg = str(exc.value)
    assert "\n" not in msg and msg.startswith("params: ")
    for part in parts:
        assert part in msg, msg


@pytest.mark.parametrize("changes,parts", WRONG_VALUES, ids=[next(iter(c)) + "=" + repr(next(iter(c.values())))
                                                             for c, _ in WRONG_VALUES])
def test_every_wrong_value_stops_a_real_stage_with_exit_2_and_one_line(tmp_path, changes, parts):
    """The same wrong values through a real stage process (prepare reads params first): exit status 2,
    one `error:` line naming key and value, no traceback, nothing written."""
    f = tmp_path / "params.yaml"
    f.write_text(yaml.safe_dump(_with(**changes)))
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, str(REPO / "stages" / "prepare.py"), "--spider", str(tmp_path / "s"),
                           "--mmlu", str(tmp_path / "m"), "--out", str(out), "--params", str(f)],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: params: "), proc.stderr
    assert "Traceback" not in proc.stderr and all(part in lines[0] for part in parts), lines
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]


def test_unknown_override_key_and_section_suggest_the_close_known_one(tmp_path):
    f = tmp_path / "params.yaml"
    params = _with()
    params["runs"]["run1"] = {"lerning_rate": 1e-4}
    f.write_text(yaml.safe_dump(params))
    with pytest.raises(UserError, match=r"runs.run1 sets unknown training key `lerning_rate` "
                                        r"\(did you mean `learning_rate`\?\)"):
        load_params(f)
    f.write_text("predcit: {batch_size: 8}\n")
    with pytest.raises(UserError, match=r"`predcit` is not a known section \(did you mean `predict`\?\)"):
        load_params(f)


def test_hand_written_exponent_is_a_number(tmp_path):
    """PyYAML reads `1e-4` (no dot) as the string '1e-4': it is accepted as the number it spells."""
    f = tmp_path / "params.yaml"
    text = (REPO / "params.yaml").read_text().replace("learning_rate: 5.0e-5", "learning_rate: 1e-4")
    assert "learning_rate: 1e-4" in text
    f.write_text(text)
    assert yaml.safe_load(text)["runs"]["run2"]["learning_rate"] == "1e-4"
    cfg = load_params(f).config.run("run2")
    assert cfg.learning_rate == 1e-4 and isinstance(cfg.learning_rate, float)


def test_torch_varlen_with_padded_batches_is_refused_at_load(tmp_path):
    f = tmp_path / "params.yaml"
    f.write_text(yaml.safe_dump(_with(train__attention="torch_varlen", train__batch_size=2)))
    with pytest.raises(UserError, match="train.attention 'torch_varlen' needs train.padding_free: true"):
        load_params(f)


def test_repository_params_files_load_to_typed_sections():
    for name in ("params.yaml", "docs/results/qwen2.5-coder-0.5b-gpu/params.yaml"):
        cfg = load_params(REPO / name).config
        assert cfg.predict.batch_size > 0 and cfg.mmlu.method == "loglik" and cfg.prompt.schema == "create_table"
        assert set(cfg.runs) == set(cfg.run_overrides) and cfg.run("run1").lora_r == 8
    gpu = load_params(REPO / "docs/results/qwen2.5-coder-0.5b-gpu/params.yaml").config
    assert gpu.adapter_scales == (0.25, 0.5, 0.75) and set(gpu.runs) == {"run1", "run2", "run3", "run4", "run5"}
    assert gpu.run("run2").learning_rate == 5e-5 and gpu.predict.batch_size == 256 and gpu.run("run1").epochs == 1
    from sqltradeoff.report.markdown import SEVEN as seven
    assert gpu.run("run3").target_modules == seven and gpu.run("run3").learning_rate == 2e-4
    assert gpu.run("run4").target_modules == seven and gpu.run("run4").learning_rate == 1e-4
    assert (gpu.run("run5").lora_r, gpu.run("run5").lora_alpha, gpu.run("run5").target_modules) == (32, 64, seven[:4])
    assert all(gpu.run(r).epochs == 1 for r in gpu.runs)    # one epoch each, as run on the H200 (RUN.md)


# Through real stages: exit 2, one `error:` line naming the key, no traceback, nothing written.
STAGE_CASES = [
    ("download.py", ["spider", "--out", "{out}"], {"sample__spider_dev_N": 5}, "sample.spider_dev_N"),
    ("prepare.py", ["--spider", "{tmp}/s", "--mmlu", "{tmp}/m", "--out", "{out}"], {"sample__spider_dev_n": True},
     "sample.spider_dev_n must be a positive integer or `all`, got True"),
    ("train.py", ["--run", "run1", "--data", "{tmp}/t.jsonl", "--out", "{out}"], {"train__lora_rank": 4},
     "unknown training key `lora_rank`"),
    ("train.py", ["--run", "run1", "--data", "{tmp}/t.jsonl", "--out", "{out}"], {"train__learning_rate": ".inf"},
     "train.learning_rate must be a finite number > 0"),
    ("train.py", ["--run", "run1", "--data", "{tmp}/t.jsonl", "--out", "{out}"], {"train__attention": "bogus"},
     "train.attention must be one of"),
    ("train.py", ["--run", "run1", "--data", "{tmp}/t.jsonl", "--out", "{out}"], {"train__lora_r": True},
     "train.lora_r must be"),
    ("train.py", ["--run", "run1", "--data", "{tmp}/t.jsonl", "--out", "{out}"], {"train__max_steps": True},
     "train.max_steps must be"),
    ("train.py", ["--run", "run1", "--data", "{tmp}/t.jsonl", "--out", "{out}"], {"train__learning_rate": True},
     "train.learning_rate must be"),
    ("train.py", ["--run", "run1", "--data", "{tmp}/t.jsonl", "--out", "{out}"], {"train__target_modules": []},
     "train.target_modules must be"),
    ("prepare.py", ["--spider", "{tmp}/s", "--mmlu", "{tmp}/m", "--out", "{out}"], {"sample__mmlu_per_subject": 1.9},
     "sample.mmlu_per_subject must be a positive integer or `all`, got 1.9"),
    ("predict.py", ["--job", "{tmp}/in.jsonl", "{out}"], {"model__load_in_4bit": "no"},
     "model.load_in_4bit must be true or false, got 'no'"),
    ("mmlu.py", ["--name", "base", "--out-rows", "{out}", "--out-metrics", "{tmp}/m.json"],
     {"mmlu__batch_size": True}, "mmlu.batch_size must be a positive integer, got True"),
]


@pytest.mark.parametrize("stage,args,changes,message", STAGE_CASES,
                         ids=[f"{c[0]}-{next(iter(c[2]))}" for c in STAGE_CASES])
def test_a_stage_refuses_a_wrong_value_in_one_line(tmp_path, stage, args, changes, message):
    params = _with(**changes)
    f = tmp_path / "params.yaml"
    text = yaml.safe_dump(params)
    f.write_text(text.replace("'.inf'", ".inf"))   # a real YAML infinity
    out = tmp_path / "out"
    argv = [a.format(tmp=tmp_path, out=out) for a in args]
    proc = subprocess.run([sys.executable, str(REPO / "stages" / stage), *argv, "--params", str(f)],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert message in lines[0] and "Traceback" not in proc.stderr
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]
