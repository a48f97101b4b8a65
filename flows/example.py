"""An example flow: download, transform and report on a day's data.

Each task prints what it would do; replace the commands with your own programs.
Try it: `cronflow trigger example --wait`, then `cronflow tasks example`.
"""

from cronflow import Flow, Python, Shell


def count_lines(path: str) -> int:
    with open(path, encoding="utf-8") as handle:
        return sum(1 for _ in handle)


with Flow(
    "example",
    schedule="30 2 * * *",
    timezone="UTC",
    doc="Fetch a day's readings, check them, and report.",
    defaults={"retries": 1, "retry_delay": "10s"},
    tags=["example"],
):
    fetch = Shell(
        "fetch",
        "mkdir -p /tmp/cronflow-example && "
        "printf 'station,temp\\nnorth,{{ ds_nodash }}\\n' > /tmp/cronflow-example/{{ ds }}.csv && "
        "echo fetched readings for {{ ds }}",
    )
    check = Python("check", count_lines, args=["/tmp/cronflow-example/{{ ds }}.csv"])
    report = Shell(
        "report",
        "echo 'report for {{ ds }} (interval {{ data_interval_start }} .. {{ data_interval_end }})'",
    )
    fetch >> check >> report
