"""What `pip install hfgal` gets: the wheel carries every subpackage, the recipes, the card templates and the
licences, every package hfgal imports is declared in pyproject.toml, and CITATION.cff is valid.

The wheel is built offline (`python -m build --wheel --no-isolation`) from a copy of the files the build reads, so
nothing is written into the checkout. CI's package job (.ci/package) installs the built wheel and sdist and runs them.
"""

from __future__ import annotations

import ast
import importlib.util
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from fixtures.finetune import REPO_ROOT

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: build depends on tomli there
    import tomli as tomllib

PYPROJECT = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))
# Top-level folders that ship inside the wheel as subpackages (pyproject's package-dir).
SHIPPED_FOLDERS = {"hub_cards": "hfgal/hub_cards", "recipes": "hfgal/recipes"}
BUILD_INPUTS = ("hfgal", *SHIPPED_FOLDERS, "pyproject.toml", "README.md", "LICENSE", "NOTICE", "MANIFEST.in")


def _check_build_tools() -> None:
    """The wheel is built without isolation (tests are offline): `build` and the backend must be installed."""
    from importlib.metadata import PackageNotFoundError, version

    if importlib.util.find_spec("build") is None:
        pytest.fail("building the wheel needs `build` (the dev extra): pip install -e '.[dev]'")
    from packaging.requirements import Requirement

    for spec in PYPROJECT["build-system"]["requires"]:
        requirement = Requirement(spec)
        if requirement.name != "setuptools":  # the backend; `wheel` is part of setuptools >= 70.1
            continue
        try:
            installed = version(requirement.name)
        except PackageNotFoundError:
            installed = None
        if installed is None or installed not in requirement.specifier:
            pytest.fail(
                f"building the wheel needs {spec} (pyproject's build-system), found {installed}: pip install '{spec}'"
            )


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Iterator[zipfile.ZipFile]:
    _check_build_tools()
    src = tmp_path_factory.mktemp("src")
    for name in BUILD_INPUTS:
        path = REPO_ROOT / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(path, src / name)
    out = tmp_path_factory.mktemp("dist")
    # --skip-dependency-check: `wheel` in build-system.requires is only needed by setuptools < 70.1.
    command = [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--skip-dependency-check", "--outdir"]
    proc = subprocess.run([*command, str(out), str(src)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (path,) = out.glob("hfgal-*.whl")
    with zipfile.ZipFile(path) as archive:
        yield archive


def _source_files(pattern: str) -> list[Path]:
    """Files of the checkout that ship in the wheel, matching `pattern` below `hfgal/` and the shipped folders."""
    found = []
    for folder in ("hfgal", *SHIPPED_FOLDERS):
        found += [p for p in (REPO_ROOT / folder).rglob(pattern) if "__pycache__" not in p.parts]
    return found


def _in_wheel(path: Path) -> str:
    """Where a checkout file lands inside the wheel."""
    relative = path.relative_to(REPO_ROOT).as_posix()
    top, slash, rest = relative.partition("/")
    return f"{SHIPPED_FOLDERS[top]}{slash}{rest}" if top in SHIPPED_FOLDERS else relative


def test_wheel_carries_every_module_of_every_subpackage(wheel):
    names = set(wheel.namelist())
    modules = _source_files("*.py")
    packages = {_in_wheel(p.parent) for p in modules if p.name == "__init__.py"}
    assert {"hfgal/cli", "hfgal/data/synthetic", "hfgal/models/equivariant", "hfgal/recipes"} <= packages
    assert sorted(_in_wheel(p) for p in modules if _in_wheel(p) not in names) == []


def test_wheel_carries_the_recipes_templates_and_type_marker(wheel):
    names = set(wheel.namelist())
    data = [REPO_ROOT / "recipes/offline.yaml", REPO_ROOT / "hfgal/py.typed"]
    for folder, pattern in (("recipes/study", "*.yaml"), ("recipes/accelerate", "*.yaml"), ("hub_cards", "*.md")):
        data += sorted((REPO_ROOT / folder).glob(pattern))
    assert len(data) > 10
    assert sorted(_in_wheel(p) for p in data if _in_wheel(p) not in names) == []


def test_wheel_metadata_has_the_licences_and_the_command(wheel):
    names = wheel.namelist()
    for licence in ("LICENSE", "NOTICE"):
        (member,) = [n for n in names if n.endswith(f".dist-info/licenses/{licence}")]
        assert wheel.read(member) == (REPO_ROOT / licence).read_bytes()
    (metadata,) = [n for n in names if n.endswith(".dist-info/METADATA")]
    assert "License-Expression: Apache-2.0" in wheel.read(metadata).decode()
    (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
    assert "hfgal = hfgal.cli:main" in wheel.read(entry_points).decode()


def _imported_top_level_names() -> dict[str, str]:
    """Top-level module -> one file importing it, for every absolute import in the code the wheel ships (imports
    inside functions included: they are the optional extras)."""
    found: dict[str, str] = {}
    for path in _source_files("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module]
            else:
                continue
            for module in modules:
                found.setdefault(module.partition(".")[0], path.relative_to(REPO_ROOT).as_posix())
    return found


def _declared_distributions() -> set[str]:
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    project = PYPROJECT["project"]
    specs = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        specs += extra
    return {canonicalize_name(Requirement(spec).name) for spec in specs} - {canonicalize_name(project["name"])}


def test_every_imported_package_is_declared():
    from importlib.metadata import packages_distributions

    from packaging.utils import canonicalize_name

    providers = packages_distributions()  # import name -> installed distributions (PIL -> pillow, yaml -> PyYAML)
    declared = _declared_distributions()
    undeclared = []
    for module, where in sorted(_imported_top_level_names().items()):
        if module in sys.stdlib_module_names or module == "hfgal":
            continue
        # An extra that is not installed here (gradio without the demo extra) is known by its import name only.
        distributions = {canonicalize_name(d) for d in providers.get(module, [module])}
        if not distributions & declared:
            undeclared.append(f"{module} (imported in {where}; provided by {', '.join(sorted(distributions))})")
    assert undeclared == [], "imported but not declared in pyproject.toml's dependencies or extras"


def test_declared_core_is_the_lean_inference_set():
    from packaging.requirements import Requirement

    core = {Requirement(spec).name for spec in PYPROJECT["project"]["dependencies"]}
    assert {"torch", "transformers", "huggingface_hub", "safetensors", "pillow"} <= core
    assert not core & {"datasets", "accelerate", "evaluate", "codecarbon", "timm", "gradio", "astropy"}


def test_citation_cff_is_valid_and_matches_the_package():
    citation = yaml.safe_load((REPO_ROOT / "CITATION.cff").read_text(encoding="utf-8"))
    assert isinstance(citation, dict) and citation["cff-version"].startswith("1.2")
    assert citation["title"].strip() and citation["authors"]
    assert citation["license"] == PYPROJECT["project"]["license"]
    assert str(citation["version"]) == PYPROJECT["project"]["version"]
