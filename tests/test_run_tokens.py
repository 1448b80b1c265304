"""eval/run.py on token sets beyond letters: phonemes through --lexicon (greedy scored by PER,
beam by WER), the real hama phoneme emissions, and the hard lexicon on real letters (issue #11)."""
from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import needs_pyctcdecode, require_shared
from test_lexicon import PHONEMES
from test_token_sets import LEXICON, say

from ctclab.eval.run import main, run

UTTERANCES = {"u1": ("THE CAT", "ð ə | k æ t"), "u2": ("TWO DOG", "t u | d ɔ g"),
              "u3": ("A DOG", "ə | d ɔ g")}


@pytest.fixture
def phoneme_emissions(tmp_path):
    """A folder import_emissions reads: labels.json (phonemes), manifest.tsv, dev/<id>.npy."""
    from test_lexicon import phoneme_vocab

    root = tmp_path / "phonemes"
    (root / "dev").mkdir(parents=True)
    vocab = phoneme_vocab()
    (root / "labels.json").write_text(json.dumps({
        "labels": PHONEMES, "blank_index": len(PHONEMES) - 1, "word_delimiter": "<wb>",
        "unused": ["<pad>"], "frame_shift_seconds": 0.02}), encoding="utf-8")
    rows = ["split\tid\tnum_frames\taudio_seconds\treference"]
    for utt, (text, phonemes) in UTTERANCES.items():
        x = say(vocab, phonemes, peak=0.97)
        np.save(root / "dev" / f"{utt}.npy", x)
        rows.append(f"dev\t{utt}\t{len(x)}\t{len(x) * 0.02:.2f}\t{text}")
    (root / "manifest.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    lexicon = tmp_path / "lexicon.tsv"
    lexicon.write_text(LEXICON, encoding="utf-8")
    return root, lexicon


def test_phoneme_run_scores_greedy_by_per_and_beam_by_wer(phoneme_emissions, tmp_path, capsys):
    root, lexicon = phoneme_emissions
    summary = run(["--import-emissions", str(root), "--cache-dir", str(tmp_path / "cache"),
                   "--lexicon", str(lexicon), "--decoder", "greedy", "beam", "--split", "dev",
                   "--out", str(tmp_path / "out"), "--quiet", "--bootstrap", "50"])
    by = {s.system: s for s in summary.systems}
    assert by["greedy"].unit == "phonemes" and by["beam"].unit == "words"
    assert by["greedy"].wer == 0.0 and by["greedy"].words == 14   # phonemes of the references
    assert by["beam"].wer == 0.0 and by["beam"].words == 6
    assert not summary.comparisons   # a PER is not compared with a WER
    out = capsys.readouterr().out
    assert "greedy [PER]" in out and "[lexicon]" in out
    lines = (tmp_path / "out" / "dev" / "beam.jsonl").read_text().splitlines()
    assert {json.loads(line)["hyp"] for line in lines} == {"the cat", "two dog", "a dog"}


@needs_pyctcdecode
def test_pyctcdecode_on_phonemes_is_a_clear_error(phoneme_emissions, tmp_path, capsys):
    root, lexicon = phoneme_emissions
    code = main(["--import-emissions", str(root), "--cache-dir", str(tmp_path / "cache"),
                 "--lexicon", str(lexicon), "--decoder", "beam", "pyctcdecode", "--split", "dev",
                 "--out", str(tmp_path / "out"), "--quiet"])
    assert code == 2 and "pyctcdecode decodes letters and word pieces" in capsys.readouterr().err


def test_lexicon_with_a_foreign_token_names_it(phoneme_emissions, tmp_path, capsys):
    root, _ = phoneme_emissions
    bad = tmp_path / "bad.tsv"
    bad.write_text("cat\tk æ t\nbird\tb ɜ d\n", encoding="utf-8")
    args = ["--import-emissions", str(root), "--cache-dir", str(tmp_path / "cache"),
            "--lexicon", str(bad), "--decoder", "beam", "--split", "dev", "--quiet",
            "--out", str(tmp_path / "out")]
    assert main(args) == 2
    assert "line 2: word 'bird' uses token 'b'" in capsys.readouterr().err
    summary = run([*args[:-1], str(tmp_path / "out2"), "--skip-unknown-tokens"])
    assert summary.systems[0].wer > 0   # only "cat" is left to say


def test_main_job_on_the_hama_phoneme_emissions(tmp_path):
    hama = require_shared("emissions", "hama-phoneme")
    lexicon = require_shared("lm", "en-us-70k-3gram.ipa-lexicon.tsv")
    summary = run(["--import-emissions", str(hama), "--lexicon", str(lexicon), "--decoder",
                   "greedy", "beam", "--split", "an4-test", "test-clean", "--quiet",
                   "--bootstrap", "0", "--out", str(tmp_path / "out")])
    by = {(s.split, s.system): s for s in summary.systems}
    assert by[("test-clean", "greedy")].unit == "phonemes"
    assert by[("test-clean", "greedy")].wer < 0.06            # 3.2% PER
    assert 0.25 < by[("test-clean", "beam")].wer < 0.45       # the lexicon alone: 37%
    assert by[("an4-test", "beam")].words == 12


def test_hard_lexicon_stays_within_the_oov_rate_of_soft_on_real_letters(tmp_path):
    """Issue #11: hard lexicon mode once returned "" for every utterance with an OOV word."""
    qn = require_shared("emissions", "quartznet15x5-base-en")
    lm = require_shared("lm", "en-us-70k-3gram.arpa.gz")
    wer = {}
    for mode in ("soft", "hard"):
        out = tmp_path / mode
        summary = run(["--import-emissions", str(qn), "--decoder", "beam", "--lm", str(lm),
                       "--split", "test-clean", "--lexicon-mode", mode, "--quiet",
                       "--bootstrap", "0", "--out", str(out)])
        wer[mode] = summary.systems[0].wer
        hyps = [json.loads(line)["hyp"] for line in
                next((out / "test-clean").glob("*.jsonl")).read_text().splitlines()]
        assert all(hyps) and len(hyps) == 15
    assert wer["soft"] == pytest.approx(0.0173, abs=1e-4)
    assert wer["hard"] - wer["soft"] <= 0.031   # the OOV rate of test-clean
