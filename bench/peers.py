"""Peer decoders for the benchmark, behind one tiny interface: ``decode_texts(emissions) -> texts``.

- ours: any registered ctclab decoder (``beam``, ``pyctcdecode``, ``greedy``) via decode_many;
  ``beam-kenlm`` is ``beam`` scoring with KenLM instead of its default array LM (lm.array_lm).
- ctc-beam-decoder: the C++ prefix beam search that reproduces pyctcdecode (pip ctc-beam-decoder,
  imported as ``ctc_beam_decoder``).
- flashlight: flashlight-text's ``LexiconFreeDecoder`` (no LM, ZeroLM) and ``LexiconDecoder``
  (word KenLM + a lexicon trie spelled from the LM's unigrams), as torchaudio's ctc_decoder
  uses them.
"""
from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from ctclab.core.options import field_names
from ctclab.decoders import Vocabulary, decoder_class
from ctclab.decoders.base import fork_map_chunks
from ctclab.decoders.options import PyctcdecodeOptions
from ctclab.lm.arpa import looks_like_arpa
from ctclab.lm.loaded import load_word_list

# The matched search settings of a run are pyctcdecode's options (the reference every peer is
# compared with, in its names and units); these of its fields reach the C++ peers as well.
MATCHED = ("beam_width", "token_min_logp", "beam_prune_logp", "prune_history", "alpha", "beta",
           "unk_score_offset")


@dataclass(frozen=True)
class Settings:
    """Matched settings of one run: pyctcdecode's options (``lm_path`` is the resolved LM file
    or None) and the LM file again as a path for the peers that open it themselves."""

    options: PyctcdecodeOptions
    lm_file: Path | None = None
    lexicon: Path | None = None    # pronunciation lexicon (word<TAB>tokens) words are spelled by
    # options of our decoders beyond the matched ones (device, batch_size), where they have them
    beam_options: dict[str, object] = field(default_factory=dict)


Decode = Callable[[Sequence[np.ndarray]], list[str]]
# flashlight's KenLM wrapper scores in log10; ours and pyctcdecode's in ln.
LOG10_TO_LN = math.log(10.0)


def pyctc_labels(vocab: Vocabulary) -> list[str]:
    """Labels as pyctcdecode-style peers want them: blank '', delimiter ' ' (no unused labels)."""
    if vocab.unused:
        raise ValueError("peers here take vocabularies without unused labels (QuartzNet layout)")
    return ["" if i == vocab.blank else " " if i == vocab.delimiter else lab
            for i, lab in enumerate(vocab.labels)]


def known_words(lm_file: Path | None) -> list[str] | None:
    """The LM's own unigrams when it is an ARPA (read once per process), else None: a KenLM
    binary keeps no word list (as for the ctclab decoders without unigrams_path)."""
    return load_word_list(lm_file) if lm_file is not None and looks_like_arpa(lm_file) else None


def matched_options(options_cls: type, matched: PyctcdecodeOptions) -> object:
    """``matched`` as options of another ctclab decoder: the fields they share as they are, and
    pyctcdecode's unk_score_offset as the beam's unknown_prefix_penalty (same value, see
    decoders/constants.py)."""
    if isinstance(matched, options_cls):
        return matched
    names = field_names(options_cls)
    values = {k: getattr(matched, k) for k in names & field_names(PyctcdecodeOptions)}
    if "unknown_prefix_penalty" in names:
        values["unknown_prefix_penalty"] = matched.unk_score_offset
    return options_cls(**values)


def ours(name: str, vocab: Vocabulary, s: Settings, jobs: int, **extra: object) -> Decode:
    """A registered ctclab decoder with the matched settings (and ``extra`` options)."""
    cls = decoder_class(name)
    options = matched_options(cls.Options, s.options)
    names = field_names(cls.Options)
    extra = {**{k: v for k, v in s.beam_options.items() if k in names}, **extra}
    if s.lexicon is not None and "lexicon_path" in names:
        extra = {**extra, "lexicon_path": str(s.lexicon)}
    if extra:
        options = replace(options, **extra)  # type: ignore[type-var]
    dec = cls(vocab, options)  # frame shift: texts only here
    return lambda emissions: [h.text for h in dec.decode_many(emissions, jobs=jobs)]


def ctc_beam_decoder(vocab: Vocabulary, s: Settings, jobs: int) -> Decode:
    import ctc_beam_decoder as cbd

    o = s.options
    words = known_words(s.lm_file)
    dec = cbd.build_ctcdecoder(pyctc_labels(vocab),
                               kenlm_model_path=None if s.lm_file is None else str(s.lm_file),
                               unigrams=words, alpha=o.alpha, beta=o.beta,
                               unk_score_offset=o.unk_score_offset)

    def one(x: np.ndarray) -> str:
        beams = dec.decode_beams(x, beam_width=o.beam_width, beam_prune_logp=o.beam_prune_logp,
                                 token_min_logp=o.token_min_logp, prune_history=o.prune_history)
        return beams[0][0] if beams else ""

    return lambda emissions: fork_map(one, emissions, jobs)


def flashlight(vocab: Vocabulary, s: Settings, jobs: int) -> Decode:
    """flashlight-text CTC beam search; beam_threshold = -beam_prune_logp, log-add merging.

    flashlight weighs its KenLM scores in log10 (its KenLM wrapper returns them unconverted) where
    we and pyctcdecode weigh ln: it gets alpha * ln 10, the same weight on the same scale.
    """
    import flashlight.lib.text.decoder as fl

    if s.lexicon is not None:
        return flashlight_lexicon(vocab, s, jobs)
    o = s.options
    sil, blank = vocab.delimiter, vocab.blank
    keep_alive: list = []
    # flashlight prunes tokens by count, not by log-prob: keep all (token_min_logp has no peer).
    token_beam = vocab.size
    if s.lm_file is None:
        opts = fl.LexiconFreeDecoderOptions(o.beam_width, token_beam, -o.beam_prune_logp, 0.0, 0.0,
                                            True, fl.CriterionType.CTC)
        dec = fl.LexiconFreeDecoder(opts, fl.ZeroLM(), sil, blank, [])
    else:
        from flashlight.lib.text.decoder.kenlm import KenLM
        from flashlight.lib.text.dictionary import Dictionary

        spell = {lab: i for i, lab in enumerate(vocab.labels)}
        words = [w for w in known_words(s.lm_file) or [] if all(c in spell for c in w)]
        word_dict = Dictionary()
        for w in [*words, "<unk>"]:
            word_dict.add_entry(w)
        lm = KenLM(str(s.lm_file), word_dict)
        trie = fl.Trie(vocab.size, sil)
        start = lm.start(False)
        for w in words:
            index = word_dict.get_index(w)
            _, score = lm.score(start, index)
            trie.insert([spell[c] for c in w] + [sil], index, score)
        trie.smear(fl.SmearingMode.MAX)
        opts = fl.LexiconDecoderOptions(o.beam_width, token_beam, -o.beam_prune_logp,
                                        o.alpha * LOG10_TO_LN, o.beta, o.unk_score_offset, 0.0,
                                        True, fl.CriterionType.CTC)
        unk = word_dict.get_index("<unk>")
        dec = fl.LexiconDecoder(opts, trie, lm, sil, blank, unk, [], False)
        keep_alive.extend([lm, trie, word_dict])  # the C++ decoder points into these

    def one(x: np.ndarray) -> str:
        assert keep_alive is not None
        x = np.ascontiguousarray(x, dtype=np.float32)
        results = dec.decode(x.ctypes.data, x.shape[0], x.shape[1])
        if not results:
            return ""
        ids = [k for k, _ in itertools.groupby(results[0].tokens) if 0 <= k != blank]
        return vocab.decode_tokens(ids)

    return lambda emissions: fork_map(one, emissions, jobs)


def flashlight_lexicon(vocab: Vocabulary, s: Settings, jobs: int) -> Decode:
    """flashlight-text's LexiconDecoder over a pronunciation lexicon (as torchaudio's ctc_decoder
    builds it: each spelling + the delimiter into the trie, unigram scores smeared by max), with
    the KenLM (or, without an LM, flashlight's ZeroLM: the lexicon alone). Returns the words."""
    import flashlight.lib.text.decoder as fl
    from flashlight.lib.text.dictionary import Dictionary

    from ctclab.lm.lexicon import read_lexicon

    assert s.lexicon is not None and vocab.delimiter is not None
    lex = read_lexicon(s.lexicon, vocab)
    word_dict = Dictionary()
    for w in [*lex.words, "<unk>"]:
        word_dict.add_entry(w)
    if s.lm_file is None:
        lm = fl.ZeroLM()
    else:
        from flashlight.lib.text.decoder.kenlm import KenLM

        lm = KenLM(str(s.lm_file), word_dict)
    sil, blank = vocab.delimiter, vocab.blank
    trie = fl.Trie(vocab.size, sil)
    start = lm.start(False)
    for spelling, owner in zip(lex.spellings, lex.owners, strict=True):
        _, score = lm.score(start, owner)
        trie.insert([*spelling, sil], owner, score)
    trie.smear(fl.SmearingMode.MAX)
    o = s.options
    opts = fl.LexiconDecoderOptions(o.beam_width, vocab.size, -o.beam_prune_logp,
                                    o.alpha * LOG10_TO_LN, o.beta, o.unk_score_offset, 0.0, True,
                                    fl.CriterionType.CTC)
    dec = fl.LexiconDecoder(opts, trie, lm, sil, blank, word_dict.get_index("<unk>"), [], False)
    keep_alive = [lm, trie, word_dict]  # the C++ decoder points into these

    def one(x: np.ndarray) -> str:
        assert keep_alive
        x = np.ascontiguousarray(x, dtype=np.float32)
        results = dec.decode(x.ctypes.data, x.shape[0], x.shape[1])
        if not results:
            return ""
        return " ".join(word_dict.get_entry(w) for w in results[0].words if w >= 0)

    return lambda emissions: fork_map(one, emissions, jobs)


def fork_map(fn: Callable[[np.ndarray], str], emissions: Sequence[np.ndarray], jobs: int
             ) -> list[str]:
    """[fn(x) for x in emissions], in ``jobs`` forked workers that inherit fn (and its model)."""
    return fork_map_chunks(lambda part: [fn(x) for x in part], emissions, jobs,
                           len(emissions) // (jobs * 4))


def beam_kenlm(vocab: Vocabulary, s: Settings, jobs: int) -> Decode:
    """Our beam with the LM scored by KenLM (the reference) instead of the array LM."""
    return ours("beam", vocab, s, jobs, lm_backend="kenlm")


PEERS = {"ctc-beam-decoder": ctc_beam_decoder, "flashlight": flashlight, "beam-kenlm": beam_kenlm}


def build(name: str, vocab: Vocabulary, s: Settings, jobs: int) -> Decode:
    """The decode function for ``name``: a peer above or a registered ctclab decoder."""
    if name in PEERS:
        return PEERS[name](vocab, s, jobs)
    return ours(name, vocab, s, jobs)
