"""Message templates (Jinja2): per reason a subject line, a text body and, for email, an HTML
body (autoescaped). A brand's own directory (settings) overrides the packaged ones by name.
Undefined variables are errors: a broken template dead-letters its notification before
anything is sent, instead of mailing a half-rendered message."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2


class TemplateFailed(Exception):
    """A template is missing or does not render; the message says which and why."""


@dataclass(frozen=True)
class Rendered:
    subject: str
    text: str
    html: str | None


class Templates:
    def __init__(self, override_dir: Path | None = None) -> None:
        loaders: list[jinja2.BaseLoader] = [
            jinja2.PackageLoader("instock.notifications", "templates")]
        if override_dir is not None:
            loaders.insert(0, jinja2.FileSystemLoader(str(override_dir)))
        self.env = jinja2.Environment(
            loader=jinja2.ChoiceLoader(loaders), undefined=jinja2.StrictUndefined,
            autoescape=jinja2.select_autoescape(enabled_extensions=("html",),
                                                default_for_string=False, default=False),
            keep_trailing_newline=True)

    def render(self, reason: str, channel: str, context: dict[str, Any]) -> Rendered:
        """Everything a message needs, rendered in full before any of it is sent."""
        try:
            subject = self._one(f"{reason}.subject.txt", context).strip()
            text = self._one(f"{reason}.txt", context)
            html = self._one(f"{reason}.html", context) if channel == "email" else None
        except jinja2.TemplateError as exc:
            raise TemplateFailed(f"template for {reason}: {type(exc).__name__}: {exc}") from exc
        return Rendered(" ".join(subject.split()), text, html)

    def _one(self, name: str, context: dict[str, Any]) -> str:
        return self.env.get_template(name).render(**context)
