"""``python -m leuko.pipeline.stagedeps``: the ``lib/leuko`` files each pipeline stage really uses.

A stage's code is its entry points, read from its ``cmd`` in ``dvc.yaml``: the notebooks it runs
with papermill (their code cells), the modules it runs with ``python -m leuko.X``, and
``leuko.tool.cli`` for the ``leuko`` console script. Its ``lib/leuko`` dependencies are the
transitive closure of the ``leuko.*`` modules these import, read from the source (AST), imports
inside functions included: the package imports lazily, so an import anywhere in a module makes
that module a dependency. Package data a module reads (``RESOURCES``) comes with it.

Declaring exactly this closure under each stage's ``deps`` makes ``dvc repro`` rerun a stage
when, and only when, code it can run changed; ``tests/test_stagedeps.py`` fails when
``dvc.yaml`` and the imports disagree. Run

    python -m leuko.pipeline.stagedeps            # the expected lib/leuko deps of every stage
    python -m leuko.pipeline.stagedeps --reverse  # per file: the stages an edit of it reruns
    python -m leuko.pipeline.stagedeps --check    # exit 1 and list the differences with dvc.yaml
    python -m leuko.pipeline.stagedeps --write    # rewrite dvc.yaml's lib/leuko deps from the imports
"""

from __future__ import annotations

import argparse
import ast
import json
import re
import shlex
import sys
from collections.abc import Iterable
from pathlib import Path

import yaml

PACKAGE = "leuko"
#: Package data read by a module at run time (paths relative to the package folder).
RESOURCES = {"leuko.reporting.render": ("reporting/templates",)}
#: The console scripts of pyproject.toml and the module each one runs.
CONSOLE_SCRIPTS = {"leuko": "leuko.tool.cli"}
LIB_PREFIX = "lib/leuko"


def package_dir(root: Path = Path(".")) -> Path:
    """The folder of the ``leuko`` package in a checkout."""
    return Path(root) / LIB_PREFIX


def module_file(module: str, pkg_dir: Path) -> Path | None:
    """The source file of ``leuko.X`` (or of the package itself), None when there is none."""
    parts = module.split(".")
    if parts[0] != PACKAGE:
        return None
    base = pkg_dir.joinpath(*parts[1:])
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported_modules(source: str, module: str | None, pkg_dir: Path) -> set[str]:
    """The ``leuko`` modules that ``source`` imports anywhere (top level or inside functions).

    ``from leuko import a, b`` counts ``leuko.a`` and ``leuko.b`` when they are modules;
    relative imports are resolved against ``module`` (the importing module's name)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == PACKAGE:
                    found.add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                if module is None:
                    continue
                anchor = module.split(".")[: -node.level]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            else:
                base = node.module or ""
            if base.split(".")[0] != PACKAGE:
                continue
            found.add(base)
            for alias in node.names:
                if module_file(f"{base}.{alias.name}", pkg_dir) is not None:
                    found.add(f"{base}.{alias.name}")
    # importing leuko.a.b runs leuko/__init__ and leuko.a first
    parents = {".".join(m.split(".")[:i]) for m in found for i in range(1, m.count(".") + 1)}
    return {m for m in found | parents if module_file(m, pkg_dir) is not None}


def notebook_source(path: Path) -> str:
    """The code cells of a notebook as one Python source (IPython magics and shell lines
    dropped)."""
    cells = json.loads(Path(path).read_text())["cells"]
    lines = []
    for cell in cells:
        if cell.get("cell_type") != "code":
            continue
        source = cell["source"]
        text = "".join(source) if isinstance(source, list) else source
        lines += [line for line in text.splitlines() if not line.lstrip().startswith(("%", "!"))]
    return "\n".join(lines)


def closure(modules: Iterable[str], pkg_dir: Path) -> set[str]:
    """Every ``leuko`` module that ``modules`` import, directly or not (themselves included)."""
    todo = [".".join(m.split(".")[:i]) for m in modules for i in range(1, m.count(".") + 2)]
    seen: set[str] = set()
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        path = module_file(module, pkg_dir)
        if path is not None:
            todo += imported_modules(path.read_text(), module, pkg_dir) - seen
    return {m for m in seen if module_file(m, pkg_dir) is not None}


def entry_points(cmd: str) -> tuple[list[str], list[str]]:
    """The notebooks and the ``leuko`` modules a stage command runs: notebook paths anywhere,
    ``python -m leuko.X`` and console scripts where a command starts (also the command that
    ``python -m leuko.pipeline.stagetimes NAME -- ...`` wraps)."""
    words = shlex.split(cmd.replace("\n", " "), posix=True)
    notebooks = [w for w in words if w.startswith("notebooks/") and w.endswith(".ipynb")]
    modules: list[str] = []
    segment: list[str] = []
    for word in [*words, ";"]:
        if word in ("&&", "||", ";", "|"):
            modules += _command_modules(segment)
            segment = []
        else:
            segment.append(word)
    return notebooks, modules


def _command_modules(words: list[str]) -> list[str]:
    """The ``leuko`` modules one simple command runs (wrapped commands followed)."""
    if not words:
        return []
    if words[0] in CONSOLE_SCRIPTS:
        return [CONSOLE_SCRIPTS[words[0]]]
    if Path(words[0]).name.startswith("python") and len(words) > 2 and words[1] == "-m":
        module = words[2]
        if module.split(".")[0] != PACKAGE:
            return []
        if "--" in words:
            return [module, *_command_modules(words[words.index("--") + 1:])]
        return [module]
    return []


def stage_modules(cmd: str, root: Path = Path(".")) -> set[str]:
    """The closure of the ``leuko`` modules a stage command can run."""
    pkg_dir = package_dir(root)
    notebooks, modules = entry_points(cmd)
    roots = set(modules)
    for notebook in notebooks:
        roots |= imported_modules(notebook_source(Path(root) / notebook), None, pkg_dir)
    return closure(roots, pkg_dir)


def module_deps(modules: Iterable[str], root: Path = Path(".")) -> list[str]:
    """The ``lib/leuko/...`` paths (sources and package data) of ``modules``, sorted."""
    pkg_dir = package_dir(root)
    deps = set()
    for module in modules:
        deps.add(module_file(module, pkg_dir).relative_to(root).as_posix())
        deps |= {f"{LIB_PREFIX}/{r}" for r in RESOURCES.get(module, ())}
    return sorted(deps)


def dvc_stages(dvc_yaml: Path = Path("dvc.yaml")) -> dict[str, dict]:
    """The stage definitions of ``dvc.yaml`` by name (``foreach``'s ``do`` unwrapped; YAML
    anchors resolved; ``${...}`` left as written)."""

    stages = yaml.safe_load(Path(dvc_yaml).read_text())["stages"]
    return {name: (spec["do"] if "do" in spec else spec) for name, spec in stages.items()}


def expected_deps(dvc_yaml: Path = Path("dvc.yaml")) -> dict[str, list[str]]:
    """Per stage: the ``lib/leuko`` deps its command's imports call for."""
    root = Path(dvc_yaml).parent
    return {name: module_deps(stage_modules(spec["cmd"], root), root)
            for name, spec in dvc_stages(dvc_yaml).items()}


def declared_deps(dvc_yaml: Path = Path("dvc.yaml")) -> dict[str, list[str]]:
    """Per stage: the deps under ``lib/leuko`` that ``dvc.yaml`` declares."""
    return {name: sorted(d for d in spec.get("deps", [])
                         if re.match(rf"{LIB_PREFIX}(/|$)", str(d)))
            for name, spec in dvc_stages(dvc_yaml).items()}


def differences(dvc_yaml: Path = Path("dvc.yaml")) -> dict[str, dict[str, list[str]]]:
    """Per disagreeing stage: the ``missing`` and ``extra`` lib/leuko deps of ``dvc.yaml``."""
    expected, declared = expected_deps(dvc_yaml), declared_deps(dvc_yaml)
    out = {}
    for name, want in expected.items():
        have = declared[name]
        missing, extra = sorted(set(want) - set(have)), sorted(set(have) - set(want))
        if missing or extra:
            out[name] = {"missing": missing, "extra": extra}
    return out


def reruns(dvc_yaml: Path = Path("dvc.yaml")) -> dict[str, list[str]]:
    """Per ``lib/leuko`` file: the stages (by name in dvc.yaml) whose deps include it."""
    table: dict[str, list[str]] = {}
    for name, deps in expected_deps(dvc_yaml).items():
        for dep in deps:
            table.setdefault(dep, []).append(name)
    pkg_dir = package_dir(Path(dvc_yaml).parent)
    for path in sorted(pkg_dir.rglob("*.py")):
        table.setdefault(path.relative_to(Path(dvc_yaml).parent).as_posix(), [])
    return dict(sorted(table.items()))


def write_deps(dvc_yaml: Path = Path("dvc.yaml")) -> list[str]:
    """Rewrite each stage's run of ``- lib/leuko/...`` deps in ``dvc.yaml`` with the derived
    list, leaving every other line (comments, anchors, other deps) as written. Returns the
    stages whose deps changed."""
    path = Path(dvc_yaml)
    expected, before = expected_deps(path), declared_deps(path)
    lines, out, stage, i = path.read_text().split("\n"), [], None, 0
    while i < len(lines):
        heading = re.match(r"^  ([a-z0-9-]+):$", lines[i])
        if heading:
            stage = heading.group(1)
        if stage in expected and re.match(rf"^\s+- {LIB_PREFIX}/", lines[i]):
            indent = lines[i][:lines[i].index("-")]
            while i < len(lines) and re.match(rf"^\s+- {LIB_PREFIX}/", lines[i]):
                i += 1
            out += [f"{indent}- {dep}" for dep in expected[stage]]
            continue
        out.append(lines[i])
        i += 1
    path.write_text("\n".join(out))
    return [name for name in expected if expected[name] != before[name]]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m leuko.pipeline.stagedeps", description=__doc__
                                     .split("\n")[0])
    parser.add_argument("dvc_yaml", nargs="?", default="dvc.yaml")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--reverse", action="store_true",
                       help="per lib/leuko file, the stages an edit of it reruns")
    group.add_argument("--check", action="store_true",
                       help="exit 1 when dvc.yaml's lib/leuko deps differ from the imports")
    group.add_argument("--write", action="store_true",
                       help="rewrite dvc.yaml's lib/leuko deps from the imports")
    args = parser.parse_args(argv)
    path = Path(args.dvc_yaml)
    if args.write:
        changed = write_deps(path)
        print(f"{path}: lib/leuko deps rewritten for {', '.join(changed) or 'no stage'}")
        return 0
    if args.check:
        diff = differences(path)
        for name, d in diff.items():
            print(f"{name}: missing {d['missing']}, extra {d['extra']}")
        return 1 if diff else 0
    if args.reverse:
        for dep, stages in reruns(path).items():
            print(f"{dep}: {', '.join(stages) or '(no stage)'}")
        return 0
    for name, deps in expected_deps(path).items():
        print(f"{name}:")
        print("\n".join(f"  - {d}" for d in deps))
    return 0


if __name__ == "__main__":
    sys.exit(main())
