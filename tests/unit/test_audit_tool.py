"""`make audit`'s judgement (tools/audit.py) on pip-audit's JSON report: what fails it, what an
accepted exception lets through, and until when."""

from __future__ import annotations

import importlib.util
import sys
from datetime import date
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("audit_tool", ROOT / "tools" / "audit.py")
assert _spec is not None and _spec.loader is not None
audit = importlib.util.module_from_spec(_spec)
sys.modules["audit_tool"] = audit
_spec.loader.exec_module(audit)

REPORT: dict[str, Any] = {"dependencies": [
    {"name": "fastapi", "version": "0.1", "vulns": []},
    {"name": "jinja2", "version": "3.0", "vulns": [
        {"id": "PYSEC-1", "aliases": ["CVE-1", "GHSA-x"], "fix_versions": ["3.1"]}]},
    {"name": "offline-one", "skip_reason": "Dependency not found on PyPI"},
]}


def test_an_unaccepted_vulnerability_fails_the_audit() -> None:
    verdict = audit.judge(REPORT, {}, date(2026, 12, 6))
    assert verdict.audited == 2
    assert [(f.package, f.vulnerability) for f in verdict.unaccepted] == [("jinja2", "PYSEC-1")]


def test_an_exception_accepts_by_id_or_alias_until_its_date() -> None:
    by_alias = audit.exceptions('[[exception]]\nid = "GHSA-x"\npackage = "jinja2"\n'
                                'reason = "not reached"\nexpires = 2026-12-31\n')
    assert audit.judge(REPORT, by_alias, date(2026, 12, 31)).unaccepted == []
    late = audit.judge(REPORT, by_alias, date(2027, 1, 1))
    assert [f.vulnerability for f in late.unaccepted] == ["PYSEC-1"]
    assert late.expired == ["PYSEC-1"]


def test_an_exception_must_say_why_and_until_when() -> None:
    with pytest.raises(ValueError, match="reason"):
        audit.exceptions('[[exception]]\nid = "X"\npackage = "p"\nexpires = 2027-01-01\n')
    with pytest.raises(ValueError, match="date"):
        audit.exceptions('[[exception]]\nid = "X"\npackage = "p"\nreason = "r"\n'
                         'expires = "soon"\n')


def test_the_repository_exceptions_file_parses() -> None:
    audit.exceptions((ROOT / "security" / "audit-exceptions.toml").read_text())


def test_nothing_audited_is_told_apart_from_a_pass() -> None:
    verdict = audit.judge({"dependencies": [REPORT["dependencies"][2]]}, {}, date.today())
    assert verdict.audited == 0 and verdict.unaccepted == []
