"""`make audit`: the locked dependency tree against the known vulnerabilities (pip-audit).

Fails (exit 1) on any known vulnerability that `security/audit-exceptions.toml` does not accept,
or accepts only until a date that has passed. When the vulnerability database cannot be reached
(this machine's CI cannot), it says so and exits 3: nothing was audited, which is neither a pass
nor a vulnerability. `.ci/run` does not call it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "requirements.lock"
EXCEPTIONS = ROOT / "security" / "audit-exceptions.toml"
OFFLINE = 3


@dataclass(frozen=True)
class Finding:
    package: str
    version: str
    vulnerability: str
    aliases: tuple[str, ...]
    fixed_in: tuple[str, ...]


@dataclass(frozen=True)
class Verdict:
    audited: int  # packages pip-audit could look up
    unaccepted: list[Finding]
    accepted: list[Finding]
    expired: list[str]  # exceptions whose date has passed (their findings are unaccepted)


def exceptions(text: str) -> dict[str, date]:
    """Accepted vulnerability id (or alias) -> the last day it is accepted."""
    accepted: dict[str, date] = {}
    for entry in tomllib.loads(text).get("exception", []):
        for key in ("id", "package", "reason", "expires"):
            if key not in entry:
                raise ValueError(f"an exception needs {key}: {entry}")
        if not isinstance(entry["expires"], date):
            raise ValueError(f"expires must be a date (YYYY-MM-DD): {entry}")
        accepted[str(entry["id"])] = entry["expires"]
    return accepted


def judge(report: dict[str, Any], accepted: dict[str, date], today: date) -> Verdict:
    findings, audited = [], 0
    for dependency in report.get("dependencies", []):
        if "skip_reason" in dependency:
            continue
        audited += 1
        for vuln in dependency.get("vulns", []):
            findings.append(Finding(dependency["name"], dependency.get("version", "?"),
                                    vuln["id"], tuple(vuln.get("aliases", [])),
                                    tuple(vuln.get("fix_versions", []))))
    ok, bad, expired = [], [], set()
    for finding in findings:
        dates = [accepted[i] for i in (finding.vulnerability, *finding.aliases) if i in accepted]
        if dates and max(dates) >= today:
            ok.append(finding)
        else:
            bad.append(finding)
            if dates:
                expired.add(finding.vulnerability)
    return Verdict(audited, bad, ok, sorted(expired))


def main() -> int:
    run = subprocess.run(  # noqa: S603 - our own tool, fixed arguments
        [str(Path(sys.executable).parent / "pip-audit"), "-r", str(LOCK), "--require-hashes",
         "--disable-pip", "--vulnerability-service", "pypi", "--progress-spinner", "off",
         "--format", "json", "--timeout", "10"],
        capture_output=True, text=True, check=False)
    try:
        report = json.loads(run.stdout)
    except json.JSONDecodeError:
        print(run.stderr.strip() or run.stdout.strip(), file=sys.stderr)
        return OFFLINE if "connect" in run.stderr.lower() else 2
    verdict = judge(report, exceptions(EXCEPTIONS.read_text()), date.today())
    if verdict.audited == 0:
        print("audit: the vulnerability database (PyPI's JSON API) could not be reached: no "
              "package was audited. Run `make audit` where pypi.org answers.", file=sys.stderr)
        return OFFLINE
    for finding in verdict.accepted:
        print(f"accepted: {finding.package} {finding.version} {finding.vulnerability}")
    for finding in verdict.unaccepted:
        fixed = ", ".join(finding.fixed_in) or "no fix yet"
        print(f"VULNERABLE: {finding.package} {finding.version} {finding.vulnerability} "
              f"(fixed in: {fixed})")
    for expired in verdict.expired:
        print(f"expired exception: {expired} (renew it with a reason, or upgrade)")
    print(f"audit: {verdict.audited} packages audited, {len(verdict.unaccepted)} vulnerable, "
          f"{len(verdict.accepted)} accepted")
    return 1 if verdict.unaccepted else 0


if __name__ == "__main__":
    sys.exit(main())
