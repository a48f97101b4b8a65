"""The web view: a second thin face over the library the CLI uses (`cronflow web`).

Starlette serves server-rendered Jinja2 pages and a small vanilla script for the live parts
(a running try's log, the states of unfinished runs). Every figure comes from the same library
functions as the CLI (overview, control, repair, reasons, attempts, monitoring): this package has
no SQL of its own. Its third-party imports (starlette, uvicorn, jinja2, prometheus_client) live
here only, installed with the `web` extra, so the CLI's other commands never load them.
"""
