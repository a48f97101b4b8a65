"""`python -m cronflow.worker`: runs one attempt of a Python-side task (not shell tasks).

The daemon starts it with the attempt's identity in the environment (CRONFLOW_HOME,
CRONFLOW_RUN_ID, CRONFLOW_TASK_ID, CRONFLOW_TRY_NUMBER); stdout and stderr are the attempt's log.
It imports the flow file, finds the task, calls its `execute(context)` and stores a non-None
return value as the task's XCom. Exit code 0 = success.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path

from cronflow.catalog import FlowSpec
from cronflow.config import load_settings
from cronflow.context import task_context
from cronflow.errors import CronflowError, NotFoundError
from cronflow.loader import import_flows
from cronflow.store import Store


def run_attempt(home: Path, run_id: int, task_id: str, try_number: int) -> int:
    settings = load_settings(home)
    store = Store(settings.db_path)
    run = store.run(run_id)
    row = store.flow(run["flow_id"])
    spec = FlowSpec.from_spec(json.loads(row["spec"]), row["path"])
    live = {f.flow_id: f for f in import_flows(Path(row["path"]))}
    if spec.flow_id not in live or task_id not in live[spec.flow_id].tasks:
        raise NotFoundError(f"{row['path']} no longer defines {spec.flow_id}.{task_id}")
    task = live[spec.flow_id].tasks[task_id]
    context = task_context(spec, spec.task(task_id), run, try_number, store)
    result = task.execute(context)  # type: ignore[attr-defined]
    if result is not None:
        try:
            store.push_xcom(run_id, task_id, "return_value", result)
        except TypeError as exc:
            raise CronflowError(f"the return value is not JSON-serialisable: {exc}") from None
    return 0


def main() -> int:
    env = os.environ
    try:
        return run_attempt(
            Path(env["CRONFLOW_HOME"]),
            int(env["CRONFLOW_RUN_ID"]),
            env["CRONFLOW_TASK_ID"],
            int(env["CRONFLOW_TRY_NUMBER"]),
        )
    except CronflowError as exc:
        print(f"cronflow: {exc}", file=sys.stderr)
        return 1
    except Exception:
        traceback.print_exc()
        return 1


if __name__ == "__main__":
    sys.exit(main())
