"""Python: call a function in a worker process with the run's context.

The function may take a `context` argument (or **kwargs) to receive ds, params, var, ...;
its return value, if not None, becomes the task's XCom `return_value` (it must be JSON).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from cronflow.flow import Task
from cronflow.templates import INTERNAL_NAMES, render


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
        spec: dict[str, Any] = {"callable": f"{getattr(self.fn, '__module__', '?')}.{name}"}
        # the templates among the arguments, for `cronflow check` (the worker renders the
        # flow file's own values)
        templates = {f"args[{i}]": a for i, a in enumerate(self.args) if isinstance(a, str)}
        templates |= {k: v for k, v in self.kwargs.items() if isinstance(v, str)}
        if any("{" in t for t in templates.values()):
            spec["arguments"] = templates
        return spec

    def execute(self, context: Mapping[str, Any]) -> Any:
        args = [_render(a, context) for a in self.args]
        kwargs = {k: _render(v, context) for k, v in self.kwargs.items()}
        if _accepts_context(self.fn):  # the task context, without the operators' plumbing
            kwargs["context"] = {k: v for k, v in context.items() if k not in INTERNAL_NAMES}
        return self.fn(*args, **kwargs)


def _render(value: Any, context: Mapping[str, Any]) -> Any:
    return render(value, context) if isinstance(value, str) else value


def _accepts_context(fn: Callable[..., Any]) -> bool:
    try:
        parameters = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == "context" or p.kind is p.VAR_KEYWORD for p in parameters)
