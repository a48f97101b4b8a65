"""`python -m cronflow.worker`: runs one attempt of a Python-side task (not shell tasks).

The daemon starts it with the attempt's identity in the environment (CRONFLOW_HOME,
CRONFLOW_RUN_ID, CRONFLOW_TASK_ID, CRONFLOW_TRY_NUMBER); stdout and stderr are the attempt's log.
It imports the flow file, finds the task, calls its `execute(context)` and stores a non-None
return value as the task's XCom. Exit code 0 = success, 1 = failure; 75 and 99 ask for
up_for_reschedule and skipped (see cronflow.outcomes). Before it exits it writes why to the store:
a cronflow error's message, or "Type: message" for any other exception. All output goes through a Masker, so
secret values show as *** in the log (see cronflow.masking).
"""

from __future__ import annotations

import io
import json
import logging
import os
import sys
import traceback
from collections.abc import Mapping
from pathlib import Path

from cronflow.catalog import FlowSpec
from cronflow.config import load_settings
from cronflow.context import task_context
from cronflow.errors import CronflowError, NotFoundError
from cronflow.loader import import_flows
from cronflow.logs import TaskLogFormatter, zone_from_env
from cronflow.mapping import split_id
from cronflow.masking import Masker, masked_output, secret_values
from cronflow.outcomes import EXIT_RESCHEDULE, EXIT_SKIPPED, Reschedule, SkipTask, one_line
from cronflow.states import TaskState
from cronflow.store import Store
from cronflow.xcom import RETURN_VALUE, XCOM_HISTORY_ENV


def run_attempt(home: Path, run_id: int, task_id: str, try_number: int) -> int:
    settings = load_settings(home)
    store = Store(settings.db_path)
    run = store.run(run_id)
    row = store.flow(run["flow_id"])
    spec = FlowSpec.from_spec(json.loads(row["spec"]), row["path"])
    live = {f.flow_id: f for f in import_flows(Path(row["path"]))}
    base, map_index = split_id(task_id)  # a mapped instance: task[3]
    if spec.flow_id not in live or base not in live[spec.flow_id].tasks:
        raise NotFoundError(f"{row['path']} no longer defines {spec.flow_id}.{base}")
    task = live[spec.flow_id].tasks[base]
    context = task_context(spec, spec.task(task_id), run, try_number, store, map_index)
    context["xcom"].max_bytes = settings.xcom_max_bytes
    if os.environ.get(XCOM_HISTORY_ENV):  # `cronflow test`: other runs are in the home's store
        context["xcom"].history = Store(Path(os.environ[XCOM_HISTORY_ENV]))
    context.update(store=store, settings=settings)
    try:
        result = task.execute(context)  # type: ignore[attr-defined]
    except SystemExit as exc:
        if exc.code in (0, None):
            return 0
        raise CronflowError(f"the task called sys.exit({exc.code!r})") from None
    if result is not None:
        context["xcom"].push(RETURN_VALUE, result)
    return 0


def _outcome(home: Path, run_id: int, task_id: str, try_number: int) -> int:
    """Run the attempt and turn how it ended into the worker's exit code."""
    try:
        return run_attempt(home, run_id, task_id, try_number)
    except Reschedule as exc:
        logging.getLogger("cronflow.sensor").info("%s", exc)
        _record_reason(home, run_id, task_id, try_number, str(exc))
        return EXIT_RESCHEDULE
    except SkipTask as exc:
        logging.getLogger("cronflow.task").info("skipped: %s", exc)
        _record_reason(home, run_id, task_id, try_number, f"skipped: {exc}")
        return EXIT_SKIPPED


def _record_reason(home: Path, run_id: int, task_id: str, try_number: int, reason: str) -> None:
    """The reason `cronflow tasks` shows for a skip, a reschedule or a failure: masked like the
    log, one line."""
    settings = load_settings(home)
    store = Store(settings.db_path)
    try:
        masker = Masker(secret_values(store, settings))
        store.update_ti(
            run_id,
            task_id,
            expect_state=TaskState.RUNNING,
            expect_try=try_number,
            reason=one_line(masker.mask(reason)),
        )
    finally:
        store.close()


def _masker(home: Path) -> Masker:
    settings = load_settings(home)
    store = Store(settings.db_path)
    try:
        return Masker(secret_values(store, settings))
    finally:
        store.close()


def _configure_logging() -> None:
    """Operators log with `logging`; each record is one line in the task log, stamped in the
    flow's timezone like cronflow's own lines."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        TaskLogFormatter(
            "[%(asctime)s] %(levelname)s %(name)s: %(message)s", zone_from_env(os.environ)
        )
    )
    logging.root.handlers[:] = [handler]
    logging.root.setLevel(logging.INFO)
    logging.getLogger("paramiko").setLevel(logging.WARNING)
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(line_buffering=True)  # `cronflow logs -f` sees prints at once


def main() -> int:
    for stream in (sys.stdout, sys.stderr):
        # Text with no UTF-8 form (a lone surrogate) prints as \udXXX instead of raising. Done
        # first: once masked_output has put a pipe under fd 1, the change would seek it.
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(errors="backslashreplace")
    env = os.environ
    home = Path(env["CRONFLOW_HOME"])
    try:
        masker = _masker(home)
    except CronflowError as exc:
        print(f"cronflow: {exc}", file=sys.stderr)
        return 1
    with masked_output(masker) as loss:
        _configure_logging()
        code = _guarded(home, env)
    loss.report()
    return code


def _guarded(home: Path, env: Mapping[str, str]) -> int:
    run_id, task_id = int(env["CRONFLOW_RUN_ID"]), env["CRONFLOW_TASK_ID"]
    try_number = int(env["CRONFLOW_TRY_NUMBER"])
    try:
        return _outcome(home, run_id, task_id, try_number)
    except CronflowError as exc:  # cronflow's own errors are already the words a user needs
        print(f"cronflow: {exc}", file=sys.stderr)
        reason = str(exc) or type(exc).__name__
    except Exception as exc:  # the task's own: "RuntimeError: bad header"
        traceback.print_exc()
        reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    try:
        _record_reason(home, run_id, task_id, try_number, reason)
    except Exception as exc:  # the daemon then shows the exit code and the log's last line
        print(f"cronflow: the reason could not be recorded: {exc}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
