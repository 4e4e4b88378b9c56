"""The house style, checked on every CI run: ruff's lint rules and formatter (pyproject.toml: 120 columns) over
the package, tests, benchmarks and scripts, and snakefmt over the Snakefile and its rules. A failure prints the
offending files; `ruff format . && ruff check --fix . && snakefmt Snakefile workflow/rules` mends most of it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE_FILES = ["Snakefile", "workflow/rules"]


def tool(name: str) -> str:
    """The console script ``name`` of this Python's environment (installed by ``pip install -e '.[test]'``)."""
    path = Path(sys.executable).parent / name
    found = str(path) if path.is_file() else shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: `pip install -e '.[test]'` installs it")
    return found


def run(*cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)


def test_ruff_lint_is_clean():
    out = run(tool("ruff"), "check", "--output-format", "concise", ".")
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]


def test_python_files_are_formatted():
    out = run(tool("ruff"), "format", "--check", ".")
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]


def test_snakemake_files_are_formatted():
    out = run(tool("snakefmt"), "--check", *SNAKEMAKE_FILES)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]


MAX_MODULE_LINES = 400


def test_no_module_of_the_package_is_over_400_lines():
    """Small modules with one job each: a module that grows past this is split (issue 15)."""
    long = {
        str(p.relative_to(REPO)): n
        for p in (REPO / "repro").rglob("*.py")
        if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert not long, f"modules over {MAX_MODULE_LINES} lines: {long}"
