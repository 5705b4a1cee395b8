"""py-normalize: validates and normalises a record (rules in README.md).

`{"record": {"First Name": "  Ada  ", "email": "ADA@Example.org"}}`
-> `{"record": {"first_name": "Ada", "email": "ada@example.org"}, "changed": [...]}` with a schema
saying that `email` is an email; problems -> error `validation_failed` listing them all.
"""

import weft_step
from normalize import TYPES, Invalid, InvalidInput, normalize, summary
from weft_step import StepError, log

RULE_SCHEMA = {
    "type": "object",
    "properties": {
        "type": {"enum": list(TYPES)},
        "required": {"type": "boolean"},
        "default": {},
        "enum": {"type": "array", "minItems": 1},
        "min": {"type": "number"},
        "max": {"type": "number"},
        "pattern": {"type": "string"},
        "case": {"enum": ["lower", "upper", "title"]},
    },
    "additionalProperties": False,
}

INPUT_SCHEMA = {
    "type": "object",
    "properties": {
        "record": {"type": "object", "description": "The record to normalise."},
        "schema": {
            "type": "object",
            "description": "Optional rules per field (by normalised name).",
            "properties": {
                "fields": {"type": "object", "additionalProperties": RULE_SCHEMA},
                "unknown": {"enum": ["keep", "drop", "reject"]},
            },
            "additionalProperties": False,
        },
    },
    "required": ["record"],
    "additionalProperties": False,
}

OUTPUT_SCHEMA = {
    "type": "object",
    "properties": {
        "record": {"type": "object"},
        "changed": {
            "type": "array",
            "items": {"type": "string"},
            "description": "JSON pointers (in the output record) of what was changed.",
        },
    },
    "required": ["record", "changed"],
}


def run(input: dict, ctx: weft_step.Context) -> dict:
    if not isinstance(input, dict):
        raise StepError("invalid_input", "the input must be an object")
    unknown = sorted(set(input) - {"record", "schema"})
    if unknown:
        raise StepError("invalid_input", f"unknown input fields: {', '.join(unknown)}")
    if "record" not in input:
        raise StepError("invalid_input", "`record` is required")
    try:
        record, changed = normalize(input["record"], input.get("schema"))
    except InvalidInput as e:
        raise StepError("invalid_input", summary(e.problems))
    except Invalid as e:
        log.warn(f"record refused: {summary(e.problems)}")
        raise StepError("validation_failed", f"the record has {summary(e.problems)}")
    log.info(f"normalised {len(record)} fields, {len(changed)} changed")
    return {"record": record, "changed": changed}


# The component's entry point: componentize-py looks for `WitWorld` in app.py.
WitWorld = weft_step.export(
    run,
    name="py-normalize",
    version="0.1.0",
    description="Validates and normalises a record: snake_case keys, clean strings, typed fields.",
    input_schema=INPUT_SCHEMA,
    output_schema=OUTPUT_SCHEMA,
)
