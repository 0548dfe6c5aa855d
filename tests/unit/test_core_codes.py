"""The code catalogue is stable, well-formed and fully documented."""

from __future__ import annotations

import re
from pathlib import Path

from svcaudit.core.codes import CATALOGUE, Aspect

DOC = Path(__file__).resolve().parents[2] / "docs" / "discrepancies.md"


def test_codes_well_formed_and_reasons_unique() -> None:
    for code, info in CATALOGUE.items():
        assert code == info.code
        assert re.fullmatch(r"SVA-(EP|ENV|DNS)-\d{3}", code)
        prefix = {"EP": Aspect.ENDPOINTS, "ENV": Aspect.ENVIRONMENT, "DNS": Aspect.DNS}
        assert info.aspect is prefix[code.split("-")[1]]
        assert re.fullmatch(r"[A-Z][A-Za-z]+", info.reason)
        assert info.hint and info.meaning and info.cause
    reasons = [i.reason for i in CATALOGUE.values()]
    assert len(reasons) == len(set(reasons))


def test_every_code_documented_with_reason_and_severity() -> None:
    text = DOC.read_text(encoding="utf-8")
    for info in CATALOGUE.values():
        row = next((ln for ln in text.splitlines() if f"`{info.code}`" in ln), "")
        assert info.reason in row and f"| {info.severity} |" in row, info.code
