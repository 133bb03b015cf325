"""Tables that read at 80 columns: no borders between cells, so the values keep their room.

A bordered rich table spends three characters per column on borders and padding; at 80 columns that
squeezed names into split words ("Knowle dge") and cut identifiers to one prefix ("injec..."). Here
cells are separated by one space, the header underlined, and a column named in ``keep`` is never
wrapped or cut (identifiers: a probe, a metric, a key), so the other columns give way first.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from rich import box
from rich.table import Table
from rich.text import Text


class NarrowTable(Table):
    """A ``rich`` table whose ``keep`` columns are as wide as their widest cell, whatever the terminal."""

    def __init__(self, *columns: str, title: str | None, keep: Iterable[str], left: Iterable[str]) -> None:
        super().__init__(title=title, box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, padding=(0, 0),
                         title_justify="left")
        self.keep, left = set(keep), {columns[0], *left}
        for col in columns:
            self.add_column(col, justify="left" if col in left else "right", no_wrap=col in self.keep)

    def __rich_console__(self, console: Any, options: Any) -> Any:
        kept = 0
        for column in self.columns:
            if column.header in self.keep:
                cells = [column.header, *column.cells]
                column.min_width = max(Text.from_markup(c).cell_len if isinstance(c, str) else 1 for c in cells)
                kept += column.min_width
        # a one-line column (no_wrap, not kept) is cut with "…" at the edge; rich would shrink every column
        cut = [c for c in self.columns if c.no_wrap and c.header not in self.keep]
        for column in cut:
            column.max_width = max(8, (options.max_width - kept - len(self.columns) + 1) // len(cut))
        yield from super().__rich_console__(console, options)


def narrow_table(*columns: str, title: str | None = None, keep: Iterable[str] = (),
                 left: Iterable[str] = ()) -> NarrowTable:
    """A table of ``columns``; the first column and those in ``left`` are left-aligned, the rest right."""
    return NarrowTable(*columns, title=title, keep=keep, left=left)
