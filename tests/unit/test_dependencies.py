"""Every third-party module the operator imports is a declared dependency (pyproject.toml):
an undeclared one works only as long as another package happens to pull it in."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "operator" / "svcaudit"
# import name -> distribution name, where they differ
DISTRIBUTION = {"yaml": "pyyaml", "dns": "dnspython", "prometheus_client": "prometheus-client"}


def imported_top_levels() -> set[str]:
    names: set[str] = set()
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names


def declared() -> set[str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return {re.split(r"[<>=!~\[ ;]", d, maxsplit=1)[0].lower() for d in project["dependencies"]}


def test_every_imported_module_is_declared() -> None:
    third_party = imported_top_levels() - set(sys.stdlib_module_names) - {"svcaudit", "__future__"}
    assert third_party, "the walk found no import at all"
    missing = {m for m in third_party if DISTRIBUTION.get(m, m).lower() not in declared()}
    assert missing == set(), f"imported but not in pyproject's dependencies: {sorted(missing)}"
