"""The README and the documentation site, checked statically (fast, offline, no MkDocs needed; CI also runs the real
`mkdocs build --strict`): a short README whose two set-up commands are what CI runs, a navigation whose pages exist,
relative links and anchors that resolve, README results that match the pages they cite, and user docs that describe
the product rather than the history of its development."""

from __future__ import annotations

import re
import shlex
import unicodedata
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
SETUP_HEADING = "## Set up and run (fresh machine)"

# Lab-notebook phrasing: user docs state current behaviour and dated measurements, not the story of a session.
NOTEBOOK_PHRASES = [
    r"\btoday\b",
    r"\byesterday\b",
    r"\bnow\b",
    r"\bthis VM\b",
    r"\bthis session\b",
    r"\bthe old default\b",
    r"\bused to\b",
    r"\bno longer\b",
    r"\bnot met\b",
    r"\bthe issue (?:that )?(?:found|measured)\b",
]

_FENCE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", re.M | re.S)
_LINK = re.compile(r"(?<!!)\[(?:[^\]\[]|\[[^\]]*\])*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def user_docs() -> list[Path]:
    return [README, *sorted(DOCS.rglob("*.md"))]


def prose(text: str) -> str:
    """Markdown without fenced code blocks and inline code, where commands may say anything."""
    return re.sub(r"`[^`\n]*`", "", _FENCE.sub("", text))


def section(text: str, heading: str) -> str:
    """The body of a `## ` section: from its heading to the next heading of level 1 or 2."""
    start = text.index(heading + "\n") + len(heading) + 1
    following = re.search(r"^#{1,2} ", text[start:], re.M)
    return text[start : start + following.start()] if following else text[start:]


def slugify(heading: str) -> str:
    """The anchor Python-Markdown's toc extension (MkDocs) and GitHub give a heading, for the headings used here."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).replace("`", "")
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    text = re.sub(r"[^\w\s-]", "", text).strip().lower()
    return re.sub(r"[-\s]+", "-", text)


def anchors(path: Path) -> set[str]:
    headings = re.findall(r"^#{1,6}\s+(.+?)\s*#*\s*$", _FENCE.sub("", path.read_text()), re.M)
    return {slugify(h) for h in headings}


def relative_links(path: Path) -> list[str]:
    return [t for t in _LINK.findall(prose(path.read_text())) if not re.match(r"[a-z][a-z0-9+.-]*:", t)]


def nav_pages(nav) -> list[str]:
    if isinstance(nav, str):
        return [nav]
    if isinstance(nav, list):
        return [page for item in nav for page in nav_pages(item)]
    if isinstance(nav, dict):
        return [page for value in nav.values() for page in nav_pages(value)]
    return []


def mkdocs_config() -> dict:
    # mkdocs.yml may use YAML tags (`!!python/name:`) for extensions; the static checks need only plain keys.
    class Loader(yaml.SafeLoader):
        pass

    Loader.add_multi_constructor("", lambda loader, suffix, node: None)
    return yaml.load((ROOT / "mkdocs.yml").read_text(), Loader=Loader)


def test_readme_is_short():
    lines = README.read_text().splitlines()
    assert len(lines) <= 200, f"README.md has {len(lines)} lines; move detail into docs/ (at most 200)"


def setup_blocks() -> list[tuple[str, str]]:
    """(language, code) of every fenced block under the README's set-up heading."""
    body = section(README.read_text(), SETUP_HEADING)
    return [(lang, code.strip()) for lang, code in re.findall(r"^```(\w*)\n(.*?)^```", body, re.M | re.S)]


def test_readme_has_exactly_two_setup_commands_and_ci_runs_the_test_one():
    blocks = setup_blocks()
    assert [lang for lang, _ in blocks] == ["bash", "bash"], f"want two bash blocks under {SETUP_HEADING!r}"
    commands = [code for _, code in blocks]
    assert all("\n" not in c for c in commands), "each set-up command is one line a user can paste"
    install_and_run, install_and_test = commands

    # The first command names files of this repository: they must exist in a fresh clone.
    words = shlex.split(install_and_run)
    assert words[:3] == ["pip", "install", "-e"] and "accelerate" in words
    for word in words:
        if word.endswith((".py", ".yaml")):
            assert (ROOT / word).is_file(), f"the first set-up command names {word}, which does not exist"

    # CI runs the second command (pip's -q aside, which only quiets the log).
    ci_lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    ci_test = [line for line in ci_lines if "pytest" in line and not line.startswith("#")]
    assert len(ci_test) == 1, ".ci/run should run the test suite in exactly one line"
    assert _without_pip_quiet(ci_test[0]) == _without_pip_quiet(install_and_test)


def _without_pip_quiet(command: str) -> str:
    """The command with `pip install -q` read as `pip install` (other `-q` flags, e.g. pytest's, are kept)."""
    parts = [shlex.split(p) for p in command.split("&&")]
    parts = [[w for w in p if not (p[:2] == ["pip", "install"] and w == "-q")] for p in parts]
    return " && ".join(shlex.join(p) for p in parts)


def test_install_page_gives_the_same_two_commands():
    install = (DOCS / "install.md").read_text()
    for _, command in setup_blocks():
        assert command in install, f"docs/install.md should give the README's set-up command {command!r}"


def test_every_page_in_the_nav_exists():
    config = mkdocs_config()
    assert config.get("strict") is True, "mkdocs.yml builds strictly (broken links and references fail)"
    pages = nav_pages(config["nav"])
    assert pages and len(pages) == len(set(pages))
    missing = [p for p in pages if not (DOCS / p).is_file()]
    assert not missing, f"pages named in mkdocs.yml's nav but missing under docs/: {missing}"
    orphans = sorted(str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md") if str(p.relative_to(DOCS)) not in pages)
    assert not orphans, f"pages under docs/ that the nav does not list: {orphans}"


def test_api_pages_name_modules_that_exist():
    for page in sorted((DOCS / "api").glob("*.md")):
        for target in re.findall(r"^::: ([\w.]+)", page.read_text(), re.M):
            parts = target.split(".")
            # A module (hfgal/x/y.py or a package) or an object of one: some prefix of the path is a module file.
            prefixes = [ROOT.joinpath(*parts[:n]) for n in range(len(parts), 0, -1)]
            found = any(p.with_suffix(".py").is_file() or (p / "__init__.py").is_file() for p in prefixes)
            assert found, f"{page.name}: ::: {target} names no module of the repository"


@pytest.mark.parametrize("path", user_docs(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_lab_notebook_phrases(path):
    text = prose(path.read_text())
    found = [m.group(0) for pattern in NOTEBOOK_PHRASES for m in re.finditer(pattern, text, re.I)]
    assert not found, f"{path.relative_to(ROOT)} reads like a lab notebook ({found}): state the current behaviour"


@pytest.mark.parametrize("path", user_docs(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_and_anchors_resolve(path):
    broken = []
    for target in relative_links(path):
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        if not dest.exists():
            broken.append(f"{target} (no such file)")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target} (no heading #{anchor} in {dest.relative_to(ROOT)})")
        elif path.is_relative_to(DOCS) and not dest.is_relative_to(DOCS):
            broken.append(f"{target} (outside docs/: the site cannot link it)")
    assert not broken, f"{path.relative_to(ROOT)}: broken links {broken}"


def test_readme_results_match_the_pages_they_cite():
    """Each README result row repeats figures that live, with their command, machine and date, on the page it
    links: the numbers must be the same there, so the two can never disagree."""
    body = section(README.read_text(), "## Results")
    rows = [r for r in body.splitlines() if r.startswith("|") and "](docs/" in r]
    assert rows, "the README's results table links each row to the page that holds its figures"
    for row in rows:
        target = re.search(r"\]\((docs/[^)#]+)", row).group(1)
        page = (ROOT / target).read_text()
        figures = re.findall(r"\d[\d,.]*(?:[–-]\d[\d,.]*)*", re.sub(r"\]\([^)]*\)", "]", row))
        absent = [f for f in figures if f.rstrip(".,") not in page]
        assert not absent, f"README result row cites {target} but {absent} are not there: {row}"
