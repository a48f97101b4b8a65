"""Templated task arguments, rendered by Jinja2 as in Airflow: `{{ ds }}`, `{{ params.station }}`,
`{{ logical_date.strftime('%Y%m%d%H%M') }}`, `{{ ds | ds_add(-1) }}`, `{% if ... %}`.

- Sandboxed (Jinja's SandboxedEnvironment): a template reaches no private attribute, no
  function internals, no file; values are never rendered again (a param holding `{{ ds }}`
  stays that text).
- Strict: a name, key or attribute that does not exist is a TemplateError naming it, never an
  empty string. `name.key` reads a key of a mapping (params, conf, var, xcom) before any method
  of the same name.
- Shell-safe: with `quote` (shlex.quote for Shell and SSHCommand), every printed value, i.e.
  the result of each `{{ ... }}`, goes through Jinja's `finalize` hook, which quotes it; the
  template's own text is the command. A value can never split or inject a command.
- A literal `{{`: `{% raw %}{{ text }}{% endraw %}`, or `{{ '{{' }}` (a value: quoted in shell
  commands). `{{{{`, the escape of cronflow's first template language, still reads as `{{`.
- Fast: compiled templates are cached, and text without `{` is returned as it is. jinja2 is
  imported on the first template that needs it, and only here.

Dates, macros and filters are in cronflow.macros.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Collection, Mapping
from typing import Any

from cronflow import macros
from cronflow.errors import TemplateError

Quote = Callable[[str], str]

# context entries that are plumbing for operators, never template values
INTERNAL_NAMES = frozenset({"secrets", "store", "settings"})

_RAW_BLOCK = re.compile(r"\{%[-+]?\s*raw\s*[-+]?%\}.*?\{%[-+]?\s*endraw\s*[-+]?%\}", re.S)
_ENDRAW_START = re.compile(r"(?<=\{)(?=%[-+]?\s*endraw)")
_OLD_ESCAPE = "{{{{"
_LITERAL_BRACES = "{% raw %}{{{% endraw %}"
_RAW_HINT = "for literal {{, {% or {# write {% raw %}...{% endraw %}"


def render(text: str, context: Mapping[str, Any], quote: Quote | None = None) -> str:
    """The text with its template rendered; `quote` (e.g. shlex.quote) wraps each value."""
    if "{" not in text and "\r" not in text:
        return text
    template = _compiled(text, quote)
    engine = _engine()
    values = {k: v for k, v in context.items() if k not in INTERNAL_NAMES}
    try:
        return template.render(values)  # type: ignore[no-any-return]
    except engine.MissingValueError as exc:
        raise TemplateError(_missing_message(exc, values)) from None
    except engine.jinja2.TemplateError as exc:
        raise TemplateError(f"template {_short(text)}: {exc}") from None
    except (ArithmeticError, LookupError, TypeError, ValueError, AttributeError) as exc:
        raise TemplateError(f"template {_short(text)}: {type(exc).__name__}: {exc}") from None


def template_problems(text: str, known: Collection[str]) -> list[str]:
    """What `cronflow check` says about one template: its syntax error, or each name it uses
    that is neither in `known` nor one of Jinja's own (range, dict, ...) or `macros`."""
    if "{" not in text:
        return []
    try:
        _compiled(text, None)
    except TemplateError as exc:
        return [str(exc)]
    engine = _engine()
    used = engine.meta.find_undeclared_variables(engine.plain.parse(_jinja_source(text)))
    unknown = sorted(set(used) - set(known) - set(engine.plain.globals))
    return [f"unknown template value '{{{{ {name} }}}}'" for name in unknown]


def literal(text: str) -> str:
    """A template that renders to `text` exactly (what import-crontab writes for a command)."""
    if "{{" not in text and "{%" not in text and "{#" not in text:
        return text
    pieces = _ENDRAW_START.split(text)  # a raw block ends at the first endraw tag it holds
    return "".join(f"{{% raw %}}{piece}{{% endraw %}}" for piece in pieces)


def as_text(value: Any) -> str:
    """How a value prints: text as is, a dict or list as JSON, a date-time in ISO 8601."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict | list):
        return json.dumps(value, default=str)
    return str(value)


def _jinja_source(text: str) -> str:
    """The text as Jinja reads it: the old escape `{{{{` (outside raw blocks) becomes a raw `{{`."""
    if _OLD_ESCAPE not in text:
        return text
    parts, start = [], 0
    for block in _RAW_BLOCK.finditer(text):
        parts.append(text[start : block.start()].replace(_OLD_ESCAPE, _LITERAL_BRACES))
        parts.append(block.group())
        start = block.end()
    parts.append(text[start:].replace(_OLD_ESCAPE, _LITERAL_BRACES))
    return "".join(parts)


@functools.lru_cache(maxsize=4096)
def _compiled(text: str, quote: Quote | None) -> Any:
    engine = _engine()
    try:
        return engine.environment(quote).from_string(_jinja_source(text))
    except engine.jinja2.TemplateSyntaxError as exc:
        where = f" (line {exc.lineno})" if "\n" in text.strip() else ""
        hint = f"; {_RAW_HINT}" if "{%" in text or "{#" in text else ""
        message = (exc.message or "").rstrip(".")
        raise TemplateError(
            f"template syntax error in {_short(text)}: {message}{where}{hint}"
        ) from None


def _short(text: str, limit: int = 80) -> str:
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")


def _missing_message(exc: Any, values: Mapping[str, Any]) -> str:
    """Which name or key is missing, and what exists instead."""
    if exc.hint:  # the sandbox's refusal: "access to attribute '__class__' ... is unsafe"
        return f"template value: {exc.hint}"
    if exc.is_name:
        known = ", ".join(sorted(values))
        return f"unknown template value '{{{{ {exc.name} }}}}' (known: {known})"
    owner = next((k for k, v in values.items() if v is exc.obj), None)
    if owner is None:
        what = f"a {type(exc.obj).__name__} value"
        return f"template value: {what} has no key or attribute '{exc.name}'"
    placeholder = f"'{{{{ {owner}.{exc.name} }}}}'"
    if isinstance(exc.obj, Mapping):
        keys = _some_keys(exc.obj)
        return f"template value {placeholder}: no key '{exc.name}' in {owner} ({keys})"
    return f"template value {placeholder}: {owner} has no attribute '{exc.name}'"


def _some_keys(mapping: Mapping[str, Any], limit: int = 12) -> str:
    try:
        keys = sorted(map(str, mapping))
    except Exception:  # a mapping that cannot list its keys (a store error): say nothing
        return "its keys are not known"
    if not keys:
        return "it is empty"
    more = f" and {len(keys) - limit} more" if len(keys) > limit else ""
    return "has: " + ", ".join(keys[:limit]) + more


@functools.cache
def _engine() -> _Engine:
    return _Engine()


class _Engine:
    """The Jinja environments (one per quoting function) and the classes they raise."""

    def __init__(self) -> None:
        import jinja2
        import jinja2.meta
        import jinja2.sandbox

        self.jinja2, self.meta = jinja2, jinja2.meta

        class MissingValueError(jinja2.UndefinedError):
            """A name or key that does not exist, with what was asked of what."""

            def __init__(self, message: str, obj: Any, name: str | None, hint: str | None) -> None:
                super().__init__(message)
                self.is_name = obj is jinja2.utils.missing
                self.obj, self.name, self.hint = obj, name, hint

        class Strict(jinja2.StrictUndefined):
            __slots__ = ()

            def _fail_with_undefined_error(self, *args: Any, **kwargs: Any) -> Any:
                raise MissingValueError(
                    self._undefined_message,
                    self._undefined_obj,
                    self._undefined_name,
                    self._undefined_hint,
                )

        # every use of an undefined value (str, +, ==, iteration...) fails with this error:
        # StrictUndefined binds those methods to its base's failing function, not to ours
        failing = jinja2.Undefined._fail_with_undefined_error
        for name in dir(jinja2.StrictUndefined):
            if name != "_fail_with_undefined_error" and getattr(Strict, name) is failing:
                setattr(Strict, name, Strict._fail_with_undefined_error)

        class Environment(jinja2.sandbox.SandboxedEnvironment):
            def getattr(self, obj: Any, attribute: str) -> Any:
                if isinstance(obj, Mapping):  # params.get is a key named 'get' when there is one
                    try:
                        return obj[attribute]
                    except (KeyError, TypeError):
                        pass
                return super().getattr(obj, attribute)

        self.MissingValueError = MissingValueError
        self._classes = (Environment, Strict)
        self._environments: dict[Quote | None, Any] = {}
        self.plain = self.environment(None)

    def environment(self, quote: Quote | None) -> Any:
        if quote not in self._environments:
            environment_class, undefined = self._classes
            finalize = as_text if quote is None else _quoting(quote)
            env = environment_class(
                undefined=undefined,
                finalize=finalize,
                autoescape=False,
                keep_trailing_newline=True,
                cache_size=0,
            )
            env.filters.update(macros.FILTERS)
            env.globals["macros"] = macros.MACROS
            self._environments[quote] = env
        return self._environments[quote]


def _quoting(quote: Quote) -> Callable[[Any], str]:
    def finalize(value: Any) -> str:
        return quote(as_text(value))

    return finalize
