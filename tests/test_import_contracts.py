"""The import contracts in pyproject.toml ([tool.importlinter], run by `make lint`) fail on a wrong-way import.

`make lint` proves the real tree keeps them; these tests prove each contract can fail: a small project with
the same package names is checked with the same contracts, once clean and once per wrong-way import.
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _contracts_section() -> str:
    """The [tool.importlinter] tables of pyproject.toml, verbatim."""
    lines = (ROOT / "pyproject.toml").read_text().splitlines()
    kept: list[str] = []
    inside = False
    for line in lines:
        if line.startswith("["):
            inside = line.lstrip("[").startswith("tool.importlinter")
        if inside:
            kept.append(line)
    return "\n".join(kept) + "\n"


def _project(tmp_path: Path) -> Path:
    """Every module the contracts name, empty, plus a dispatch module that imports Celery as allowed."""
    config = tomllib.loads(_contracts_section())["tool"]["importlinter"]
    modules = set(config["root_packages"])
    for contract in config["contracts"]:
        for key in ("source_modules", "forbidden_modules"):
            modules.update(m for m in contract.get(key, []) if m.split(".")[0] in config["root_packages"])
    for module in sorted(modules):
        package = tmp_path.joinpath(*module.split("."))
        package.mkdir(parents=True, exist_ok=True)
        (package / "__init__.py").touch()
    (tmp_path / "radiology" / "dispatch" / "__init__.py").write_text("from celery import current_app\n")
    (tmp_path / "pyproject.toml").write_text(_contracts_section())
    return tmp_path


def _lint(project: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"],
        cwd=project,
        env={"PYTHONPATH": str(project), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_contracts_hold_on_a_project_without_wrong_way_imports(tmp_path: Path) -> None:
    result = _lint(_project(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "import_line", "contract_id"),
    [
        ("classifier", "import django\n", "classifier-standalone"),
        ("classifier", "import radiology.models\n", "classifier-standalone"),
        ("radiology.dispatch", "import worker\n", "radiology-not-worker"),
        ("radiology.views", "from celery import shared_task\n", "celery-through-dispatch"),
        ("worker", "import radiology.api\n", "worker-not-web"),
        ("radiology.services", "import radiology.views\n", "core-not-web"),
    ],
)
def test_a_wrong_way_import_breaks_its_contract(
    tmp_path: Path, module: str, import_line: str, contract_id: str
) -> None:
    project = _project(tmp_path)
    init = project.joinpath(*module.split(".")) / "__init__.py"
    init.write_text(init.read_text() + import_line)
    result = _lint(project)
    assert result.returncode == 1, result.stdout + result.stderr
    contracts = tomllib.loads(_contracts_section())["tool"]["importlinter"]["contracts"]
    names = {c["id"]: c["name"] for c in contracts}
    report = " ".join(result.stdout.split())  # contract names wrap in the report
    assert f"{names[contract_id]} BROKEN" in report, result.stdout
    assert report.count(" BROKEN") == 1, result.stdout  # only that one


def test_an_indirect_wrong_way_import_is_caught(tmp_path: Path) -> None:
    """services -> views -> worker: the chain breaks both the layering and the worker contract."""
    project = _project(tmp_path)
    (project / "radiology" / "services" / "__init__.py").write_text("import radiology.views\n")
    (project / "radiology" / "views" / "__init__.py").write_text("import worker\n")
    report = " ".join(_lint(project).stdout.split())
    assert "radiology never imports the worker or the settings package BROKEN" in report
    assert "models, services, selectors and ingest never import the web or API layers BROKEN" in report
