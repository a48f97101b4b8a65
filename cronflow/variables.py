"""Variables (`{{ var.NAME }}`) as the CLI manages them: from the environment or the store.

`CRONFLOW_VAR_<NAME>` in the environment wins over the store's value (it is how secrets are
kept outside the database) and counts as secret. A stored variable is secret if it was set with
`--secret`. A secret value is never shown: `value_shown` is `***`, and every task log masks it. Changes are
recorded in the audit trail (cronflow.audit) by name, never with their value.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from cronflow.audit import Actor
from cronflow.errors import InvalidInputError, NotFoundError
from cronflow.processtext import check_text
from cronflow.store import Store

ENV_PREFIX = "CRONFLOW_VAR_"
MASK = "***"
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_-]*$")


@dataclass(frozen=True)
class Variable:
    name: str
    value: str = field(repr=False)
    is_secret: bool
    source: str  # "store" or "env"
    updated_at: str | None = None

    @property
    def value_shown(self) -> str:
        return MASK if self.is_secret else self.value

    def as_row(self) -> dict[str, object]:
        return {
            "name": self.name,
            "value": self.value_shown,
            "secret": self.is_secret,
            "source": self.source,
            "updated_at": self.updated_at,
        }


def check_name(name: str) -> str:
    if not _NAME.match(name or ""):
        raise InvalidInputError(
            f"bad variable name {name!r}: use letters, digits, '_' and '-' (it is used as "
            "{{ var.NAME }})"
        )
    return name


def list_variables(store: Store, environ: Mapping[str, str] | None = None) -> list[Variable]:
    """Every variable, the environment's where both define a name, sorted by name."""
    environ = os.environ if environ is None else environ
    found = {
        r["name"]: Variable(r["name"], r["value"], bool(r["is_secret"]), "store", r["updated_at"])
        for r in store.variable_rows()
    }
    for key, value in environ.items():
        if key.startswith(ENV_PREFIX) and len(key) > len(ENV_PREFIX):
            name = key.removeprefix(ENV_PREFIX)
            found[name] = Variable(name, value, True, "env")
    return [found[k] for k in sorted(found)]


def get_variable(store: Store, name: str, environ: Mapping[str, str] | None = None) -> Variable:
    environ = os.environ if environ is None else environ
    if ENV_PREFIX + name in environ:
        return Variable(name, environ[ENV_PREFIX + name], True, "env")
    row = store.variable(name)
    if row is None:
        known = ", ".join(v.name for v in list_variables(store, environ)) or "none"
        raise NotFoundError(
            f"unknown variable '{name}' (known: {known}); set it with `cronflow var set {name} "
            f"VALUE` or {ENV_PREFIX}{name}"
        )
    return Variable(name, row["value"], bool(row["is_secret"]), "store", row["updated_at"])


def set_variable(
    store: Store,
    name: str,
    value: str,
    is_secret: bool | None = None,
    actor: Actor | None = None,
) -> bool:
    """Store a variable; `is_secret=None` keeps what it was (not secret for a new one).
    Returns whether it is secret. The audit trail records the name, never the value
    (`actor`: who; default the Unix user)."""
    row = store.variable(check_name(name))
    check_text(value, f"the value of variable '{check_name(name)}'")
    if is_secret is None:
        is_secret = bool(row and row["is_secret"])
    with store.atomic():
        store.set_variable(name, value, is_secret)
        done = "changed" if row else "created"
        summary = f"{done} variable {name}" + (" (secret)" if is_secret else "")
        details = {"name": name, "secret": is_secret, "created": row is None}
        store.record_audit("var_set", None, summary, details, actor)
    return is_secret


def delete_variable(store: Store, name: str, actor: Actor | None = None) -> None:
    with store.atomic():
        if not store.delete_variable(name):
            hint = (
                f"; it comes from the environment ({ENV_PREFIX}{name})"
                if ENV_PREFIX + name in os.environ
                else ""
            )
            raise NotFoundError(f"no stored variable '{name}'{hint}")
        store.record_audit("var_delete", None, f"deleted variable {name}", {"name": name}, actor)
