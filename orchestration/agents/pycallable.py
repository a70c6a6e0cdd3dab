"""An executor that calls a Python function: ORCH_EXECUTOR="package.module:function" (or
"package.module.function"; "package.module:Class" instantiates the class and calls its
``execute`` method, or the instance itself).

The callable receives the TaskContext. An ExecutionResult it returns is used as is; a mapping
becomes the output; anything else is wrapped as {"result": value}. Values are made JSON-safe.
Any exception becomes ExecutionFailed with the exception's text.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Mapping
from typing import Any, cast

from orchestration.agents.base import (
    AgentConfigError,
    ExecutionFailed,
    ExecutionResult,
    TaskContext,
    jsonable,
)

TaskFunction = Callable[[TaskContext], Any]


def _import(module_name: str) -> Any:
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if module_name == missing or module_name.startswith(missing + "."):
            return None  # this module itself does not exist
        raise AgentConfigError(f"importing {module_name!r} failed: {exc}") from exc
    except Exception as exc:  # any import-time error is a configuration error
        raise AgentConfigError(
            f"importing {module_name!r} failed: {type(exc).__name__}: {exc}"
        ) from exc


def load_callable(spec: str) -> TaskFunction:
    """The callable a dotted path names; AgentConfigError saying what is wrong otherwise."""
    text = (spec or "").strip()
    if ":" in text:
        module_name, _, attribute = text.partition(":")
        candidates = [(module_name, attribute)]
    else:
        parts = text.split(".")
        candidates = [
            (".".join(parts[:i]), ".".join(parts[i:])) for i in range(len(parts) - 1, 0, -1)
        ]
    candidates = [(m.strip(), a.strip()) for m, a in candidates if m.strip() and a.strip()]
    if not candidates:
        raise AgentConfigError(
            f"ORCH_EXECUTOR={spec!r} is not a dotted path to a callable "
            "(use 'package.module:function')"
        )
    for module_name, attribute in candidates:
        module = _import(module_name)
        if module is None:
            continue
        target: Any = module
        for name in attribute.split("."):
            if not hasattr(target, name):
                raise AgentConfigError(
                    f"ORCH_EXECUTOR={spec!r}: {module_name!r} has no attribute {attribute!r}"
                )
            target = getattr(target, name)
        return _as_function(target, spec)
    raise AgentConfigError(f"ORCH_EXECUTOR={spec!r}: no module {candidates[0][0]!r} to import")


def _as_function(target: Any, spec: str) -> TaskFunction:
    if inspect.isclass(target):
        try:
            target = target()
        except Exception as exc:
            raise AgentConfigError(
                f"ORCH_EXECUTOR={spec!r}: cannot instantiate {target.__name__}: {exc}"
            ) from exc
    if inspect.isroutine(target):
        return cast(TaskFunction, target)
    execute = getattr(target, "execute", None)
    if callable(execute):
        return cast(TaskFunction, execute)
    if callable(target):
        return cast(TaskFunction, target)
    raise AgentConfigError(f"ORCH_EXECUTOR={spec!r} names {type(target).__name__}, not a callable")


class CallableExecutor:
    def __init__(self, function: TaskFunction, name: str | None = None) -> None:
        self.function = function
        self.name = name or getattr(function, "__qualname__", repr(function))

    @classmethod
    def from_spec(cls, spec: str) -> CallableExecutor:
        return cls(load_callable(spec), spec.strip())

    def execute(self, ctx: TaskContext) -> ExecutionResult:
        try:
            value = self.function(ctx)
        except ExecutionFailed:
            raise
        except Exception as exc:  # whatever the function raises fails the task
            text = str(exc) or type(exc).__name__
            raise ExecutionFailed(f"{type(exc).__name__}: {text}") from exc
        if isinstance(value, ExecutionResult):
            return value
        if isinstance(value, Mapping):
            return ExecutionResult(output=jsonable(value))
        return ExecutionResult(output={"result": jsonable(value)})
