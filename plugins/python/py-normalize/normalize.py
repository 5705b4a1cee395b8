"""Record normalisation and validation, pure Python (no Weft imports: testable anywhere).

``normalize(record, schema)`` returns ``(record, changed)``: the normalised record and the JSON
pointers of what changed, or raises ``Invalid`` with every problem of the record found, or
``InvalidInput`` when the schema (or the record's shape) is wrong. The rules are in README.md.
"""

from __future__ import annotations

import datetime
import math
import re
import unicodedata
from typing import Any, Optional

TYPES = ("any", "string", "integer", "number", "boolean", "email", "date", "object", "array")
RULE_KEYS = {"type", "required", "default", "enum", "min", "max", "pattern", "case"}
CASES = ("lower", "upper", "title")
UNKNOWN_POLICIES = ("keep", "drop", "reject")

_TRUE = {"true", "yes", "y", "on", "1"}
_FALSE = {"false", "no", "n", "off", "0"}
_INTEGER = re.compile(r"[+-]?\d+")
_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")
_EMAIL = re.compile(r"[^@\s]+@[^@\s.]+(\.[^@\s.]+)+")
# (pattern, group of the year, month, day): YYYY-MM-DD, YYYY/MM/DD, DD.MM.YYYY.
_DATES = (
    (re.compile(r"(\d{4})-(\d{1,2})-(\d{1,2})"), (1, 2, 3)),
    (re.compile(r"(\d{4})/(\d{1,2})/(\d{1,2})"), (1, 2, 3)),
    (re.compile(r"(\d{1,2})\.(\d{1,2})\.(\d{4})"), (3, 2, 1)),
)
_MAX_DEPTH = 64


class Invalid(Exception):
    """Problems, each ``(path, message)``; ``path`` is a JSON pointer."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        super().__init__(summary(problems))
        self.problems = problems


class InvalidInput(Invalid):
    """The schema or the record's shape is wrong (paths from the input: ``/schema/...``)."""


def summary(problems: list[tuple[str, str]], limit: int = 20) -> str:
    shown = "; ".join(f"{path or '/'}: {message}" for path, message in problems[:limit])
    more = f"; and {len(problems) - limit} more" if len(problems) > limit else ""
    count = f"{len(problems)} problem{'s' if len(problems) != 1 else ''}"
    return f"{count}: {shown}{more}"


def snake_case(key: str) -> str:
    """``"First Name"``, ``"firstName"``, ``"first-name"`` -> ``"first_name"``."""
    key = unicodedata.normalize("NFC", key).strip()
    key = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", key)
    key = re.sub(r"([a-z\d])([A-Z])", r"\1_\2", key)
    key = re.sub(r"[\W_]+", "_", key)
    return key.strip("_").lower()


def pointer(path: str, key: str) -> str:
    return f"{path}/{key.replace('~', '~0').replace('/', '~1')}"


def clean_string(text: str) -> Optional[str]:
    """NFC, trimmed, inner whitespace collapsed to one space; ``None`` when nothing is left."""
    text = re.sub(r"\s+", " ", unicodedata.normalize("NFC", text)).strip()
    return text or None


def clean(value: Any, path: str, changed: list[str], problems: list, depth: int = 0) -> Any:
    """Keys to snake_case, strings cleaned, at every depth."""
    if depth > _MAX_DEPTH:
        problems.append((path, f"nested deeper than {_MAX_DEPTH} levels"))
        return value
    if isinstance(value, str):
        cleaned = clean_string(value)
        if cleaned != value:
            changed.append(path)
        return cleaned
    if isinstance(value, list):
        return [clean(v, f"{path}/{i}", changed, problems, depth + 1) for i, v in enumerate(value)]
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        originals: dict[str, str] = {}
        for key, item in value.items():
            new_key = snake_case(key)
            if not new_key:
                problems.append((pointer(path, key), "the key has no letters or digits"))
                continue
            if new_key in out:
                problems.append(
                    (pointer(path, new_key), f"both {originals[new_key]!r} and {key!r} become {new_key!r}")
                )
                continue
            originals[new_key] = key
            item_path = pointer(path, new_key)
            if new_key != key:
                changed.append(item_path)
            out[new_key] = clean(item, item_path, changed, problems, depth + 1)
        return out
    return value


def check_schema(schema: Any) -> tuple[dict, str]:
    """The schema's fields and unknown-field policy, or ``InvalidInput``."""
    problems: list[tuple[str, str]] = []
    if not isinstance(schema, dict):
        raise InvalidInput([("/schema", "must be an object")])
    for key in sorted(set(schema) - {"fields", "unknown"}):
        problems.append((pointer("/schema", key), "unknown schema key (fields, unknown)"))
    unknown = schema.get("unknown", "keep")
    if unknown not in UNKNOWN_POLICIES:
        problems.append(("/schema/unknown", f"must be one of {', '.join(UNKNOWN_POLICIES)}"))
    fields = schema.get("fields", {})
    if not isinstance(fields, dict):
        problems.append(("/schema/fields", "must be an object"))
        fields = {}
    for name, rule in fields.items():
        at = pointer("/schema/fields", name)
        if not isinstance(rule, dict):
            problems.append((at, "must be an object"))
            continue
        for key in sorted(set(rule) - RULE_KEYS):
            problems.append((pointer(at, key), f"unknown rule ({', '.join(sorted(RULE_KEYS))})"))
        if rule.get("type", "any") not in TYPES:
            problems.append((f"{at}/type", f"must be one of {', '.join(TYPES)}"))
        if not isinstance(rule.get("required", False), bool):
            problems.append((f"{at}/required", "must be true or false"))
        for bound in ("min", "max"):
            if bound in rule and not _is_number(rule[bound]):
                problems.append((f"{at}/{bound}", "must be a number"))
        if "enum" in rule and (not isinstance(rule["enum"], list) or not rule["enum"]):
            problems.append((f"{at}/enum", "must be a non-empty array"))
        if "case" in rule and rule["case"] not in CASES:
            problems.append((f"{at}/case", f"must be one of {', '.join(CASES)}"))
        if "pattern" in rule:
            try:
                re.compile(rule["pattern"])
            except (re.error, TypeError) as e:
                problems.append((f"{at}/pattern", f"not a regular expression: {e}"))
    if problems:
        raise InvalidInput(problems)
    return fields, unknown


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def coerce(kind: str, value: Any) -> tuple[Any, Optional[str]]:
    """``value`` as ``kind``, or a problem."""
    if kind == "any":
        return value, None
    if kind == "string":
        if isinstance(value, str):
            return value, None
        if _is_number(value):
            return (str(value) if isinstance(value, int) else repr(value)), None
        return value, "must be a string"
    if kind == "integer":
        if isinstance(value, int) and not isinstance(value, bool):
            return value, None
        if isinstance(value, float) and math.isfinite(value) and value.is_integer():
            return int(value), None
        if isinstance(value, str) and _INTEGER.fullmatch(value):
            return int(value), None
        return value, "must be an integer"
    if kind == "number":
        if _is_number(value):
            return value, None
        if isinstance(value, str) and _NUMBER.fullmatch(value):
            number = int(value) if _INTEGER.fullmatch(value) else float(value)
            if _is_number(number):
                return number, None
        return value, "must be a number"
    if kind == "boolean":
        if isinstance(value, bool):
            return value, None
        if isinstance(value, int) and value in (0, 1):
            return bool(value), None
        if isinstance(value, str) and value.lower() in _TRUE | _FALSE:
            return value.lower() in _TRUE, None
        return value, "must be a boolean (true/false, yes/no, on/off, 1/0)"
    if kind == "email":
        if isinstance(value, str) and _EMAIL.fullmatch(value):
            return value.lower(), None
        return value, "must be an email address"
    if kind == "date":
        # Not `datetime.strptime`: it imports `_strptime` lazily, which the component lacks.
        for pattern, (y, m, d) in _DATES if isinstance(value, str) else ():
            match = pattern.fullmatch(value)
            if match:
                try:
                    date = datetime.date(int(match[y]), int(match[m]), int(match[d]))
                except ValueError:
                    break
                return date.isoformat(), None
        return value, "must be a date (YYYY-MM-DD, YYYY/MM/DD or DD.MM.YYYY)"
    if kind == "object":
        return value, None if isinstance(value, dict) else "must be an object"
    if kind == "array":
        return value, None if isinstance(value, list) else "must be an array"
    raise AssertionError(kind)


def apply_rule(rule: dict, value: Any) -> tuple[Any, Optional[str]]:
    """``value`` checked and converted by one field's rule, or a problem."""
    value, problem = coerce(rule.get("type", "any"), value)
    if problem:
        return value, problem
    case = rule.get("case")
    if case and isinstance(value, str):
        value = {"lower": str.lower, "upper": str.upper, "title": str.title}[case](value)
    if "enum" in rule:
        allowed = rule["enum"]
        match = next((a for a in allowed if a == value and type(a) is type(value)), None)
        if match is None and isinstance(value, str):
            match = next(
                (a for a in allowed if isinstance(a, str) and a.casefold() == value.casefold()),
                None,
            )
        if match is None:
            return value, f"must be one of {', '.join(map(repr, allowed))}"
        value = match
    if "min" in rule or "max" in rule:
        size: Any = None
        if isinstance(value, str):
            size, unit = len(value), " characters"
        elif isinstance(value, list):
            size, unit = len(value), " items"
        elif _is_number(value):
            size, unit = value, ""
        if size is not None:
            if "min" in rule and size < rule["min"]:
                return value, f"must be at least {rule['min']}{unit} (got {size})"
            if "max" in rule and size > rule["max"]:
                return value, f"must be at most {rule['max']}{unit} (got {size})"
    if "pattern" in rule and isinstance(value, str) and not re.fullmatch(rule["pattern"], value):
        return value, f"must match {rule['pattern']!r}"
    return value, None


def normalize(record: Any, schema: Any = None) -> tuple[dict, list[str]]:
    if not isinstance(record, dict):
        raise InvalidInput([("/record", "must be an object")])
    fields, unknown = check_schema(schema) if schema is not None else ({}, "keep")
    changed: list[str] = []
    problems: list[tuple[str, str]] = []
    out = clean(record, "", changed, problems)
    if schema is not None:
        result: dict[str, Any] = {}
        for key, value in out.items():
            if key in fields:
                continue
            if unknown == "reject":
                problems.append((pointer("", key), "unknown field"))
            elif unknown == "drop":
                changed.append(pointer("", key))
            else:
                result[key] = value
        for key, rule in fields.items():
            path = pointer("", key)
            value = out.get(key)
            if value is None:
                if "default" in rule:
                    result[key] = rule["default"]
                    changed.append(path)
                elif rule.get("required", False):
                    problems.append((path, "is required"))
                elif key in out:
                    result[key] = None
                continue
            new_value, problem = apply_rule(rule, value)
            if problem:
                problems.append((path, problem))
                continue
            if new_value != value or type(new_value) is not type(value):
                changed.append(path)
            result[key] = new_value
        # The record's own order, fields added by a default at the end.
        order = list(out) + [k for k in result if k not in out]
        out = {k: result[k] for k in order if k in result}
    if problems:
        raise Invalid(problems)
    return out, sorted(set(changed))
