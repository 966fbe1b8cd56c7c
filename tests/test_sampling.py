"""Seeded samples and the prepare stage on the real mirror."""
from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import pytest

from sqltradeoff import data, sampling
from sqltradeoff.errors import UserError
from sqltradeoff.io import read_json, read_jsonl
from shared_paths import SHARED, SPIDER, require

REPO = Path(__file__).resolve().parents[1]
SUBJECTS = ["high_school_computer_science", "philosophy", "high_school_macroeconomics"]
sys.path.insert(0, str(REPO / "stages"))


def ids(n, prefix="x"):
    return [f"{prefix}-{i:04d}" for i in range(n)]


def test_same_seed_same_ids_and_order_independent():
    pool = ids(500)
    a = sampling.sample_ids(pool, 50, 42, "s")
    assert a == sampling.sample_ids(list(reversed(pool)), 50, 42, "s")  # input order does not matter
    assert len(set(a)) == 50 and set(a) <= set(pool) and a == sorted(a)
    assert a != sampling.sample_ids(pool, 50, 43, "s")
    assert a != sampling.sample_ids(pool, 50, 42, "other stream")


def test_all_and_too_many():
    pool = ids(10)
    assert sampling.sample_ids(pool, None, 1, "s") == pool
    with pytest.raises(UserError, match="sample of 11 was asked for but only 10"):
        sampling.sample_ids(pool, 11, 1, "s")
    with pytest.raises(UserError, match="duplicate ids"):
        sampling.sample_ids(pool + pool[:1], 3, 1, "s")
    with pytest.raises(UserError, match="sample.seed"):
        sampling.sample_ids(pool, 3, None, "s")


def test_groups_are_independent():
    rows = [{"id": f"{s}-{i}", "subject": s} for s in ("a", "b", "c") for i in range(100)]
    full = sampling.sample_per_group(rows, "subject", 50, 7, "mmlu")
    without_b = sampling.sample_per_group([r for r in rows if r["subject"] != "b"], "subject", 50, 7, "mmlu")
    assert {g: len(v) for g, v in full.items()} == {"a": 50, "b": 50, "c": 50}
    assert full["a"] == without_b["a"] and full["c"] == without_b["c"]


def test_few_shot_distinct_databases_and_fixed():
    rows = [{"id": f"t-{i}", "db_id": f"db{i % 7}"} for i in range(70)]
    shots = sampling.pick_few_shot(rows, 3, 42)
    assert len({s["db_id"] for s in shots}) == 3
    assert shots == sampling.pick_few_shot(list(reversed(rows)), 3, 42)
    assert sampling.pick_few_shot(rows, 0, 42) == []
    with pytest.raises(UserError, match="only 7 database"):
        sampling.pick_few_shot(rows, 8, 42)


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    require(SPIDER / "dev.json")
    root = tmp_path_factory.mktemp("raw")
    data.spider_from_mirror(SHARED, root / "spider")
    data.mmlu_from_mirror(SHARED, {}, root / "mmlu")   # every subject (the default)
    return root


def _prepare(raw, out, k_shot=5, **sample):
    from sqltradeoff.preparing import prepare

    cfg = {"seed": 42, "spider_dev_n": 100, "spider_train_n": "all", "mmlu_per_subject": 50, **sample}
    return prepare(raw / "spider", raw / "mmlu", out, cfg, k_shot=k_shot)


def test_prepare_real_data(raw, tmp_path):
    pytest.importorskip("sqltradeoff.hardness")
    m = _prepare(raw, tmp_path / "a")
    dev = read_jsonl(tmp_path / "a" / "spider_dev.jsonl")
    test = read_jsonl(tmp_path / "a" / "mmlu_test.jsonl")
    assert len(dev) == 100 and len({r["id"] for r in dev}) == 100
    assert not any(r["db_id"] == "wta_1" for r in dev)
    assert {r["hardness"] for r in dev} <= {"easy", "medium", "hard", "extra"}
    assert Counter(r["subject"] for r in test) == {s: 50 for s in SUBJECTS}
    assert len(read_jsonl(tmp_path / "a" / "mmlu_dev.jsonl")) == 15
    train = read_jsonl(tmp_path / "a" / "spider_train.jsonl")
    assert len(train) == m["available"]["spider_train"] == len(read_jsonl(raw / "spider" / "train.jsonl"))
    man = read_json(tmp_path / "a" / "manifest.json")
    assert man["ids"]["spider_dev"] == [r["id"] for r in dev] and man["seed"] == 42
    assert list(man["excluded"]["raw_spider"]["missing_database"]["dev"]) == ["wta_1"]
    # same seed -> same files; another seed -> other ids
    _prepare(raw, tmp_path / "b")
    for f in ("spider_dev.jsonl", "mmlu_test.jsonl", "spider_train.jsonl"):
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes()
    m7 = _prepare(raw, tmp_path / "c", seed=7)
    assert m7["ids"]["spider_dev"] != m["ids"]["spider_dev"]
    assert m7["ids"]["mmlu_test"] != m["ids"]["mmlu_test"]
    assert m7["sizes"]["mmlu_test_per_subject"] == {s: 50 for s in SUBJECTS}


def test_prepare_sizes_and_errors(raw, tmp_path):
    pytest.importorskip("sqltradeoff.hardness")
    m = _prepare(raw, tmp_path / "a", spider_dev_n="all", spider_train_n=200, mmlu_per_subject=5)
    assert m["sizes"]["spider_dev"] == 972 and m["sizes"]["spider_train"] == 200
    assert sum(m["spider_dev_hardness"].values()) == 972
    with pytest.raises(UserError, match="only 100 examples are available"):
        _prepare(raw, tmp_path / "b", mmlu_per_subject=101)
    with pytest.raises(UserError, match="spider_dev_n must be a positive integer"):
        _prepare(raw, tmp_path / "b", spider_dev_n=0)


MIRROR_NO_DEV = ["clinical_knowledge", "global_facts", "high_school_physics", "high_school_psychology",
                 "high_school_statistics", "human_aging", "machine_learning", "moral_disputes", "moral_scenarios",
                 "nutrition", "prehistory", "security_studies", "virology", "world_religions"]


def test_raw_mmlu_holds_every_subject_and_names_those_without_dev(raw):
    man = read_json(raw / "mmlu" / "manifest.json")
    assert len(man["subjects"]) == 57 and man["total"]["test"] == 14042
    assert man["subjects_without_dev"] == MIRROR_NO_DEV


def test_prepare_default_subjects_unchanged(raw, tmp_path):
    """The default sample (the study's three subjects) is what it was when only they were downloaded."""
    pytest.importorskip("sqltradeoff.hardness")
    three = tmp_path / "raw3"
    data.mmlu_from_mirror(SHARED, {"subjects": SUBJECTS}, three)
    m = _prepare(raw, tmp_path / "all_raw")
    from sqltradeoff.preparing import prepare

    prepare(raw / "spider", three, tmp_path / "three_raw",
                    {"seed": 42, "spider_dev_n": 100, "spider_train_n": "all", "mmlu_per_subject": 50})
    for f in ("mmlu_test.jsonl", "mmlu_dev.jsonl"):
        assert (tmp_path / "all_raw" / f).read_bytes() == (tmp_path / "three_raw" / f).read_bytes()
    dev = read_jsonl(tmp_path / "all_raw" / "mmlu_dev.jsonl")
    assert list(dict.fromkeys(r["subject"] for r in dev)) == SUBJECTS and len(dev) == 15
    assert m["mmlu_subjects"] == {"evaluated": SUBJECTS, "left_out": {"count": 0, "subjects": [], "reason": None}}


def test_prepare_all_subjects_five_shot_and_zero_shot(raw, tmp_path):
    pytest.importorskip("sqltradeoff.hardness")
    five = _prepare(raw, tmp_path / "five", mmlu_subjects="all", mmlu_per_subject="all")
    test = read_jsonl(tmp_path / "five" / "mmlu_test.jsonl")
    assert five["sizes"]["mmlu_test"] == len(test) == 9977 and five["sizes"]["mmlu_subjects"] == 43
    assert len({r["subject"] for r in test}) == 43 and not {r["subject"] for r in test} & set(MIRROR_NO_DEV)
    assert five["mmlu_subjects"]["left_out"]["count"] == 14
    assert five["mmlu_subjects"]["left_out"]["subjects"] == MIRROR_NO_DEV
    assert {r["subject"] for r in read_jsonl(tmp_path / "five" / "mmlu_dev.jsonl")} == {r["subject"] for r in test}
    assert read_json(tmp_path / "five" / "manifest.json")["mmlu_subjects"] == five["mmlu_subjects"]
    zero = _prepare(raw, tmp_path / "zero", mmlu_subjects="all", mmlu_per_subject="all", k_shot=0)
    assert zero["sizes"]["mmlu_test"] == 14042 and zero["sizes"]["mmlu_subjects"] == 57
    assert zero["mmlu_subjects"]["left_out"]["count"] == 0


def test_prepare_subject_list_errors(raw, tmp_path):
    pytest.importorskip("sqltradeoff.hardness")
    with pytest.raises(UserError, match=r"no dev \(few-shot\) examples for subject\(s\) virology .*mmlu\.k_shot: 0"):
        _prepare(raw, tmp_path / "a", mmlu_subjects=["philosophy", "virology"])
    m = _prepare(raw, tmp_path / "b", mmlu_subjects=["philosophy", "virology"], mmlu_per_subject=3, k_shot=0)
    assert m["sizes"]["mmlu_test_per_subject"] == {"philosophy": 3, "virology": 3}
    with pytest.raises(UserError, match=r"sample\.mmlu_subjects: astrology not in"):
        _prepare(raw, tmp_path / "c", mmlu_subjects=["astrology"])
    with pytest.raises(UserError, match=r"sample\.mmlu_subjects must be `all` or a non-empty list"):
        _prepare(raw, tmp_path / "d", mmlu_subjects=[])


def test_prepare_stage_reads_k_shot_from_mmlu_params(raw, tmp_path, capsys):
    pytest.importorskip("sqltradeoff.hardness")
    import yaml

    import prepare

    params = {"sample": {"seed": 42, "spider_dev_n": 5, "spider_train_n": 10, "mmlu_per_subject": 1,
                         "mmlu_subjects": "all"}, "mmlu": {"k_shot": 5}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    argv = ["--spider", str(raw / "spider"), "--mmlu", str(raw / "mmlu"), "--out", str(tmp_path / "out"),
            "--params", str(tmp_path / "params.yaml")]
    assert prepare.main(argv) == 0
    out = capsys.readouterr()
    assert "mmlu test 43 (43 subjects, 14 left out)" in out.out and "virology" in out.err
    params["mmlu"]["k_shot"] = 0
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    assert prepare.main(argv) == 0
    assert read_json(tmp_path / "out" / "manifest.json")["sizes"]["mmlu_subjects"] == 57
