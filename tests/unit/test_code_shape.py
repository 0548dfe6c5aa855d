"""No function in operator/ is longer than MAX_LINES lines or takes more than MAX_PARAMS
parameters without a reason written next to it (issue 18): a long function hides its phases,
a wide one hides which inputs belong together.

A reason is a comment `# shape: <why>` on the line of the `def` or on the line right above
it (above the first decorator, for a decorated function).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "operator" / "svcaudit"
MAX_LINES = 80  # the def line to the last line of the body; decorators not counted
MAX_PARAMS = 8  # every parameter (*args and **kwargs too) but self and cls
REASON = re.compile(r"#\s*shape:\s*\S")

Function = ast.FunctionDef | ast.AsyncFunctionDef


def parameters(node: Function) -> list[str]:
    a = node.args
    names = [p.arg for p in (*a.posonlyargs, *a.args, *a.kwonlyargs)]
    names += [p.arg for p in (a.vararg, a.kwarg) if p is not None]
    return [n for n in names if n not in ("self", "cls")]


def excused(node: Function, lines: list[str]) -> bool:
    """Whether a `# shape:` reason sits on the def line or the line above the function."""
    first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
    candidates = {node.lineno, node.lineno - 1, first - 1}
    return any(1 <= n <= len(lines) and REASON.search(lines[n - 1]) for n in candidates)


def offenders(source: str, name: str) -> list[str]:
    """One line per function of `source` over a limit with no written reason."""
    lines = source.splitlines()
    out: list[str] = []
    for node in ast.walk(ast.parse(source, name)):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        assert node.end_lineno is not None
        length = node.end_lineno - node.lineno + 1
        width = len(parameters(node))
        if (length > MAX_LINES or width > MAX_PARAMS) and not excused(node, lines):
            out.append(f"{name}:{node.lineno} {node.name}: {length} lines, {width} parameters")
    return out


def test_no_function_is_too_long_or_too_wide_without_a_reason() -> None:
    found = [
        line
        for path in sorted(PACKAGE.rglob("*.py"))
        for line in offenders(path.read_text(), str(path.relative_to(REPO)))
    ]
    assert not found, (
        f"over {MAX_LINES} lines or {MAX_PARAMS} parameters, with no `# shape: <reason>` "
        "next to the def:\n" + "\n".join(found)
    )


def _function(params: int, body_lines: int, comment: str = "", decorated: bool = False) -> str:
    names = ", ".join(f"p{i}" for i in range(params))
    head = [comment] if comment else []
    head += ["@decorator"] if decorated else []
    return "\n".join([*head, f"def f(self, {names}):", *["    x = 1"] * body_lines]) + "\n"


def test_the_limits_and_the_reasons() -> None:
    assert offenders(_function(MAX_PARAMS, MAX_LINES - 1), "ok") == []
    [long] = offenders(_function(1, MAX_LINES), "long")
    assert long == f"long:1 f: {MAX_LINES + 1} lines, 1 parameters"
    [wide] = offenders(_function(MAX_PARAMS + 1, 1), "wide")
    assert wide.endswith(f"{MAX_PARAMS + 1} parameters")  # self is not counted
    excuse = "# shape: mirrors the API's fields one to one"
    assert offenders(_function(MAX_PARAMS + 1, MAX_LINES, excuse), "x") == []
    assert offenders(_function(MAX_PARAMS + 1, 1, excuse, decorated=True), "x") == []
    assert offenders(_function(MAX_PARAMS + 1, 1, "# shape:"), "x") != []  # no reason given
    same_line = _function(MAX_PARAMS + 1, 1).replace("):", "):  # shape: a reason")
    assert offenders(same_line, "x") == []
    star = ast.parse("def g(*args, **kwargs):\n    pass\n").body[0]
    assert isinstance(star, ast.FunctionDef)
    assert parameters(star) == ["args", "kwargs"]
