"""Tasks on labelled servers: the Celery executor (scheduler side) and `cronflow worker`.

Celery 5 with a Redis broker carries attempts to workers; server labels are Celery queues.
This subpackage is the only place that imports celery, kombu and redis (an extra:
`pip install cronflow[celery]`), and nothing on the single-server path imports it.

- broker: the Celery app, the Redis client, every key name (the one place that knows them);
- executor: CeleryExecutor, beside LocalExecutor's interface, in the scheduler's process;
- runner: one attempt on a worker (a scratch home, the local executor, logs and outcome home);
- worker: the `cronflow worker` process (heartbeats, the Celery task, orphans of a dead self);
- farm: what status and doctor say about the broker and the workers.

Only the scheduler writes the SQLite store: a worker runs each attempt in a scratch home of
its own and sends its log, outcome, reason and XComs back through Redis.
"""
