"""Sensors: tasks that wait for a condition, poking it every `poke_interval` until `timeout`.

    FileSensor("wait_file", "/data/in/{{ ds_nodash }}_*.csv", poke_interval="1m", timeout="6h")
    FileSensor("wait_remote", "/out/{{ ds }}.csv", conn_id="station", mode="reschedule")

- `timeout` is how long the sensor waits in all, counted from its first poke (across
  reschedules); then it fails, or with `soft_fail=True` ends as skipped.
- `mode="poke"` (the default) keeps its slot and sleeps between pokes. `mode="reschedule"` ends
  the attempt after each unsuccessful poke (the worker exits 75, see cronflow.outcomes): the task
  instance waits in up_for_reschedule without holding a slot, the daemon starts it again after
  `poke_interval`, and the try is not counted. Use it for long waits.
- The attempt itself is stopped if it outlives the wait (timeout + poke_interval + a minute; in
  reschedule mode a single poke gets at most POKE_LIMIT_S): a hung network poke cannot hold a
  slot forever.
- What a satisfied poke returns is the task's XCom (FileSensor: the matched paths).
- A server that cannot be reached now (connection refused, no answer, a host name that does not
  resolve: cronflow.ops.network) makes an unsuccessful poke, logged with its reason, in both
  modes: an offline station is "not yet" until the timeout. Any other error (a refused login, an
  unknown host key, an unknown connection) fails the try at once with its reason.

Subclasses implement `poke(context)`: a falsy value while the condition does not hold (setting
`self.status` to say what was seen), else the XCom value (True for none).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from cronflow.errors import CronflowError
from cronflow.flow import Task
from cronflow.ops.network import UnreachableError
from cronflow.outcomes import Reschedule, SensorTimeoutError, SkipTask
from cronflow.templates import render
from cronflow.timeparse import from_iso, parse_duration

log = logging.getLogger("cronflow.sensor")

MODES = ("poke", "reschedule")
DEFAULT_TIMEOUT_S = 7 * 86400.0
POKE_LIMIT_S = 600.0


class Sensor(Task):
    """Base of every sensor: poke_interval, timeout, mode, soft_fail."""

    kind = "sensor"

    def __init__(
        self,
        task_id: str,
        *,
        poke_interval: float | str = 60.0,
        timeout: float | str = DEFAULT_TIMEOUT_S,
        mode: str = "poke",
        soft_fail: bool = False,
        **task_args: Any,
    ) -> None:
        super().__init__(task_id, **task_args)
        if mode not in MODES:  # reported with the task's other bad options by spec()
            self.bad_options.append(f"mode must be 'poke' or 'reschedule', got {mode!r}")
        self.poke_interval_s = self._duration(poke_interval, "poke_interval", 60.0)
        self.wait_timeout_s = self._duration(timeout, "timeout", DEFAULT_TIMEOUT_S)
        self.mode = mode
        self.soft_fail = bool(soft_fail)
        limit = self.wait_timeout_s + self.poke_interval_s + 60.0
        if mode == "reschedule":
            limit = min(limit, POKE_LIMIT_S)
        self._own["timeout"] = limit  # the attempt's own limit, see the module docstring
        self.status = ""

    def _duration(self, value: float | str, what: str, fallback: float) -> float:
        try:
            return parse_duration(value, what)
        except CronflowError as exc:
            self.bad_options.append(str(exc))
            return fallback

    def op_spec(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "poke_interval_s": self.poke_interval_s,
            "timeout_s": self.wait_timeout_s,
            "soft_fail": self.soft_fail,
            **self.sensor_spec(),
        }

    def sensor_spec(self) -> dict[str, Any]:
        return {}

    def poke(self, context: Mapping[str, Any]) -> Any:
        raise NotImplementedError

    def execute(self, context: Mapping[str, Any]) -> Any:
        now = datetime.now(UTC)
        first = now
        if self.mode == "reschedule":
            stamp = context["store"].first_poke_at(context["run_id"], context["task_id"], now)
            first = from_iso(stamp) or now
        deadline = first + timedelta(seconds=self.wait_timeout_s)
        while True:
            try:
                value = self.poke(context)
            except UnreachableError as exc:  # an offline station: "not yet", not a failure
                self.status, value = str(exc), None
            if value:
                log.info("satisfied: %s", self.status or "condition met")
                return None if value is True else value
            now = datetime.now(UTC)
            waited = (now - first).total_seconds()
            if now >= deadline:
                message = f"{self.status or 'not satisfied'}; gave up after {waited:.0f}s (timeout)"
                if self.soft_fail:
                    raise SkipTask(message)
                raise SensorTimeoutError(message)
            next_at = min(now + timedelta(seconds=self.poke_interval_s), deadline)
            if self.mode == "reschedule":
                # the daemon adds when the next poke is (now + poke_interval, on its clock)
                raise Reschedule(f"not yet: {self.status or 'not satisfied'}", next_at)
            log.info(
                "not yet: %s; next poke in %.0fs", self.status, (next_at - now).total_seconds()
            )
            time.sleep(max(0.0, (next_at - datetime.now(UTC)).total_seconds()))


class FileSensor(Sensor):
    """Wait for a local path or glob, or a remote one over SFTP (`conn_id`)."""

    kind = "file_sensor"

    def __init__(
        self, task_id: str, path: str, *, conn_id: str | None = None, **sensor_args: Any
    ) -> None:
        super().__init__(task_id, **sensor_args)
        self.path, self.conn_id = path, conn_id

    def sensor_spec(self) -> dict[str, Any]:
        return {"path": self.path, "conn_id": self.conn_id}

    def poke(self, context: Mapping[str, Any]) -> list[str]:
        pattern = render(self.path, context)
        if self.conn_id:
            from cronflow.ops.sftp import remote_glob
            from cronflow.ops.ssh import SSH_TYPES, open_client

            conn = context["conn"].require(render(self.conn_id, context), SSH_TYPES)
            where = f" on {conn.describe()}"
            with open_client(conn) as client, client.open_sftp() as sftp:
                found = remote_glob(sftp, pattern)
        else:
            from cronflow.ops.transfer import local_glob

            where = ""
            found = local_glob(pattern)
        self.status = (
            f"{len(found)} file(s) match {pattern}{where}"
            if found
            else f"no file matches {pattern}{where}"
        )
        return found
