"""Weft step helper for Python: write a step as a plain function.

Shipped with the template (templates/python/); copy it along unchanged. A step is::

    import weft_step
    from weft_step import StepError, log

    def run(input: dict, ctx: weft_step.Context) -> dict:
        log.info(f"attempt {ctx.attempt}")
        if "name" not in input:
            raise StepError("invalid_input", "`name` is required")
        return {"greeting": f"Hello, {input['name']}!"}

    # The component's entry point: componentize-py looks for `WitWorld` in app.py.
    WitWorld = weft_step.export(run, name="my-step", version="0.1.0", description="...")

The contract (wit/step.wit, `weft:step@1.0.0`) passes JSON text both ways; this module decodes
the input, encodes the output and turns exceptions into the WIT `step-error`:

- ``StepError(code, message, retryable=False)``: that code, message and retryable flag;
- any other exception: code ``internal_error`` (not retryable), its traceback logged;
- an output that is not JSON (a set, NaN, ...): code ``invalid_output``.

Logging: ``log.info("...")`` (also ``trace``, ``debug``, ``warn``, ``error``) writes to the
engine's log, tagged with the run and step; so does the standard ``logging`` module (a handler
is installed on the root logger). Only while a step runs: not at import time, when the build
pre-initialises the module. ``print`` goes to the sandbox's captured stdout.
"""

from __future__ import annotations

import json
import logging
import traceback
from dataclasses import dataclass
from typing import Any, Callable, Optional

import wit_world
from componentize_py_types import Err
from wit_world.imports import host, types

__all__ = ["Context", "StepError", "export", "log"]


class StepError(Exception):
    """A step failure: a stable machine-readable ``code``, a message, and whether the engine may
    retry the step (``retryable=True``: a transient problem, such as an unavailable service)."""

    def __init__(self, code: str, message: str, retryable: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retryable = retryable

    def __repr__(self) -> str:
        return (
            f"StepError({self.code!r}, {self.message!r}, retryable={self.retryable!r})"
        )


@dataclass(frozen=True)
class Context:
    """Who is calling: the run, the step within it, and the attempt (1-based)."""

    run_id: str
    step_id: str
    attempt: int


class _Log:
    """``log.info("text")``: a line in the engine's log."""

    def trace(self, message: str) -> None:
        host.log(host.LogLevel.TRACE, str(message))

    def debug(self, message: str) -> None:
        host.log(host.LogLevel.DEBUG, str(message))

    def info(self, message: str) -> None:
        host.log(host.LogLevel.INFO, str(message))

    def warn(self, message: str) -> None:
        host.log(host.LogLevel.WARN, str(message))

    def error(self, message: str) -> None:
        host.log(host.LogLevel.ERROR, str(message))


log = _Log()


class _HostHandler(logging.Handler):
    """Forwards ``logging`` records to the engine's log."""

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.ERROR:
            level = host.LogLevel.ERROR
        elif record.levelno >= logging.WARNING:
            level = host.LogLevel.WARN
        elif record.levelno >= logging.INFO:
            level = host.LogLevel.INFO
        else:
            level = host.LogLevel.DEBUG
        try:
            host.log(level, self.format(record))
        except Exception:  # noqa: BLE001 - logging must never fail the step
            pass


logging.getLogger().addHandler(_HostHandler())
logging.getLogger().setLevel(logging.DEBUG)


def _error(code: str, message: str, retryable: bool = False) -> Err:
    return Err(types.StepError(message=message, code=code, retryable=retryable))


def export(
    run: Callable[[Any, Context], Any],
    *,
    name: str,
    version: str,
    description: str = "",
    input_schema: Optional[dict] = None,
    output_schema: Optional[dict] = None,
) -> type:
    """The ``WitWorld`` class that implements the step world with ``run(input, ctx) -> output``.

    ``input`` is the decoded JSON input (a dict for the usual object input); the returned value is
    encoded as JSON. The schemas (JSON Schema, as dicts) are what ``describe`` reports; the engine
    does not enforce them: check the input in ``run``.
    """
    description_record = types.StepDescription(
        name=name,
        version=version,
        description=description,
        input_schema=json.dumps(
            input_schema if input_schema is not None else {"type": "object"}
        ),
        output_schema=json.dumps(
            output_schema if output_schema is not None else {"type": "object"}
        ),
    )

    class WitWorld(wit_world.WitWorld):
        def describe(self) -> types.StepDescription:
            return description_record

        def run(self, ctx: types.StepContext, input: str) -> str:
            try:
                value = json.loads(input)
            except (ValueError, RecursionError) as e:
                raise _error("invalid_input", f"the input is not JSON: {e}")
            context = Context(run_id=ctx.run_id, step_id=ctx.step_id, attempt=ctx.attempt)
            try:
                output = run(value, context)
            except StepError as e:
                raise _error(str(e.code), str(e.message), bool(e.retryable))
            except Exception as e:  # noqa: BLE001 - every failure becomes a step-error
                log.error(traceback.format_exc())
                raise _error("internal_error", f"{type(e).__name__}: {e}")
            try:
                return json.dumps(output, ensure_ascii=False, allow_nan=False)
            except (TypeError, ValueError, RecursionError) as e:
                raise _error("invalid_output", f"the output is not JSON: {e}")

    return WitWorld
