"""The layout's rules (docs/architecture.md), read from the code's own imports: each stage imports only
the stages before it, and nothing outside cli/ imports Typer or Rich or prints."""

from __future__ import annotations

import ast
from pathlib import Path

import emogen_cli

PACKAGE = Path(emogen_cli.__file__).parent

# The layers, lowest first: a part imports only parts below it (core is the ground floor).
LAYERS = ["core", "backbones", "data", "stage1", "stage2", "evaluation", "conditioning", "pipeline", "outputs",
          "serve", "testing"]
ALLOWED = {part: set(LAYERS[:i]) for i, part in enumerate(LAYERS)}
ALLOWED["testing"] = {"core", "backbones", "data", "stage1", "stage2"}  # the tiny stand-ins need no inference code


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


def _module(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def _graph() -> dict[str, set[str]]:
    """Every emogen module -> the emogen modules it imports (inside functions too, `from x import y`
    counted as x.y when that is a module, else x)."""
    files = {_module(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        edges = set()
        for target in _imports(path):
            if target in files:
                edges.add(target)
            elif target.rsplit(".", 1)[0] in files:
                edges.add(target.rsplit(".", 1)[0])
        graph[name] = edges - {name}
    return graph


def test_no_import_cycle_anywhere_in_the_package():
    graph = _graph()
    # packages' __init__ modules are not edges of a cycle (importing a.b runs a/__init__ first, which
    # imports nothing of its children here)
    state: dict[str, int] = {}
    cycles: list[str] = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if nxt == "emogen_cli":
                continue  # the lazy top-level names resolve on use, not at import
            if state.get(nxt) == 1:
                cycles.append(" -> ".join(stack[stack.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles, "\n".join(cycles)


def test_only_the_serve_layer_imports_the_web_libraries():
    """fastapi, uvicorn and starlette come with the serve extra: nothing below serve/ may need them."""
    wrong = [f"{path.relative_to(PACKAGE)} imports {name}" for path in _library_files() if _part(path) != "serve"
             for name in _imports(path) if name.split(".")[0] in {"fastapi", "uvicorn", "starlette", "multipart"}]
    assert not wrong, "\n".join(wrong)


def test_the_layers_match_the_architecture_document():
    doc = (PACKAGE.parent / "docs" / "architecture.md").read_text()
    assert " < ".join(LAYERS[:-1]) in doc
