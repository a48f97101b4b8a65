"""Python: call a function in a worker process with the run's context.

The function may take a `context` argument (or **kwargs) to receive ds, params, var, ...;
its return value, if not None, becomes the task's XCom `return_value` (it must be JSON).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from cronflow.flow import Task
from cronflow.templates import render


class Python(Task):
    """`Python("load", load_day, kwargs={"day": "{{ ds }}"})`."""

    kind = "python"

    def __init__(
        self,
        task_id: str,
        fn: Callable[..., Any],
        *,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        **task_args: Any,
    ) -> None:
        super().__init__(task_id, **task_args)
        if not callable(fn):  # reported with the task's other bad options by spec()
            self.bad_options.append(f"{fn!r} is not callable")
        self.fn = fn
        self.args = list(args)
        self.kwargs = dict(kwargs or {})

    def op_spec(self) -> dict[str, Any]:
        name = getattr(self.fn, "__qualname__", repr(self.fn))
        return {"callable": f"{getattr(self.fn, '__module__', '?')}.{name}"}

    def execute(self, context: Mapping[str, Any]) -> Any:
        args = [_render(a, context) for a in self.args]
        kwargs = {k: _render(v, context) for k, v in self.kwargs.items()}
        if _accepts_context(self.fn):
            kwargs["context"] = context
        return self.fn(*args, **kwargs)


def _render(value: Any, context: Mapping[str, Any]) -> Any:
    return render(value, context) if isinstance(value, str) else value


def _accepts_context(fn: Callable[..., Any]) -> bool:
    try:
        parameters = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == "context" or p.kind is p.VAR_KEYWORD for p in parameters)
