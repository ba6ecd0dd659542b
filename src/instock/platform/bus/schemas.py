"""JSON Schemas of every event type, generated from the event models (DESIGN.md §3).

Each schema (draft 2020-12) describes the whole CloudEvents 1.0 envelope of one type, its `data`
being the pydantic model's serialization schema. They are published under `docs/events/`
(`write_schemas`), checked for staleness (`check_schemas`), and `validate` checks an envelope
against its type's schema.

The registry is every `DomainEvent` subclass that declares its own `type` in one of the contexts'
EVENT_MODULES, so a new event type of a listed context needs no registration of its own.
"""

from __future__ import annotations

import importlib
import json
import re
from collections.abc import Iterator, Mapping
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema_rs
from jsonschema import Draft202012Validator, FormatChecker
from jsonschema.exceptions import best_match
from pydantic import ValidationError

from instock.platform.bus.envelope import DomainEvent

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
ID_BASE = "https://instock.dev/events/"
INDEX = "README.md"
# Names this module writes: `<context>.<name>.v<N>.json`.
SCHEMA_FILE = re.compile(r"^[a-z0-9_]+(\.[a-z0-9_]+)*\.v[0-9]+\.json$")


class InvalidEvent(ValueError):
    """An envelope does not match the schema of its type (or its type is unknown)."""

    def __init__(self, event_type: str | None, path: str, reason: str) -> None:
        super().__init__(f"invalid {event_type or 'event'} at {path}: {reason}")
        self.event_type, self.path, self.reason = event_type, path, reason


# ---------------------------------------------------------------------------------------------
# The registry


# The modules where contexts declare the events they publish. Listed, not discovered: other
# modules are called events.py too (a benchmark, the recommender's data types) and have no
# business being imported by a relay. tests/unit/test_event_schemas.py fails when a module under
# src/instock declares a DomainEvent and is missing here.
EVENT_MODULES = ("instock.catalog.events", "instock.inventory.events", "instock.waitlist.events",
                 "instock.orders.events", "instock.payments.events", "instock.channels.events",
                 "instock.webhooks.events", "instock.recommendations.events",
                 "instock.experiments.events", "instock.reconciliation.events",
                 "instock.customers.events", "instock.polls.events",
                 "instock.notifications.events", "instock.analytics.events",
                 "instock.drops.events")


def _subclasses(cls: type[DomainEvent]) -> Iterator[type[DomainEvent]]:
    for sub in cls.__subclasses__():
        yield sub
        yield from _subclasses(sub)


@cache
def event_types() -> dict[str, type[DomainEvent]]:
    """Event type name -> model, sorted by name."""
    for name in EVENT_MODULES:
        importlib.import_module(name)
    found: dict[str, type[DomainEvent]] = {}
    for cls in _subclasses(DomainEvent):
        if "type" not in cls.__dict__ or cls.__module__ not in EVENT_MODULES:
            continue  # an abstract base (no type of its own), or a test's stand-in
        if cls.type in found and found[cls.type] is not cls:
            raise TypeError(f"event type {cls.type} is declared by {found[cls.type].__name__} "
                            f"and {cls.__name__}")
        found[cls.type] = cls
    return dict(sorted(found.items()))


# ---------------------------------------------------------------------------------------------
# Schemas


def _has_sequence(cls: type[DomainEvent]) -> bool:
    return cls.sequence is not DomainEvent.sequence


def envelope_schema(cls: type[DomainEvent]) -> dict[str, Any]:
    """The schema of the whole envelope of one event type; `data` is the model's schema."""
    data = cls.model_json_schema(mode="serialization")
    definitions = data.pop("$defs", {})  # refs are "#/$defs/...": they resolve from the root
    required = ["specversion", "id", "source", "type", "subject", "time", "datacontenttype",
                "data"]
    if _has_sequence(cls):
        required.insert(required.index("data"), "sequence")
    schema: dict[str, Any] = {
        "$schema": SCHEMA_DIALECT,
        "$id": f"{ID_BASE}{cls.type}.json",
        "title": cls.type,
        "description": data.get("description", ""),
        "type": "object",
        "required": required,
        "properties": {
            "specversion": {"const": "1.0"},
            "id": {"type": "string", "format": "uuid", "description": "UUIDv7"},
            "source": {"type": "string", "minLength": 1, "format": "uri-reference"},
            "type": {"const": cls.type},
            "subject": {"type": "string", "minLength": 1,
                        "description": _subject_description(cls)},
            "time": {"type": "string", "format": "date-time"},
            "datacontenttype": {"const": "application/json"},
            "sequence": {"type": "integer", "minimum": 0,
                         "description": "the subject's version after the change; consumers "
                                        "ignore an event older than one already applied"},
            "correlationid": {"type": "string", "minLength": 1},
            "traceparent": {"type": "string",
                            "pattern": "^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$"},
            "data": data,
        },
        # Other CloudEvents extension attributes may be added on the way (names as the spec
        # allows them); `data` itself admits no undeclared member.
        "propertyNames": {"pattern": "^[a-z0-9]+$"},
    }
    if definitions:
        schema["$defs"] = definitions
    return schema


def _subject_description(cls: type[DomainEvent]) -> str:
    """The docstring of the model's `subject` property, e.g. "The SKU."."""
    doc = cls.subject.__doc__ if cls.subject is not DomainEvent.subject else None
    return " ".join((doc or "The aggregate the event is about.").split())


@cache
def schemas() -> dict[str, dict[str, Any]]:
    """Event type -> envelope schema, for every registered type."""
    return {name: envelope_schema(cls) for name, cls in event_types().items()}


def render(schema: Mapping[str, Any]) -> str:
    """Stable text: sorted keys, two-space indent, trailing newline."""
    return json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def render_index() -> str:
    lines = [
        "# Event types",
        "",
        "Generated from the event models by `instock events schemas` "
        "(`instock.platform.bus.schemas.write_schemas`); do not edit by hand. "
        "`instock events schemas --check` fails when a file is stale.",
        "",
        "Every event is a CloudEvents 1.0 JSON envelope (`specversion`, `id` (UUIDv7), "
        "`source`, `type`, `subject`, `time`, `datacontenttype`, `data`) with the extensions "
        "`sequence` (the subject's version after the change), `correlationid` and "
        "`traceparent`. Each file is the JSON Schema (draft 2020-12) of the whole envelope "
        "of one type.",
        "",
        "| type | subject | sequence | schema | description |",
        "|---|---|---|---|---|",
    ]
    for name, cls in event_types().items():
        schema = schemas()[name]
        sequence = "required" if "sequence" in schema["required"] else "none"
        description = " ".join(schema["description"].split())
        lines.append(f"| `{name}` | {_subject_description(cls)} | {sequence} | "
                     f"[{name}.json]({name}.json) | {description} |")
    return "\n".join(lines) + "\n"


def _documents() -> dict[str, str]:
    """File name -> content of everything `write_schemas` produces."""
    docs = {f"{name}.json": render(schema) for name, schema in schemas().items()}
    docs[INDEX] = render_index()
    return docs


def write_schemas(directory: Path | str) -> list[Path]:
    """Write one schema per event type and the index; remove schema files of types that no
    longer exist. Returns the paths written."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    docs = _documents()
    for obsolete in _schema_files(directory) - docs.keys():
        (directory / obsolete).unlink()
    written = []
    for name, text in docs.items():
        path = directory / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


def check_schemas(directory: Path | str) -> list[str]:
    """Names of files in `directory` that differ from what the models generate: changed,
    missing, or schemas of types that no longer exist. Empty when all are current."""
    directory = Path(directory)
    docs = _documents()
    stale = [name for name, text in docs.items()
             if not (directory / name).is_file()
             or (directory / name).read_text(encoding="utf-8") != text]
    return sorted([*stale, *(_schema_files(directory) - docs.keys())])


def _schema_files(directory: Path) -> set[str]:
    if not directory.is_dir():
        return set()
    return {p.name for p in directory.iterdir() if p.is_file() and SCHEMA_FILE.match(p.name)}


# ---------------------------------------------------------------------------------------------
# Validation

_formats = FormatChecker()


@_formats.checks("date-time", raises=ValueError)
def _is_date_time(value: object) -> bool:
    """RFC 3339 with an offset (the house writes UTC); without the optional
    rfc3339-validator package jsonschema would not check date-times at all."""
    if not isinstance(value, str):
        return True  # not a string: the `type` keyword reports it
    if "T" not in value.upper():
        return False
    return datetime.fromisoformat(value).tzinfo is not None


def _is_date_time_compiled(value: str) -> bool:
    try:
        return _is_date_time(value)
    except ValueError:
        return False


@cache
def _validator(event_type: str) -> Draft202012Validator:
    return Draft202012Validator(schemas()[event_type], format_checker=_formats)


@cache
def _compiled(event_type: str) -> jsonschema_rs.Draft202012Validator:
    """The same schema compiled (jsonschema-rs): ~100x faster on the happy path, which is
    every event the relay and each consumer check. Its format checks are as strict as ours or
    stricter (`uri-reference`), so a valid answer is trusted and an invalid one is explained
    (or overruled) by the reference validator."""
    return jsonschema_rs.Draft202012Validator(
        schemas()[event_type], validate_formats=True,
        formats={"date-time": _is_date_time_compiled})


def validate(envelope: object) -> None:
    """Raise InvalidEvent naming the first problem's JSON path unless `envelope` matches the
    schema of its `type`."""
    if not isinstance(envelope, Mapping):
        raise InvalidEvent(None, "$", "an envelope must be a JSON object")
    event_type = envelope.get("type")
    if not isinstance(event_type, str) or event_type not in event_types():
        raise InvalidEvent(None, "$.type", f"unknown event type {event_type!r}")
    if _compiled(event_type).is_valid(envelope):
        return
    error = best_match(_validator(event_type).iter_errors(envelope))
    if error is not None:
        raise InvalidEvent(event_type, error.json_path, error.message)


def validate_model(envelope: Mapping[str, Any]) -> None:
    """The cheap check for hot paths (each API process's live hub): the event's `data` against
    the model its schema is generated from, ~3 µs instead of ~200 µs. The relay and durable
    consumers run the full `validate`."""
    event_type = envelope.get("type")
    model = event_types().get(event_type) if isinstance(event_type, str) else None
    if model is None:
        raise InvalidEvent(None, "$.type", f"unknown event type {event_type!r}")
    try:
        model.model_validate(envelope.get("data"))
    except ValidationError as exc:
        first = exc.errors()[0]
        path = "$.data" + "".join(f".{part}" for part in first["loc"])
        raise InvalidEvent(event_type, path, first["msg"]) from exc
