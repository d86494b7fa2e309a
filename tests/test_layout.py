"""The package draws the pipeline: stages import only earlier stages, no import cycle, modules of readable size."""

from __future__ import annotations

import ast
from pathlib import Path

from fixtures.finetune import REPO_ROOT

PACKAGE = REPO_ROOT / "hfgal"
# Each top-level module or subpackage and its place in the data flow: it may import only places with a lower or
# equal rank (within a subpackage, modules may import each other, as long as no cycle forms).
RANKS = {
    "constants": 0, "errors": 0, "io": 0, "catalogue": 0,
    "runs": 1,  # the run folder: a contract read by every stage after training, so it sits below all of them
    "hub": 2,  # Hub ids, tokens, cards and one-commit pushes: used by the data stage and the training stage
    "data": 3, "models": 3,
    "train": 4,
    "study": 5,
    "inference": 6,
    "demo": 7,
    "cli": 8,
}  # fmt: skip
MAX_LINES = 450
MAX_FUNCTION_LINES = 80


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Module -> hfgal modules it imports, counting imports inside functions and under TYPE_CHECKING."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    module = ".".join(base + ([node.module] if node.module else []))
                else:
                    module = node.module or ""
                targets = [module] + [f"{module}.{alias.name}" for alias in node.names]
            else:
                continue
            for target in targets:
                while target and target not in modules:  # `from pkg import name` names a module or an attribute
                    target = target.rpartition(".")[0]
                if target and target not in (name, "hfgal"):
                    graph[name].add(target)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_the_walk_sees_imports_inside_functions():
    graph = import_graph()
    # hfgal.data.save imports hfgal.data.sources only inside build_dataset: the walk must still see it.
    assert "hfgal.data.sources" in graph["hfgal.data.save"]
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == [["a", "b", "c"]]


def test_no_import_cycle():
    assert _cycles(import_graph()) == []


def test_stages_import_only_earlier_stages():
    upward = []
    for module, targets in import_graph().items():
        if module == "hfgal":
            continue  # the public API (load_gz10, load_classifier, ...) re-exports from every stage, lazily
        stage = module.split(".")[1]
        for target in targets:
            other = target.split(".")[1]
            if RANKS.get(other, 0) > RANKS.get(stage, 0):
                upward.append(f"{module} -> {target}")
    assert not upward, "a stage imports a later one:\n" + "\n".join(sorted(upward))


def test_modules_stay_readable():
    long = [
        f"{p.relative_to(REPO_ROOT)}: {n} lines"
        for p in PACKAGE.rglob("*.py")
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    ]
    assert not long, "split these modules:\n" + "\n".join(long)


def test_the_recipe_reads_like_a_recipe():
    tree = ast.parse((PACKAGE / "train" / "finetune.py").read_text())
    main = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "main")
    assert main.end_lineno - main.lineno + 1 <= MAX_FUNCTION_LINES
    # recipes/finetune.py is only the entry point `accelerate launch` runs in a checkout: it calls the same code.
    entry = ast.parse((REPO_ROOT / "recipes" / "finetune.py").read_text())
    imported = {n.module for n in ast.walk(entry) if isinstance(n, ast.ImportFrom) and n.module}
    assert imported == {"hfgal.train.finetune"}
    # No private name of the package is used across modules.
    private = [
        f"{_module_name(p)}: {alias.name}"
        for p in PACKAGE.rglob("*.py")
        for node in ast.walk(ast.parse(p.read_text()))
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
        if alias.name.startswith("_") and alias.name != "__version__"
    ]
    assert not private, private


def test_every_subpackage_ships_in_the_wheel():
    pyproject = (REPO_ROOT / "pyproject.toml").read_text()
    found = {_module_name(p) for p in PACKAGE.rglob("__init__.py")}
    assert not [name for name in found if f'"{name}"' not in pyproject], "add them to [tool.setuptools] packages"


def _functions(path: Path):
    return [n for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]


def test_functions_stay_readable():
    long = [
        f"{p.relative_to(REPO_ROOT)}:{f.lineno} {f.name}: {f.end_lineno - f.lineno + 1} lines"
        for p in PACKAGE.rglob("*.py")
        for f in _functions(p)
        if f.end_lineno - f.lineno + 1 > MAX_FUNCTION_LINES
    ]
    assert not long, "split these functions by concept:\n" + "\n".join(long)


def test_one_definition_opens_a_checkpoint():
    """Training (load_model) and inference (load_classifier, the Space, hfgal predict/evaluate, --trained_run) open a
    checkpoint through one function: only it calls `AutoModelForImageClassification.from_pretrained`."""
    callers = [
        f"{p.relative_to(REPO_ROOT)}: {f.name}"
        for p in PACKAGE.rglob("*.py")
        for f in _functions(p)
        for node in ast.walk(f)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "from_pretrained"
        and ast.unparse(node.func.value) == "AutoModelForImageClassification"
    ]
    assert callers == ["hfgal/models/checkpoint.py: open_checkpoint"]


def test_split_info_is_carried_not_attached():
    """How a dataset was split travels as a typed `SplitInfo` beside its splits (`GZ10Splits`), never as an attribute
    set on a `DatasetDict` (which `.map`/`.filter` would silently drop)."""
    attached = [
        f"{p.relative_to(REPO_ROOT)}:{node.lineno}"
        for p in PACKAGE.rglob("*.py")
        for node in ast.walk(ast.parse(p.read_text()))
        if isinstance(node, (ast.Assign, ast.AnnAssign))
        for target in (node.targets if isinstance(node, ast.Assign) else [node.target])
        if isinstance(target, ast.Attribute) and target.attr == "split_info"
    ]
    assert not attached, attached
