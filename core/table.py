"""The one table renderer: a table described once (titles, alignment, cells as text) and written
as aligned plain text (consoles), Markdown or TSV.

    table = Table(("split", "WER %"), [("test-clean", "2.42")], align="<>")
    print(table.text())       # split       WER %
                              # ----------  -----
                              # test-clean   2.42
    table.markdown()          # | split | WER % |\n|---|---:|\n| test-clean | 2.42 |\n
    table.tsv()               # split\tWER %\ntest-clean\t2.42\n

Cells are strings, formatted by the caller (it knows the units and digits); a row may be shorter
than the header (missing cells are empty).
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, init=False)
class Table:
    """columns: titles. rows: one sequence of cell strings per row. align: one character per
    column, ``<`` (left, the default for columns beyond the string) or ``>`` (right)."""

    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    align: str = ""

    def __init__(self, columns: Sequence[str], rows: Iterable[Sequence[str]], align: str = ""):
        width = len(columns)
        cells = tuple(tuple(str(c) for c in row) + ("",) * (width - len(row)) for row in rows)
        too_long = [row for row in cells if len(row) > width]
        if too_long:
            raise ValueError(f"a row has {len(too_long[0])} cells for {width} columns: "
                             f"{too_long[0]}")
        if set(align) - {"<", ">"}:
            raise ValueError(f"align takes '<' and '>' only, got {align!r}")
        object.__setattr__(self, "columns", tuple(columns))
        object.__setattr__(self, "rows", cells)
        object.__setattr__(self, "align", align.ljust(width, "<")[:width])

    def text(self, gap: str = "  ") -> str:
        """Aligned columns under a dashed rule, ``gap`` between columns, no trailing spaces."""
        lines = [self.columns, tuple("-" * len(c) for c in self.columns), *self.rows]
        widths = [max(len(line[i]) for line in lines) for i in range(len(self.columns))]
        out = []
        for n, line in enumerate(lines):
            if n == 1:
                line = tuple("-" * w for w in widths)
            cells = [c.rjust(w) if a == ">" else c.ljust(w)
                     for c, w, a in zip(line, widths, self.align, strict=True)]
            out.append(gap.join(cells).rstrip())
        return "\n".join(out)

    def markdown(self) -> str:
        """A GitHub-flavoured Markdown table (right-aligned columns marked ``---:``)."""
        def row(cells: Sequence[str]) -> str:
            return "| " + " | ".join(cells) + " |"

        rule = "|" + "|".join("---:" if a == ">" else "---" for a in self.align) + "|"
        return "\n".join([row(self.columns), rule, *map(row, self.rows)]) + "\n"

    def tsv(self) -> str:
        """Tab-separated values with a header line (cells must hold no tabs or newlines)."""
        bad = [c for row in self.rows for c in row if "\t" in c or "\n" in c]
        if bad:
            raise ValueError(f"a TSV cell holds a tab or newline: {bad[0]!r}")
        return "".join("\t".join(line) + "\n" for line in [self.columns, *self.rows])
