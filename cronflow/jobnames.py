"""Flow ids from crontab commands: the program or script a command runs, e.g. `backup_db` for
`cd /srv && ./backup-db.sh --full >> /var/log/backup.log 2>&1`. Pure."""

from __future__ import annotations

import os
import re
import shlex

_NAME_MAX = 40
_SCRIPT_SUFFIXES = (".sh", ".bash", ".py", ".pl", ".rb", ".php", ".js")
_WRAPPERS = {"nice", "ionice", "nohup", "sudo", "exec", "time", "chronic", "setsid", "env"}
_WRAPPERS_WITH_ARG = {"timeout", "flock", "run-one"}
_GUARDS = {"cd", "test", "[", "[[", "true", ":", "sleep", "export", "set", "source", ".", "echo"}
_INTERPRETERS = {"sh", "bash", "dash", "zsh", "python", "python3", "perl", "ruby", "php", "node"}
_INTERPRETERS |= {"run-parts", "xargs"}
_GENERIC = {"manage", "main", "run", "cli", "app", "script", "task", "job", "cron", "artisan"}
_GENERIC |= {"rake", "make", "docker", "git", "npm", "console", "curl", "wget"}
_OPERATORS = {";", "&&", "||", "|", "&", "(", ")", "{", "}", "!"}
_REDIRECT = re.compile(r"^\d*[<>]+&?$")


def flow_name(command: str) -> str:
    """A flow id from a command: its program or script, e.g. 'backup_db' for
    `cd /srv && ./backup-db.sh --full >> /var/log/b.log`; '' if nothing fits."""
    words = _words(command)
    fallback = ""
    for segment in _segments(words):
        program, args = _program(segment)
        if not program:
            continue
        base = _base(program)
        if base in _GUARDS:
            fallback = fallback or base
            continue
        if base in _INTERPRETERS:
            script = next((a for a in args if not a.startswith("-")), "")
            base, args = (_base(script), args[args.index(script) + 1 :]) if script else (base, [])
        if base in _GENERIC:
            extra = next((a for a in args if not a.startswith("-") and "/" not in a), "")
            base = f"{base}_{extra}" if extra else base
        return _sanitize(base)
    return _sanitize(fallback)


def unique_name(name: str, taken: set[str]) -> str:
    """`name`, or name_2, name_3... if an earlier line of the same import took it."""
    candidate, n = name, 1
    while candidate in taken:
        n += 1
        candidate = f"{name}_{n}"
    taken.add(candidate)
    return candidate


def _words(command: str) -> list[str]:
    lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    try:
        return list(lexer)
    except ValueError:  # an unbalanced quote: plain words will do for a name
        return command.split()


def _segments(words: list[str]) -> list[list[str]]:
    segments: list[list[str]] = [[]]
    skip_next = False
    for word in words:
        if skip_next:
            skip_next = False
        elif word in _OPERATORS:
            segments.append([])
        elif _REDIRECT.match(word):
            skip_next = not word.endswith("&")  # the file name after > or <
        else:
            segments[-1].append(word)
    return [s for s in segments if s]


def _program(segment: list[str]) -> tuple[str, list[str]]:
    """The program a command segment runs, past variable assignments and wrappers."""
    i = 0
    while i < len(segment):
        word = segment[i]
        if re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", word) or word.startswith("-"):
            i += 1
        elif _base(word) in _WRAPPERS:
            i += 1
            while i < len(segment) and (segment[i].startswith("-") or segment[i].isdigit()):
                i += 1
        elif _base(word) in _WRAPPERS_WITH_ARG:
            i += 1
            while i < len(segment) and segment[i].startswith("-"):
                i += 1
            i += 1  # the duration or lock file
        else:
            return word, segment[i + 1 :]
    return "", []


def _base(path: str) -> str:
    base = os.path.basename(path.rstrip("/")) or path
    for suffix in _SCRIPT_SUFFIXES:
        if base.endswith(suffix) and len(base) > len(suffix):
            return base[: -len(suffix)]
    return base


def _sanitize(text: str) -> str:
    name = re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")
    return name[:_NAME_MAX].rstrip("_")
