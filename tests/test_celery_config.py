"""executor = "celery", [celery] and queue=: what cronflow.toml and flow files accept, and the
one-line errors for what they do not (no broker needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cronflow.catalog import FlowSpec
from cronflow.config import load_settings
from cronflow.errors import ConfigError, FlowDefinitionError
from cronflow.flow import Flow
from cronflow.ops import Shell
from cronflow.ops.trigger import TriggerFlow


def _settings(tmp_path: Path, text: str):
    (tmp_path / "cronflow.toml").write_text(text)
    return load_settings(tmp_path)


def test_celery_settings_and_their_defaults(tmp_path: Path) -> None:
    settings = _settings(
        tmp_path,
        'executor = "celery"\n[celery]\nbroker_url_env = "BROKER"\nheartbeat_timeout_s = 10\n'
        "[celery.queues]\ngpu = 2\n",
    )
    assert settings.executor == "celery"
    assert settings.celery.heartbeat_timeout_s == 10.0
    assert settings.celery.queued_timeout_s == 600.0
    assert settings.celery.queues == {"gpu": 2}
    assert settings.celery.resolved_broker_url({"BROKER": "redis://h:6379/0"}) == "redis://h:6379/0"
    assert load_settings(tmp_path / "nowhere").executor == "local"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('executor = "k8s"\n', "executor must be one of local, celery, got 'k8s'"),
        ('executor = "celery"\n', 'executor = "celery" needs a [celery] section'),
        ("[celery]\nbroker = 'x'\n", "unknown key 'celery.broker'"),
        ("[celery]\nheartbeat_timeout_s = 0\n", "celery.heartbeat_timeout_s must be more than 0"),
        ("[celery.queues]\ngpu = 0\n", "celery.queues.gpu must be an integer between 1"),
        (
            "[celery]\nbroker_url = 'redis://x'\nbroker_url_env = 'B'\n",
            "celery.broker_url and celery.broker_url_env exclude each other",
        ),
    ],
)
def test_bad_celery_settings_are_one_line_errors(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=r"cronflow\.toml: ") as caught:
        _settings(tmp_path, text)
    assert message in str(caught.value)


def test_queue_on_tasks_and_flows_and_what_stays_local() -> None:
    with Flow("farm", queue="gpu") as flow:
        Shell("default", "true")
        Shell("station", "true", queue="station")
        Shell("here", "true", queue="local")
        TriggerFlow("next", flow_id="other")
    spec = FlowSpec.from_spec(flow.spec(), "farm.py")
    queues = {t: spec.tasks[t].remote_queue for t in spec.tasks}
    assert queues == {"default": "gpu", "station": "station", "here": None, "next": None}
    with Flow("plain") as plain:
        Shell("t", "true")
    assert "queue" not in plain.spec()["tasks"][0]  # specs without queues are unchanged


def test_a_bad_queue_name_is_a_flow_definition_error() -> None:
    with Flow("farm") as flow:
        Shell("t", "true", queue="no spaces")
    with pytest.raises(FlowDefinitionError, match=r"task 't' \(line \d+\): .*queue"):
        flow.spec()
