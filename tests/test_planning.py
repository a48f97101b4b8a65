"""The planner at a daemon start, for start dates from a minute to ten years back (issue 21),
and the catch-up of a long backlog as `list` and `why` show it.

The reference is kept here: a straightforward walk of every fire time from the start date to
now, which is what the planner itself did before its work stopped growing with the calendar.
The planner must decide exactly as the walk says: the same runs and data intervals, the same
counts in its log lines, the same next fire time; DST days included. Time is injected.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from clikit import ok, rows
from conftest import utc

from cronflow import catalog
from cronflow.config import Settings, load_settings
from cronflow.planner import RunPlanner
from cronflow.states import RunState
from cronflow.store import Store
from cronflow.timeparse import iso
from cronflow.timetable import Schedule

TINY = timedelta(microseconds=1)
MAX_ACTIVE = 3
PLAIN_DAY = utc(2026, 12, 3, 9, 47, 2)
FLOW = """
from cronflow import Flow
Flow("f", schedule="{cron}", timezone="{tz}", start_date={start!r}, end_date={end!r},
     catchup={catchup}, max_active_runs={mar})
"""


@dataclass
class Decisions:
    runs: list[tuple[str, str, str]]  # logical date, data interval start and end
    missed: int | None  # catchup off: the skipped fire times logged
    backlog: int | None  # catchup on: the fire times due, logged when more than one
    next_fire: str | None  # recorded for `cronflow list`


def walk_from_start(
    schedule: Schedule, start: datetime, end: datetime | None, catchup: bool, now: datetime
) -> Decisions:
    """Every fire time from the start date on, one by one: the reference."""
    limit = min(now, end) if end else now
    due, at = [], schedule.next_after(start - TINY)
    while at is not None and at <= limit:
        due.append(at)
        at = schedule.next_after(at)
    upcoming = schedule.next_after(max(now, start - TINY))
    next_fire = None if upcoming is None or (end and upcoming > end) else iso(upcoming)
    chosen = due[:MAX_ACTIVE] if catchup else due[-1:]
    runs = []
    for fire in chosen:
        i = due.index(fire)
        previous = due[i - 1] if i else schedule.prev_before(fire)
        runs.append((iso(fire), iso(previous), iso(fire)))
    many = len(due) > 1
    return Decisions(
        runs=runs,
        missed=len(due) - 1 if many and not catchup else None,
        backlog=len(due) if many and catchup else None,
        next_fire=next_fire,
    )


def plan_once(
    settings: Settings, write_flow, cron: str, tz: str, start: datetime, end, catchup, now
) -> Store:
    """The home's one flow, and the planner's first pass over it at `now`."""
    write_flow(
        "f",
        FLOW.format(
            cron=cron,
            tz=tz,
            start=iso(start),
            end=iso(end),
            catchup=catchup,
            mar=MAX_ACTIVE,
        ),
    )
    store = Store(settings.db_path)
    planner = RunPlanner(store)
    planner.catalog = catalog.sync(store, settings)
    planner.plan(now)
    return store


def logged(text: str, event: str, key: str) -> int | None:
    """The value of `key` in the one `event` line of the log, None if there is none."""
    values = re.findall(rf"event={event} .*?{key}=(\S+)", text)
    assert len(values) <= 1, values
    return int(values[0]) if values else None


def decisions(store: Store, text: str) -> Decisions:
    runs = store.runs_between("f", utc(1, 1, 1), utc(9999, 1, 1))
    return Decisions(
        runs=[(r["logical_date"], r["data_interval_start"], r["data_interval_end"]) for r in runs],
        missed=logged(text, "missed_fires", "count"),
        backlog=logged(text, "catchup_started", "runs"),
        next_fire=store.flow_states()[0]["next_fire_at"],
    )


DAY, YEAR, DECADE = timedelta(days=1), timedelta(days=365), timedelta(days=3652)
PARIS_JUMP = utc(2024, 3, 31, 1, 0, 30)  # 03:00:30 CEST, just after 02:00 -> 03:00
PARIS_FIRST_0245 = utc(2024, 10, 27, 0, 45, 10)  # 02:45 CEST, before 03:00 -> 02:00
PARIS_SECOND_0245 = utc(2024, 10, 27, 1, 45, 10)  # 02:45 CET, the repeated hour
NEW_YORK_REPEATED = utc(2024, 11, 3, 6, 20)  # 01:20 EST, the second 01:20 of the day
NEW_YORK_JUMP = utc(2024, 3, 10, 7, 5)  # 03:05 EDT, just after 02:00 -> 03:00
ADELAIDE_JUMP = utc(2024, 10, 5, 16, 40)  # 03:10 ACDT, just after 02:00 -> 03:00 (+09:30)
LORD_HOWE_BACK = utc(2024, 4, 6, 15, 20)  # 01:50 LHST, the repeated half hour (+10:30)

CASES = [
    # (cron, zone, how far back the start date is, now, end date)
    ("* * * * *", "UTC", timedelta(minutes=1), PLAIN_DAY, None),
    ("* * * * *", "UTC", timedelta(minutes=90), PLAIN_DAY, None),
    ("* * * * *", "Europe/Paris", DAY, PARIS_JUMP, None),
    ("* * * * *", "Europe/Paris", 2 * DAY, PARIS_SECOND_0245, None),
    ("*/15 * * * *", "America/New_York", 30 * DAY, NEW_YORK_REPEATED, None),
    ("30 2 * * *", "Europe/Paris", DECADE, PARIS_JUMP, None),  # the skipped 02:30 at the jump
    ("30 2 * * *", "Europe/Paris", DECADE, PARIS_FIRST_0245, None),
    ("30 2 * * *", "Europe/Paris", DECADE, PARIS_SECOND_0245, None),  # no second 02:30
    ("0,30 1,2 * * *", "America/New_York", YEAR, NEW_YORK_JUMP, None),
    ("30 1 * * *", "America/New_York", DECADE, NEW_YORK_REPEATED, None),
    ("15 1-3 * * 0", "Asia/Kolkata", DECADE, PLAIN_DAY, None),
    ("30 2 * * *", "Australia/Adelaide", DECADE, ADELAIDE_JUMP, None),
    ("@hourly", "Australia/Lord_Howe", 180 * DAY, LORD_HOWE_BACK, None),
    ("0 0 29 2 *", "UTC", DECADE, PLAIN_DAY, None),
    ("0 12 1,15 * mon", "Europe/Paris", DECADE, PLAIN_DAY, None),
    ("45 23 * * *", "Pacific/Chatham", DECADE, PLAIN_DAY, None),
    ("0 6 * * *", "UTC", DECADE, PLAIN_DAY, PLAIN_DAY - 400 * DAY),  # ended 400 days ago
    ("0 6 * * *", "UTC", -10 * DAY, PLAIN_DAY, None),  # starts in ten days
]


@pytest.mark.parametrize("catchup", [False, True], ids=["latest_only", "catchup"])
@pytest.mark.parametrize(
    ("cron", "tz", "back", "now", "end"),
    CASES,
    ids=[f"{c[0]} {c[1]} {c[2]} {c[3]:%Y-%m-%d %H:%M}" for c in CASES],
)
def test_first_pass_decides_as_a_walk_from_the_start_date(
    settings, write_flow, caplog, cron, tz, back, now, end, catchup
):
    start = now - back
    with caplog.at_level("INFO", logger="cronflow.scheduler"):
        store = plan_once(settings, write_flow, cron, tz, start, end, catchup, now)
    expected = walk_from_start(Schedule.parse(cron, tz), start, end, catchup, now)
    assert decisions(store, caplog.text) == expected


@pytest.mark.parametrize("catchup", [False, True], ids=["latest_only", "catchup"])
@pytest.mark.parametrize("tz", ["UTC", "Europe/Paris", "America/New_York", "Asia/Kolkata"])
def test_a_minutely_flow_from_ten_years_back(settings, write_flow, caplog, tz, catchup):
    """Too many fire times for a walk: a wildcard job fires at every UTC minute in these
    zones (both occurrences of a repeated hour, none of a skipped one), so count minutes."""
    start, now = PLAIN_DAY - DECADE, PLAIN_DAY
    with caplog.at_level("INFO", logger="cronflow.scheduler"):
        store = plan_once(settings, write_flow, "* * * * *", tz, start, None, catchup, now)
    minute = timedelta(minutes=1)
    first, latest = utc(2016, 12, 3, 9, 48), utc(2026, 12, 3, 9, 47)
    due = (latest - first) // minute + 1
    chosen = [first + n * minute for n in range(MAX_ACTIVE)] if catchup else [latest]
    assert decisions(store, caplog.text) == Decisions(
        runs=[(iso(t), iso(t - minute), iso(t)) for t in chosen],
        missed=None if catchup else due - 1,
        backlog=due if catchup else None,
        next_fire=iso(latest + minute),
    )


def fresh_settings(root: Path) -> Settings:
    (root / "flows").mkdir(parents=True)
    (root / "cronflow.toml").write_text("")
    return load_settings(root)


@pytest.mark.parametrize("catchup", [False, True], ids=["latest_only", "catchup"])
@pytest.mark.parametrize(("cron", "near"), [("* * * * *", DAY), ("30 2 * * *", 7 * DAY)])
def test_planning_work_does_not_grow_with_the_distance_to_the_start_date(
    tmp_path, monkeypatch, cron, near, catchup
):
    """The fire-time queries of a first pass (the cost of planning) are as many for a start
    date ten years back as for one a few fire times back."""
    calls = []
    for name in ("next_after", "prev_before"):
        real = getattr(Schedule, name)

        def counted(self, at, real=real, name=name):
            calls.append(name)
            return real(self, at)

        monkeypatch.setattr(Schedule, name, counted)
    made = {}
    for back in (near, DECADE):
        calls.clear()
        settings = fresh_settings(tmp_path / str(back.days))
        source = FLOW.format(
            cron=cron,
            tz="Europe/Paris",
            start=iso(PLAIN_DAY - back),
            end=None,
            catchup=catchup,
            mar=MAX_ACTIVE,
        )
        (settings.flows_dir / "f.py").write_text(source)
        store = Store(settings.db_path)
        planner = RunPlanner(store)
        planner.catalog = catalog.sync(store, settings)
        planner.plan(PLAIN_DAY)
        made[back] = len(calls)
        store.close()
    assert made[near] == made[DECADE]


# --- a long catch-up, as the log, `list` and `why` show it ----------------------------------

CATCHUP = """
from cronflow import Flow
Flow("f", schedule="0 6 * * *", start_date="2024-12-20", end_date="2024-12-31", catchup=True,
     max_active_runs=4)
"""


def test_a_catchup_logs_its_backlog_once_and_shows_its_progress(home, settings, write_flow, caplog):
    write_flow("f", CATCHUP)
    store = Store(settings.db_path)
    planner = RunPlanner(store)
    planner.catalog = catalog.sync(store, settings)
    now = utc(2025, 6, 1)

    def finish_runs() -> None:
        for run in store.runs_in_states([RunState.QUEUED, RunState.RUNNING]):
            store.set_run_state(run["run_id"], RunState.SUCCESS, now)

    with caplog.at_level("INFO", logger="cronflow.scheduler"):
        planner.plan(now)
        # 11 fire times: 20 to 30 December at 06:00 (the end date is 31 December, 00:00)
        assert "event=catchup_started flow=f runs=11 first=2024-12-20T06:00:00+00:00 " in (
            caplog.text
        )
        assert rows(home, "list")[0]["catching_up"] == {"created": 4, "total": 11}
        assert "catching up: 4 of 11" in ok(home, "list").stdout
        assert (
            "- flow 'f' is catching up: 4 of 11 runs created (catchup=True: each fire time "
            "from 2024-12-20 06:00 UTC on gets a run, oldest first, 4 at a time)"
        ) in ok(home, "why", "f").stdout.splitlines()
        finish_runs()
        planner.plan(now)
        assert rows(home, "list")[0]["catching_up"] == {"created": 8, "total": 11}
        finish_runs()
        planner.plan(now)
        assert rows(home, "list")[0]["catching_up"] is None  # all created
        finish_runs()
        planner.plan(now)
    assert caplog.text.count("event=catchup_started") == 1
    assert "event=catchup_done flow=f runs=11" in caplog.text
    assert store.flow_states()[0]["catchup_from_at"] is None
    assert "catching up" not in ok(home, "why", "f").stdout
    assert len(store.runs_between("f", utc(2024, 1, 1), utc(2025, 1, 1))) == 11


def test_a_flow_with_one_due_fire_time_is_not_catching_up(settings, write_flow, caplog):
    write_flow(
        "f",
        FLOW.format(
            cron="0 6 * * *", tz="UTC", start="2024-01-01", end=None, catchup=True, mar=MAX_ACTIVE
        ),
    )
    store = Store(settings.db_path)
    planner = RunPlanner(store)
    planner.catalog = catalog.sync(store, settings)
    with caplog.at_level("INFO", logger="cronflow.scheduler"):
        planner.plan(utc(2024, 1, 1, 7))
    assert len(store.runs_between("f", utc(2024, 1, 1), utc(2025, 1, 1))) == 1
    assert "catchup_started" not in caplog.text
    assert store.flow_states()[0]["catchup_from_at"] is None


def test_a_start_date_moved_later_is_where_the_runs_start_again(settings, write_flow):
    """The planner's saved position is before the new start date: the fire times between are
    not run (with catch-up on, they would all have been)."""
    now = utc(2024, 3, 10, 12)
    store = plan_once(settings, write_flow, "0 6 * * *", "UTC", utc(2024, 3, 1), None, True, now)
    assert len(store.runs_between("f", utc(1, 1, 1), utc(9999, 1, 1))) == MAX_ACTIVE  # 1-3 March
    for run in store.runs_between("f", utc(1, 1, 1), utc(9999, 1, 1)):
        store.set_run_state(run["run_id"], RunState.SUCCESS, now)
    later = plan_once(settings, write_flow, "0 6 * * *", "UTC", utc(2024, 3, 8), None, True, now)
    dates = [r["logical_date"] for r in later.runs_between("f", utc(1, 1, 1), utc(9999, 1, 1))]
    assert dates[MAX_ACTIVE:] == [f"2024-03-{d:02}T06:00:00+00:00" for d in (8, 9, 10)]
