"""What the observability tests share: where the rules, their tests and the dashboards are, and
the PromQL expressions they hold."""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
OBSERVABILITY = ROOT / "deploy" / "observability"
RULES = OBSERVABILITY / "prometheus" / "rules"
RULE_TESTS = OBSERVABILITY / "prometheus" / "tests"
DASHBOARDS = OBSERVABILITY / "grafana" / "dashboards"
INSTALL_HINT = ("`make test` installs it (Debian packages prometheus, prometheus-alertmanager): "
                "apt-get install -y prometheus prometheus-alertmanager")


def tool(name: str, *candidates: str) -> str:
    """The path of a Prometheus tool; fails (never skips: `make test` installs them)."""
    for candidate in (name, *candidates):
        found = shutil.which(candidate)
        if found:
            return found
    raise AssertionError(f"{name} is not installed; {INSTALL_HINT}")


def rule_files() -> list[Path]:
    return sorted(RULES.glob("*.yml"))


def rules() -> list[dict[str, Any]]:
    """Every rule (recording and alerting) of every rule file."""
    return [rule for path in rule_files()
            for group in yaml.safe_load(path.read_text())["groups"]
            for rule in group["rules"]]


def alert_rules() -> list[dict[str, Any]]:
    return [rule for rule in rules() if "alert" in rule]


@dataclass(frozen=True)
class Expression:
    where: str  # "dashboard drop.json, panel 'X' A" or "rule InstockDown"
    expr: str


# Grafana's variables, as the dashboards' default choices would have them.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "1h"}


def grafana_to_promql(expr: str, variables: dict[str, str]) -> str:
    for name, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(name, value)
    for name in variables:  # a multi-value "All" variable matches anything
        expr = re.sub(rf"\$\{{{name}(:[a-z]+)?\}}|\${name}\b", ".*", expr)
    assert "$" not in expr, f"a Grafana variable left unsubstituted: {expr}"
    return expr


def dashboard_expressions() -> list[Expression]:
    found = []
    for path in sorted(DASHBOARDS.glob("*.json")):
        board = json.loads(path.read_text())
        variables = {v["name"]: v for v in board.get("templating", {}).get("list", [])}
        for panel in board["panels"]:
            for target in panel.get("targets", []):
                found.append(Expression(
                    f"dashboard {path.name}, panel {panel['title']!r} {target['refId']}",
                    grafana_to_promql(target["expr"], variables)))
    return found


_TOP_LEVEL_SET_OPERATOR = re.compile(r"\s+(and|unless)\s+")
_TRAILING_THRESHOLD = re.compile(
    r"\s*(==|!=|>=|<=|>|<)\s*(bool\s+)?[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?\s*$")


def _top_level_split(expr: str) -> list[str]:
    """`a and b unless c` -> [a, b, c], splitting only outside brackets and strings."""
    parts, depth, start, quote, i = [], 0, 0, "", 0
    while i < len(expr):
        char = expr[i]
        if quote:
            quote = "" if char == quote and expr[i - 1] != "\\" else quote
        elif char in "\"'`":
            quote = char
        elif char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        elif depth == 0:
            match = _TOP_LEVEL_SET_OPERATOR.match(expr, i)
            if match:
                parts.append(expr[start:i])
                start = i = match.end()
                continue
        i += 1
    parts.append(expr[start:])
    return [part.strip() for part in parts]


def alert_signals(expr: str) -> list[str]:
    """The series an alert's expression is built from, its thresholds taken off.

    An alert's expression returns nothing while all is well (that is the point), so the real-
    Prometheus test cannot ask it for series. What it can ask is that every signal the alert
    compares exists: each operand of a top-level `and`/`unless`, with its trailing comparison
    against a number (`> 0.05`) removed. The rules are written in that shape (a check in the
    promtool tests keeps them so).
    """
    signals = []
    for part in _top_level_split(expr):
        signal = _TRAILING_THRESHOLD.sub("", part)
        if signal == part:
            raise ValueError(f"no threshold to take off {part!r} (of {expr!r})")
        signals.append(signal)
    return signals


def rule_expressions() -> list[Expression]:
    found = []
    for rule in rules():
        if "record" in rule:
            found.append(Expression(f"recording rule {rule['record']}", rule["expr"]))
        else:
            found += [Expression(f"alert {rule['alert']} (signal {i + 1})", signal)
                      for i, signal in enumerate(alert_signals(rule["expr"]))]
    return found
