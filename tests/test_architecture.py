"""The layout's rules (docs/architecture.md), read from the code's own imports: each stage imports only
the stages before it, and nothing outside cli/ imports Typer or Rich or prints."""

from __future__ import annotations

import ast
from pathlib import Path

import emogen_cli

PACKAGE = Path(emogen_cli.__file__).parent

# What each part may import (besides itself). The order is the data flow: core is the ground floor.
ALLOWED = {
    "core": set(),
    "data": {"core"},
    "stage1": {"core", "data"},
    "stage2": {"core", "data", "stage1"},
    "evaluation": {"core", "data", "stage1", "stage2"},
    # The inference layer: EmoGenPipeline (pipeline.py, the public face) and its features in inference/
    # (intensity, va, best-of, the writer) call each other, always inside functions; both may use
    # evaluation's scorers (best-of ranks with the emotion probe).
    "pipeline": {"core", "stage2", "inference", "evaluation"},
    "inference": {"core", "stage2", "pipeline", "evaluation"},
    "testing": {"core", "data", "stage1", "stage2"},
}


def _part(path: Path) -> str:
    parts = path.relative_to(PACKAGE).parts
    return parts[0] if len(parts) > 1 else path.stem


def _imports(path: Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names += [f"{node.module}.{a.name}" for a in node.names] if node.module == "emogen_cli" else [node.module]
    return names


def _library_files() -> list[Path]:
    return [p for p in sorted(PACKAGE.rglob("*.py")) if _part(p) not in {"cli", "__main__", "__init__"}]


def test_each_stage_imports_only_the_stages_before_it():
    wrong = []
    for path in _library_files():
        part = _part(path)
        for name in _imports(path):
            if not name.startswith("emogen_cli.") or name == "emogen_cli.__version__":
                continue
            target = name.split(".")[1]
            if target != part and target not in ALLOWED[part]:
                wrong.append(f"{path.relative_to(PACKAGE)} imports {name}")
    assert not wrong, "\n".join(wrong)


def test_every_part_is_named_in_the_rules():
    assert {_part(p) for p in _library_files()} == set(ALLOWED)


def test_only_the_cli_imports_typer_or_rich_or_prints():
    wrong = []
    for path in _library_files():
        for name in _imports(path):
            if name.split(".")[0] in {"typer", "rich", "click"}:
                wrong.append(f"{path.relative_to(PACKAGE)} imports {name}")
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print":
                wrong.append(f"{path.relative_to(PACKAGE)}:{node.lineno} prints")
    assert not wrong, "\n".join(wrong)


def test_the_pipeline_and_its_features_import_each_other_only_inside_functions():
    """pipeline.py <-> inference/ is the one pair of parts that import each other; a module-level import
    either way would make importing emogen_cli.pipeline a cycle."""
    wrong = []
    for path in [PACKAGE / "pipeline.py", *sorted((PACKAGE / "inference").glob("*.py"))]:
        other = "emogen_cli.inference" if path.name == "pipeline.py" else "emogen_cli.pipeline"
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(other):
                wrong.append(f"{path.relative_to(PACKAGE)}:{node.lineno} imports {node.module} at module level")
    assert not wrong, "\n".join(wrong)
