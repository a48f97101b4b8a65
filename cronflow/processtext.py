"""Text a task can take: what may become a process argument, an environment value, stored text.

A Python str can hold what no process can take. NUL ends a C string, so no argument, environment
value or path may contain it; a lone surrogate (U+D800-U+DFFF, which JSON's "\\ud800" makes) has
no UTF-8 form, so os.posix_spawn raises on it. Before these checks one such --conf value killed
the daemon at every start. Two rules:

- `check_text`, where text enters cronflow (--conf, `var set`, `conn add`) and where it goes out
  as UTF-8 (an SSH command): valid Unicode without NUL. The CLI refuses the rest with one line.
- `check_argument`, in the daemon before it starts a process: what the system takes. Bytes that
  are not UTF-8 and came from the system itself (an environment variable) arrive as surrogate
  escapes U+DC80-U+DCFF and go back out as the same bytes, so they pass; other lone surrogates
  and NUL do not. A value can reach a task without the CLI (a variable set through the library,
  an XCom, a flow file), so the daemon checks again and fails that task with the reason.
"""

from __future__ import annotations

from cronflow.errors import InvalidInputError

_ADVICE = "give valid UTF-8 text without NUL characters"


def check_text(text: str, what: str) -> str:
    """`text` if it is valid Unicode without NUL, else InvalidInputError naming `what`."""
    found = _flaw(text, system_bytes_ok=False, nul_ok=False)
    if found is not None:
        raise InvalidInputError(
            f"{what} holds {found}, which no task can take as an argument or environment "
            f"value; {_ADVICE}"
        )
    return text


def check_argument(text: str, what: str, *, nul_ok: bool = False, rendered: bool = False) -> str:
    """`text` if a process can take it (as an argument, environment value or path; `nul_ok`
    for data such as standard input), else InvalidInputError naming `what` (and, if it was
    `rendered` from a template, where its values come from)."""
    found = _flaw(text, system_bytes_ok=True, nul_ok=nul_ok)
    if found is not None:
        hint = "; check the values rendered into it (conf, params, variables, XComs)"
        raise InvalidInputError(
            f"{what} holds {found}, which no process can take" + (hint if rendered else "")
        )
    return text


def check_env_name(name: str) -> str:
    """An environment variable's name: not empty, no '=', and text a process can take."""
    if not name or "=" in name:
        raise InvalidInputError(f"bad environment variable name {name!r}: empty or with '='")
    return check_argument(name, f"the environment variable name {name!r}")


def _flaw(text: str, *, system_bytes_ok: bool, nul_ok: bool) -> str | None:
    """What in `text` is unusable, and where; None if nothing is. Cheap for the common case:
    one encode of text that is fine."""
    try:
        text.encode("utf-8", "surrogateescape" if system_bytes_ok else "strict")
    except UnicodeEncodeError as exc:
        char = text[exc.start]
        return f"a lone surrogate (U+{ord(char):04X}) at character {exc.start + 1}"
    if not nul_ok and "\0" in text:
        return f"a NUL character (U+0000) at character {text.index(chr(0)) + 1}"
    return None
