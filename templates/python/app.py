"""py-hello: a Weft step in Python. `{"name": "Ada"}` -> `{"greeting": "Hello, Ada!"}`.

Start here: change `run`, the schemas and the description. `weft_step.py` is the helper that
turns `run` into the component's `describe`/`run` exports; leave it as it is.
"""

import weft_step
from weft_step import StepError, log

INPUT_SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "minLength": 1},
        "simulateOutage": {"type": "boolean"},
    },
    "required": ["name"],
    "additionalProperties": False,
}

OUTPUT_SCHEMA = {
    "type": "object",
    "properties": {"greeting": {"type": "string"}},
    "required": ["greeting"],
}


def run(input: dict, ctx: weft_step.Context) -> dict:
    if not isinstance(input, dict):
        raise StepError("invalid_input", "the input must be an object")
    unknown = sorted(set(input) - set(INPUT_SCHEMA["properties"]))
    if unknown:
        raise StepError("invalid_input", f"unknown fields: {', '.join(unknown)}")
    name = input.get("name")
    if not isinstance(name, str) or not name.strip():
        raise StepError("invalid_input", "`name` must be a non-empty string")
    if input.get("simulateOutage"):
        # A transient failure: the engine may retry the step (with backoff).
        raise StepError("unavailable", "simulated outage, try again", retryable=True)
    log.info(f"greeting {name!r} (run {ctx.run_id}, attempt {ctx.attempt})")
    return {"greeting": f"Hello, {name.strip()}!"}


# The component's entry point: componentize-py looks for `WitWorld` in app.py.
WitWorld = weft_step.export(
    run,
    name="py-hello",
    version="0.1.0",
    description="Greets `name` (a template to start Python steps from).",
    input_schema=INPUT_SCHEMA,
    output_schema=OUTPUT_SCHEMA,
)
