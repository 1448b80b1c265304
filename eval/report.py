"""How a run's figures are shown: the console table, summary.md and summary.tsv, all drawn by
the one table renderer (ctclab.core.table) from a Summary.

    print(console_table(summary))            # WER % with interval, CER, S/D/I, words, speed; tests
    summary_markdown(summary)                # summary.md: the same, plus every paired test
    summary_tsv(summary)                     # summary.tsv: machine-readable, rates as fractions
    calibration_table(data)                  # what --calibrate-split fitted, per system

Runs with n-best lists add the n-best oracle WER; runs with word confidence a table of ECE and AUC
per (split, system); runs with --rescore a table of what re-ranking changed.
"""
from __future__ import annotations

import math

from ctclab.core.table import Table
from ctclab.eval.calibration import AUTO_CANDIDATES, CalibrationFile
from ctclab.eval.records import Summary

# The speed column: audio seconds decoded per wall second (decoder loading not included).
SPEED_TITLE = "x real time"
SUMMARY_COLUMNS = ("split", "system", "utterances", "wer", "wer_low", "wer_high", "cer",
                   "substitutions", "deletions", "insertions", "words", "ser", "audio_seconds",
                   "decode_seconds", "rtf", "load_seconds", "oracle_wer")


def summary_tsv(summary: Summary) -> str:
    """Machine-readable table, one row per (split, system); rates as fractions."""
    return Table(SUMMARY_COLUMNS, [[str(getattr(s, c)) for c in SUMMARY_COLUMNS]
                                   for s in summary.systems]).tsv()


def _pct(x: float) -> str:
    return "" if math.isnan(x) else f"{100 * x:.2f}"


def _num(x: float) -> str:
    return "n/a" if math.isnan(x) else f"{x:.3f}"


def _interval(low: float, high: float, sep: str) -> str:
    return "" if math.isnan(low) else f"{low:.3f}{sep}{high:.3f}"


def _has_oracle(summary: Summary) -> bool:
    return any(not math.isnan(s.oracle_wer) for s in summary.systems)


def _systems_table(summary: Summary, ci_sep: str, titles: tuple[str, ...], ci_align: str,
                   oracle: bool = False) -> Table:
    """One row per (split, system); ``oracle`` adds the n-best oracle WER column."""
    rows = []
    for s in summary.systems:
        ci = "" if math.isnan(s.wer_low) else f"{100 * s.wer_low:.2f}{ci_sep}{100 * s.wer_high:.2f}"
        rows.append((s.split, s.shown_system, f"{100 * s.wer:.2f}", ci, f"{100 * s.cer:.2f}",
                     str(s.substitutions), str(s.deletions), str(s.insertions), str(s.words),
                     speed_text(s.rtf)) + ((_pct(s.oracle_wer),) if oracle else ()))
    titles += ("n-best oracle WER %",) if oracle else ()
    return Table(titles, rows, align="<<>" + ci_align + ">>>>>>>")


def _confidence_table(summary: Summary, sep: str) -> Table:
    rows = [(r.split, r.system, r.calibration + (" (in-sample)" if r.in_sample else ""),
             str(r.words), str(r.wrong), f"{r.mean_confidence:.3f}", f"{r.accuracy:.3f}",
             _num(r.ece), _interval(r.ece_low, r.ece_high, sep), _num(r.ece_raw), _num(r.auc),
             _interval(r.auc_low, r.auc_high, sep)) for r in summary.confidence]
    return Table(("split", "system", "calibration", "words", "wrong", "mean conf.", "accuracy",
                  "ECE", "95% CI", "raw ECE", "AUC", "95% CI"), rows, align="<<<>>>>><>><")


def _rescoring_table(summary: Summary, interval: str) -> Table:
    rows = [(x.split, x.base, x.rescored, _pct(x.wer_base), _pct(x.wer_rescored),
             _pct(x.oracle_wer), f"{100 * x.delta:+.2f}",
             interval.format(100 * x.delta_low, 100 * x.delta_high), f"{x.p_value:.3f}",
             "yes (p < 0.05)" if x.significant else "no: not significant")
            for x in summary.rescoring]
    return Table(("split", "base", "rescored", "WER base %", "WER rescored %", "oracle %",
                  "delta %", "95% CI", "p", "changed?"), rows, align="<<<>>>>>><")


CONFIDENCE_NOTE = ("Word confidence: expected calibration error (10 equal-width bins) and AUC of "
                   "confidence for right vs wrong words, 95% bootstrap over utterances.")
RESCORING_NOTE = ("Rescoring: delta = WER(rescored) - WER(base) in points, paired bootstrap; the "
                  "n-best oracle is the floor of any re-ranking.")


def speed_text(rtf: float) -> str:
    """Decoding speed as a multiple of real time (audio seconds per decode second), with three
    significant digits whatever its size: an RTF column printed 0.0000 for greedy."""
    if not math.isfinite(rtf) or rtf <= 0:
        return "-"
    speed = 1.0 / rtf
    return f"{speed:,.0f}" if speed >= 100 else f"{speed:.1f}" if speed >= 10 else f"{speed:.2f}"


def skipped_text(skipped: dict[str, list[tuple[str, str]]], shown: int = 5) -> str:
    """Lines naming the utterances the emission stage could not read, per split: they are not
    in the cache, so not in any figure (split -> [(id, reason)]); "" when there are none."""
    lines = []
    for split, items in skipped.items():
        if items:
            named = ", ".join(f"{i} ({reason})" for i, reason in items[:shown])
            more = f" and {len(items) - shown} more (settings.json lists them)" \
                if len(items) > shown else ""
            lines.append(f"{split}: {len(items)} utterance(s) skipped when the emissions were made "
                         f"and not scored: {named}{more}")
    return "\n".join(lines)


def summary_markdown(summary: Summary) -> str:
    """Human-readable tables: WER/CER in percent with the bootstrap interval, then paired tests,
    word confidence and rescoring."""
    out = _systems_table(summary, "–", ("split", "system", "WER %", "95% CI", "CER %", "S", "D",
                                        "I", "words", SPEED_TITLE), "<",
                         _has_oracle(summary)).markdown()
    if summary.comparisons:
        tests = Table(("split", "A", "B", "WER(B) − WER(A) %", "95% CI", "p"), [
            (c.split, c.system_a, c.system_b, f"{100 * c.delta:+.2f}",
             f"{100 * c.delta_low:+.2f}…{100 * c.delta_high:+.2f}", f"{c.p_value:.3f}")
            for c in summary.comparisons], align="<<<><>")
        out += "\n" + tests.markdown()
    if summary.confidence:
        out += f"\n{CONFIDENCE_NOTE}\n\n" + _confidence_table(summary, "–").markdown()
    if summary.rescoring:
        out += f"\n{RESCORING_NOTE}\n\n" + _rescoring_table(summary, "{:+.2f}…{:+.2f}").markdown()
    return out


def console_table(summary: Summary) -> str:
    """The side-by-side console table (percentages) and the paired tests whose errors differ;
    then the n-best oracle, word confidence and rescoring tables when the run has them."""
    lines = [_systems_table(summary, "-", ("split", "system", "WER%", "95% CI", "CER%", "S", "D",
                                           "I", "words", SPEED_TITLE), ">").text()]
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
    oracles = [s for s in summary.systems if not math.isnan(s.oracle_wer)]
    if oracles:
        lines += ["", "n-best oracle WER (the best any n-best entry reaches) vs 1-best WER:",
                  Table(("split", "system", "WER%", "oracle WER%"), [
                      (s.split, s.system, _pct(s.wer), _pct(s.oracle_wer)) for s in oracles],
                      align="<<>>").text()]
    if summary.confidence:
        lines += ["", CONFIDENCE_NOTE, _confidence_table(summary, "-").text()]
    if summary.rescoring:
        lines += ["", RESCORING_NOTE,
                  _rescoring_table(summary, "[{:+.2f}, {:+.2f}]").text()]
    return "\n".join(lines)


def calibration_table(data: CalibrationFile) -> str:
    """What a calibration fit did per system: the calibrator, the dev words it saw and their ECE
    before and after (in-sample: the held-out figures are in the confidence table), and the
    cross-validated Brier score of each candidate when ``auto`` chose."""
    candidates = sorted({m for e in data.systems.values() for m in e.calibrator.cv_brier},
                        key=AUTO_CANDIDATES.index)
    rows = [(label, e.calibrator.describe(), str(e.words), str(e.wrong), f"{e.ece_before:.3f}",
             f"{e.ece_after:.3f}", *(f"{e.calibrator.cv_brier.get(m, math.nan):.4f}"
                                     for m in candidates)) for label, e in data.systems.items()]
    return f"[calibrate] fitted on {data.split}:\n" + Table(
        ("system", "calibration", "words", "wrong", "ECE before", "ECE after",
         *(f"CV Brier {m}" for m in candidates)), rows, align="<<>>>>>>>").text()
