"""Tables of rows for the listing commands, fast for thousands of rows.

Piped, a table is plain aligned columns. On a terminal it is the same layout with bold headers
and coloured states, fitted to the width (only the columns named `wrap` fold). Neither path
imports rich: a rich Table measures every cell and took over a second for 500 flows, and
importing rich alone costs about 80 ms of every `cronflow list`.
"""

import os
import shutil
import sys
import textwrap
from collections.abc import Collection

Spans = list[tuple[str, str]]  # (text, style) pieces of one table cell; style names as rich's
Cell = str | Spans  # plain text, or styled pieces

GAP = "  "
MIN_FOLDED_WIDTH = 12  # a folding column is not squeezed below this

# SGR codes of the styles tables use, as rich renders them on a 256-colour terminal (a test
# compares them with rich's own rendering).
SGR = {
    "bold": "1",
    "dim": "2",
    "green": "32",
    "red": "31",
    "cyan": "36",
    "yellow": "33",
    "grey50": "38;5;244",
    "grey62": "38;5;247",
    "turquoise2": "38;5;45",
    "dark_orange": "38;5;208",
    "pink1": "38;5;218",
}


def print_rows(
    headers: list[str],
    rows: list[list[Cell]],
    wrap: Collection[str] = (),
    title: Cell | None = None,
) -> None:
    """A row with fewer cells than headers is a note: its last cell spans the remaining
    columns and widens none of them (a broken flow file's long error in `cronflow list`)."""
    sys.stdout.write("\n".join(table_lines(headers, rows, wrap, title)) + "\n")


def table_lines(
    headers: list[str],
    rows: list[list[Cell]],
    wrap: Collection[str] = (),
    title: Cell | None = None,
    styled: bool | None = None,
) -> list[str]:
    """The lines of print_rows' table; `styled` defaults to whether stdout is a terminal."""
    plain_rows = [list(map(plain, row)) for row in rows]
    widths = [
        max([len(h), *(len(r[i]) for r in plain_rows if i < _sized(r, headers))])
        for i, h in enumerate(headers)
    ]
    styled = styled_output() if styled is None else styled
    colour = _colour(styled)
    lines = [_line([_spans(title)], [0], colour)] if title else []
    if not styled:
        for plain_row in [headers, *plain_rows]:
            cells = zip(plain_row, widths, strict=False)
            lines.append(GAP.join(c.ljust(w) for c, w in cells).rstrip())
        return lines
    folding = [h in wrap for h in headers]
    total = shutil.get_terminal_size().columns
    widths = fit(widths, folding, total, [len(h) for h in headers])
    lines.append(_line([[(h, "bold")] for h in headers], widths, colour))
    for row, row_plain in zip(rows, plain_rows, strict=True):
        row_widths, row_folding = widths[: len(row)], folding[: len(row)]
        if len(row) < len(headers):  # the note spans the rest of the line, folded to fit
            used = sum(row_widths[:-1]) + len(GAP) * (len(row) - 1)
            row_widths = [*row_widths[:-1], max(MIN_FOLDED_WIDTH, total - used)]
            row_folding = [*row_folding[:-1], True]
        pieces = [
            _fold(cell, text, width) if fold and len(text) > width else [_spans(cell)]
            for cell, text, width, fold in zip(row, row_plain, row_widths, row_folding, strict=True)
        ]
        for k in range(max(map(len, pieces))):
            lines.append(_line([p[k] if k < len(p) else [] for p in pieces], row_widths, colour))
    return lines


def styled_line(cell: Cell, styled: bool | None = None) -> str:
    """One line of text in its styles (on a terminal, without NO_COLOR), else plain."""
    return _line([_spans(cell)], [0], _colour(styled_output() if styled is None else styled))


def _colour(styled: bool) -> bool:
    return styled and not os.environ.get("NO_COLOR") and os.environ.get("TERM") != "dumb"


def _sized(row: list[str], headers: list[str]) -> int:
    """How many of a row's cells count for the column widths: all, or all but a note's last."""
    return len(row) if len(row) == len(headers) else len(row) - 1


def plain(cell: Cell) -> str:
    return cell if isinstance(cell, str) else "".join(text for text, _ in cell)


def fit(widths: list[int], folding: list[bool], total: int, floors: list[int]) -> list[int]:
    """Narrow the folding columns, widest first, until the table fits `total` columns (or they
    reach their floor: then the terminal wraps the lines)."""
    widths = list(widths)
    excess = sum(widths) + len(GAP) * (len(widths) - 1) - total
    while excess > 0:
        candidates = [
            i
            for i, fold in enumerate(folding)
            if fold and widths[i] > max(floors[i], MIN_FOLDED_WIDTH)
        ]
        if not candidates:
            break
        widest = max(candidates, key=lambda i: widths[i])
        widths[widest] -= 1
        excess -= 1
    return widths


def styled_output() -> bool:
    """Whether rich's Console would call stdout a terminal (its TTY_COMPATIBLE and FORCE_COLOR
    rules, then isatty), so that tables look like the rest of the output."""
    forced = os.environ.get("TTY_COMPATIBLE", "")
    if forced in ("0", "1"):
        return forced == "1"
    if "FORCE_COLOR" in os.environ:
        return os.environ["FORCE_COLOR"] != ""
    try:
        return sys.stdout.isatty()
    except ValueError:  # closed
        return False


def _spans(cell: Cell) -> Spans:
    return [(cell, "")] if isinstance(cell, str) else cell


def _fold(cell: Cell, text: str, width: int) -> list[Spans]:
    """A cell too wide for its column, as lines of at most `width` (in the cell's first style)."""
    style = "" if isinstance(cell, str) else cell[0][1]
    return [[(line, style)] for line in textwrap.wrap(text, width, break_on_hyphens=False)]


def _line(cells: list[Spans], widths: list[int], colour: bool) -> str:
    parts = []
    for spans, width in zip(cells, widths, strict=True):
        styled = "".join(
            f"\x1b[{SGR[style]}m{text}\x1b[0m" if colour and style in SGR else text
            for text, style in spans
        )
        parts.append(styled + " " * (width - sum(len(text) for text, _ in spans)))
    return GAP.join(parts).rstrip()
