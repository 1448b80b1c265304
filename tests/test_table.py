"""core.table: one table description, written as aligned text, Markdown and TSV."""
from __future__ import annotations

import pytest

from ctclab.core.table import Table


def test_text_aligns_columns_under_a_rule():
    table = Table(("split", "WER %"), [("test-clean", "2.42"), ("a", "10.00")], align="<>")
    assert table.text().splitlines() == [
        "split       WER %",
        "----------  -----",
        "test-clean   2.42",
        "a           10.00",
    ]


def test_markdown_and_tsv():
    table = Table(("split", "WER %", "note"), [("a", "1.00")], align="<>")
    assert table.markdown() == "| split | WER % | note |\n|---|---:|---|\n| a | 1.00 |  |\n"
    assert table.tsv() == "split\tWER %\tnote\na\t1.00\t\n"


def test_bad_tables_are_refused():
    with pytest.raises(ValueError, match="3 cells for 2 columns"):
        Table(("a", "b"), [("1", "2", "3")])
    with pytest.raises(ValueError, match="align"):
        Table(("a",), [], align="^")
    with pytest.raises(ValueError, match="tab"):
        Table(("a",), [("x\ty",)]).tsv()
