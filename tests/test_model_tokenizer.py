"""eval/run.py on word-piece emissions of a model whose tokenizer is here: without --tokenizer the
model's own spells the words (a note says which); --tokenizer, --lexicon or no known words leave
it alone; a model directory that changed since, or a hub model not downloaded, gives none."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from decoding_fixtures import write_arpa
from fixtures_ctc_models import PIECES, make_ctc_model

from ctclab.core.vocabulary import Vocabulary
from ctclab.emission.cache import CacheMeta, CacheWriter, EmissionCache
from ctclab.emission.models import resolve_revision, tokenizer_file
from ctclab.eval.cached_models import model_tokenizer
from ctclab.eval.emit import main as emit_main
from ctclab.eval.run import run

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny models: one thread is faster

RATE = 16_000


@pytest.fixture(scope="module")
def piece_run(tmp_path_factory):
    """A tiny word-piece model (tokenizer.json beside it), the cache of two clips it made, and a
    tiny LM over the words its pieces spell."""
    root = tmp_path_factory.mktemp("pieces")
    model = make_ctc_model("parakeet_ctc", root / "model")
    rows = []
    for i in range(2):
        rng = np.random.default_rng(i)
        sf.write(root / f"u{i}.flac", (0.1 * rng.standard_normal(int(0.6 * RATE))).astype(
            np.float32), RATE, format="FLAC", subtype="PCM_16")
        rows.append(f"u{i}\tu{i}.flac\tTHE CAT SAT\n")
    manifest = root / "list.tsv"
    manifest.write_text("id\taudio_path\ttext\n" + "".join(rows), encoding="utf-8")
    cache = root / "cache"
    assert emit_main(["--model", str(model), "--split", "s", "--manifest", str(manifest),
                      "--cache-dir", str(cache), "--no-progress", "--device", "cpu"]) == 0
    lm = write_arpa(root / "lm.arpa", {"the": 0.4, "cat": 0.3, "sat": 0.3})
    return {"model": model, "cache": cache, "lm": lm}


def decode(piece_run, out: Path, *extra: str) -> dict:
    """Run eval/run.py (beam) over the cache; returns the beam system's recorded options."""
    run(["--model", str(piece_run["model"]), "--cache-dir", str(piece_run["cache"]), "--split",
         "s", "--decoder", "beam", "--bootstrap", "20", "--out", str(out), *extra])
    settings = json.loads((out / "settings.json").read_text(encoding="utf-8"))
    (system,) = settings["systems"]
    return system["options"]


def test_the_models_tokenizer_spells_words_when_none_is_given(piece_run, tmp_path, capfd):
    own = piece_run["model"] / "tokenizer.json"
    options = decode(piece_run, tmp_path / "own", "--lm", str(piece_run["lm"]))
    err = capfd.readouterr().err
    notes = [line for line in err.splitlines() if "no --tokenizer given" in line]
    assert len(notes) == 1 and notes[0].startswith("note: ") and str(own) in notes[0], err
    assert options["tokenizer_path"] == str(own)

    other = tmp_path / "tokenizer.json"  # the same file elsewhere: the one given is used
    other.write_bytes(own.read_bytes())
    options = decode(piece_run, tmp_path / "given", "--lm", str(piece_run["lm"]),
                      "--tokenizer", str(other))
    assert "no --tokenizer given" not in capfd.readouterr().err
    assert options["tokenizer_path"] == str(other)

    options = decode(piece_run, tmp_path / "no-lm")  # no known words: nothing to spell
    assert "no --tokenizer given" not in capfd.readouterr().err
    assert options["tokenizer_path"] is None


def test_tokenizer_file_is_found_only_for_the_revision_that_made_the_cache(tmp_path):
    model = make_ctc_model("parakeet_ctc", tmp_path / "model")
    revision = resolve_revision(str(model))
    assert revision is not None
    assert tokenizer_file(str(model), revision) == model / "tokenizer.json"
    assert tokenizer_file(str(model), "local-000000000000") is None  # the directory changed
    letters = make_ctc_model("wav2vec2", tmp_path / "letters")  # vocab.json only
    assert tokenizer_file(str(letters), resolve_revision(str(letters)) or "") is None
    assert tokenizer_file("torchaudio:WAV2VEC2_ASR_BASE_960H", "torchaudio-2") is None
    assert tokenizer_file("nobody/no-such-model-here", "0" * 40) is None  # not downloaded


def test_only_word_pieces_of_one_model_get_its_tokenizer(tmp_path):
    letters = make_ctc_model("wav2vec2", tmp_path / "letters")
    pieces = make_ctc_model("parakeet_ctc", tmp_path / "pieces")
    (letters / "tokenizer.json").write_bytes((pieces / "tokenizer.json").read_bytes())

    def cache(model: Path, vocab: Vocabulary, name: str) -> EmissionCache:
        meta = CacheMeta(model=str(model), revision=resolve_revision(str(model)) or "",
                         source="manifest", split="s", vocabulary=vocab.to_dict(),
                         frame_shift_s=0.02)
        with CacheWriter(tmp_path / name, meta) as writer:
            writer.add_batch([("u", "A", 1.0, np.zeros((2, vocab.size), np.float32))])
            return writer.finish()

    piece_vocab = Vocabulary.from_labels([*PIECES, "<pad>"], blank="<pad>")
    letter_cache = cache(letters, Vocabulary.wav2vec2_english(), "l")
    piece_cache = cache(pieces, piece_vocab, "p")
    assert model_tokenizer(["beam"], ["lm.arpa"], {}, [piece_cache]) == \
        str(pieces / "tokenizer.json")
    assert model_tokenizer(["beam"], ["lm.arpa"], {}, [letter_cache]) is None  # not pieces
    assert model_tokenizer(["beam"], ["lm.arpa"], {}, [piece_cache, letter_cache]) is None
    assert model_tokenizer(["greedy"], [None], {}, [piece_cache]) is None  # takes none
    assert model_tokenizer(["beam"], [None], {"unigrams_path": "w.txt"}, [piece_cache]) == \
        str(pieces / "tokenizer.json")  # known words without an LM
    assert model_tokenizer(["beam"], ["lm.arpa"], {"lexicon_path": "lex.tsv"},
                           [piece_cache]) is None
