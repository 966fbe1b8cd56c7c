"""The rule for code dependencies in dvc.yaml, enforced: a stage lists the Python script(s) its
command runs and every module of the `sqltradeoff` package those scripts import, directly or
through other modules (imports inside functions included), so that a change to any code a stage
runs makes `dvc status` report that stage. Derived from the imports with `ast`, not kept by hand."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
PACKAGE = "sqltradeoff"


def _module_file(name: str) -> Path | None:
    parts = name.split(".")
    if parts[0] != PACKAGE:
        return None
    base = REPO.joinpath(*parts)
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    return None


def _imports(path: Path) -> set[str]:
    """Names of the sqltradeoff modules `path` imports (relative imports resolved)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    rel = path.relative_to(REPO).with_suffix("")
    package = list(rel.parts[:-1]) if rel.name != "__init__" else list(rel.parts[:-1])
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            found.add(mod)
            found.update(f"{mod}.{a.name}" for a in node.names)   # `from sqltradeoff import io`
    return {m for m in found if m.split(".")[0] == PACKAGE and _module_file(m) is not None}


def code_closure(script: Path) -> set[str]:
    """Repository-relative paths of the script and every package module it reaches."""
    seen: set[Path] = set()
    todo = [script]
    while todo:
        f = todo.pop()
        if f in seen:
            continue
        seen.add(f)
        for mod in _imports(f):
            todo.append(_module_file(mod))
    return {str(p.relative_to(REPO)) for p in seen}


def _stages() -> dict[str, dict]:
    return yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


def _body(stage: dict) -> dict:
    return stage.get("do", stage)


def test_every_stage_lists_the_code_it_runs():
    problems = []
    for name, stage in _stages().items():
        body = _body(stage)
        scripts = re.findall(r"python\s+((?:stages|scripts)/\w+\.py)", body["cmd"])
        assert scripts, f"stage {name}: no python script found in its cmd"
        deps = {d if isinstance(d, str) else next(iter(d)) for d in body.get("deps", [])}
        needed = set().union(*(code_closure(REPO / s) for s in scripts))
        missing = sorted(needed - deps)
        if missing:
            problems.append(f"{name}: {', '.join(missing)}")
    assert not problems, "dvc.yaml deps miss code the stage runs:\n" + "\n".join(problems)


def test_every_listed_code_dep_exists():
    """`--fix` only adds deps: a module moved or removed must not stay listed (dvc fails on it)."""
    stale = sorted(f"{name}: {d}" for name, stage in _stages().items() for d in _body(stage).get("deps", [])
                   if isinstance(d, str) and d.endswith(".py") and not (REPO / d).is_file())
    assert not stale, "dvc.yaml lists code that does not exist:\n" + "\n".join(stale)


def test_the_closure_follows_imports_inside_functions(tmp_path):
    """The rule would be hollow if lazy imports were missed: stages/train.py imports training
    (at module level or in main) and training imports modeling inside a function."""
    closure = code_closure(REPO / "stages" / "train.py")
    assert "sqltradeoff/training.py" in closure and "sqltradeoff/modeling.py" in closure
    assert "sqltradeoff/errors.py" in closure


def fix_dvc_yaml() -> list[str]:
    """Insert the missing code deps into dvc.yaml in place (`python tests/test_stage_deps.py --fix`)."""
    text = (REPO / "dvc.yaml").read_text().split("\n")
    changed = []
    for name, stage in _stages().items():
        body = _body(stage)
        scripts = re.findall(r"python\s+((?:stages|scripts)/\w+\.py)", body["cmd"])
        deps = {d if isinstance(d, str) else next(iter(d)) for d in body.get("deps", [])}
        need = set().union(*(code_closure(REPO / s) for s in scripts)) - deps
        if not need:
            continue
        first = next(k for k in range(text.index(f"  {name}:"), len(text)) if text[k].strip() == f"- {scripts[0]}")
        indent = text[first][:len(text[first]) - len(text[first].lstrip())]
        last = first
        while last + 1 < len(text) and text[last + 1].startswith(indent + "- ") \
                and text[last + 1].strip()[2:].startswith(("sqltradeoff/", "stages/", "scripts/")):
            last += 1
        code = {t.strip()[2:] for t in text[first:last + 1]} | need
        text[first:last + 1] = [indent + "- " + c for c in sorted(code, key=lambda c: (not c.startswith("stages/"), c))]
        changed.append(name)
    (REPO / "dvc.yaml").write_text("\n".join(text))
    return changed


if __name__ == "__main__":
    import sys
    if "--fix" in sys.argv:
        print("updated:", ", ".join(fix_dvc_yaml()) or "nothing")
