"""How a run's figures are shown: the console table, summary.md and summary.tsv, all drawn by
the one table renderer (ctclab.core.table) from a Summary.

    print(console_table(summary))            # WER % with interval, CER, S/D/I, words, RTF; tests
    summary_markdown(summary)                # summary.md: the same, plus every paired test
    summary_tsv(summary)                     # summary.tsv: machine-readable, rates as fractions
"""
from __future__ import annotations

import math

from ctclab.core.table import Table
from ctclab.eval.records import Summary

SUMMARY_COLUMNS = ("split", "system", "utterances", "wer", "wer_low", "wer_high", "cer",
                   "substitutions", "deletions", "insertions", "words", "ser", "audio_seconds",
                   "decode_seconds", "rtf", "load_seconds")


def summary_tsv(summary: Summary) -> str:
    """Machine-readable table, one row per (split, system); rates as fractions."""
    return Table(SUMMARY_COLUMNS, [[str(getattr(s, c)) for c in SUMMARY_COLUMNS]
                                   for s in summary.systems]).tsv()


def _systems_table(summary: Summary, ci_sep: str, titles: tuple[str, ...], ci_align: str) -> Table:
    rows = []
    for s in summary.systems:
        ci = "" if math.isnan(s.wer_low) else f"{100 * s.wer_low:.2f}{ci_sep}{100 * s.wer_high:.2f}"
        rows.append((s.split, s.system, f"{100 * s.wer:.2f}", ci, f"{100 * s.cer:.2f}",
                     str(s.substitutions), str(s.deletions), str(s.insertions), str(s.words),
                     f"{s.rtf:.4f}"))
    return Table(titles, rows, align="<<>" + ci_align + ">>>>>>")


def summary_markdown(summary: Summary) -> str:
    """Human-readable tables: WER/CER in percent with the bootstrap interval, then paired tests."""
    out = _systems_table(summary, "–", ("split", "system", "WER %", "95% CI", "CER %", "S", "D",
                                        "I", "words", "RTF"), "<").markdown()
    if summary.comparisons:
        tests = Table(("split", "A", "B", "WER(B) − WER(A) %", "95% CI", "p"), [
            (c.split, c.system_a, c.system_b, f"{100 * c.delta:+.2f}",
             f"{100 * c.delta_low:+.2f}…{100 * c.delta_high:+.2f}", f"{c.p_value:.3f}")
            for c in summary.comparisons], align="<<<><>")
        out += "\n" + tests.markdown()
    return out


def console_table(summary: Summary) -> str:
    """The side-by-side console table (percentages) and the paired tests whose errors differ."""
    lines = [_systems_table(summary, "-", ("split", "system", "WER%", "95% CI", "CER%", "S", "D",
                                           "I", "words", "RTF"), ">").text()]
    comparisons = summary.comparisons
    # Pairs whose per-utterance error counts are all equal have a degenerate [0, 0] interval: they
    # stay in summary.* but would drown the informative pairs on the console.
    differing = [c for c in comparisons if not c.delta_low == c.delta_high == 0]
    if comparisons:
        lines += ["", ("paired bootstrap over utterances: delta = WER(B) - WER(A) in points, "
                  "95% interval, two-sided p")]
        if differing:
            lines.append(Table(("split", "A", "B", "delta", "95% CI", "p"), [
                (c.split, c.system_a, c.system_b, f"{100 * c.delta:+.2f}",
                 f"[{100 * c.delta_low:+.2f}, {100 * c.delta_high:+.2f}]", f"{c.p_value:.3f}")
                for c in differing], align="<<<>>>").text())
        if len(differing) < len(comparisons):
            lines.append(f"({len(comparisons) - len(differing)} pairs with identical errors on "
                         "every utterance not shown; all pairs are in summary.md)")
    return "\n".join(lines)
