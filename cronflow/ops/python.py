"""Python: call a function in a worker process with the run's context; Branch and
ShortCircuit: a Python task whose return value decides which tasks after it run.

The function may take a `context` argument (or **kwargs) to receive ds, params, var, ...;
its return value, if not None, becomes the task's XCom `return_value` (it must be JSON).

A Branch returns the id (or a list of ids) of the direct downstream tasks to follow; a
ShortCircuit returns something true to go on, or false to stop. Each stores its decision as an
XCom (FOLLOWED_KEY, SHORT_CIRCUIT_KEY), always, even when empty, so a replayed try never leaves
an older decision behind; the daemon reads it once the task succeeds and skips the tasks it
ruled out (deps.branch_skips), whatever their trigger rule.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from cronflow.errors import CronflowError
from cronflow.flow import Task
from cronflow.templates import INTERNAL_NAMES, render

FOLLOWED_KEY = "followed"  # Branch: the direct downstream task ids it chose
SHORT_CIRCUIT_KEY = "short_circuit"  # ShortCircuit: whether the tasks after it run


class BranchError(CronflowError, ValueError):
    """A Branch returned something other than ids of its direct downstream tasks."""


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
        if self.map_over is not None and context.get("map_index", -1) >= 0:
            kwargs[self.map_arg] = context["item"]  # as Airflow's expand(arg=...) passes it
        if _accepts_context(self.fn):  # the task context, without the operators' plumbing
            kwargs["context"] = {k: v for k, v in context.items() if k not in INTERNAL_NAMES}
        return self.fn(*args, **kwargs)


class Branch(Python):
    """`Branch("pick", choose)`: `choose` returns the id, or a list of ids, of the direct
    downstream tasks to run (None or [] for none of them); the others are skipped, and what
    follows them obeys its trigger rule (Airflow's BranchPythonOperator, @task.branch)."""

    kind = "branch"

    def execute(self, context: Mapping[str, Any]) -> Any:
        result = super().execute(context)
        if result is not None and not isinstance(result, (str, list, tuple, set)):
            result = [result]  # named as the wrong one below
        chosen = [result] if isinstance(result, str) else list(result or [])
        downstream = sorted(
            t.task_id for t in self.flow.tasks.values() if self.task_id in t.upstream_ids
        )
        wrong = [c for c in chosen if not isinstance(c, str) or c not in downstream]
        if wrong:
            raise BranchError(
                f"branch '{self.task_id}' returned {result!r}: {wrong[0]!r} is not one of its "
                f"direct downstream tasks (known: {', '.join(downstream) or 'none'})"
            )
        context["xcom"].push(FOLLOWED_KEY, chosen)
        return result


class ShortCircuit(Python):
    """`ShortCircuit("any_files", has_files)`: when `has_files` returns something false, every
    task after it is skipped, whatever its trigger rule (Airflow's ShortCircuitOperator)."""

    kind = "short_circuit"

    def execute(self, context: Mapping[str, Any]) -> Any:
        result = super().execute(context)
        context["xcom"].push(SHORT_CIRCUIT_KEY, bool(result))
        return result


def _render(value: Any, context: Mapping[str, Any]) -> Any:
    return render(value, context) if isinstance(value, str) else value


def _accepts_context(fn: Callable[..., Any]) -> bool:
    try:
        parameters = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == "context" or p.kind is p.VAR_KEYWORD for p in parameters)
