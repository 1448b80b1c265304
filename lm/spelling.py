"""How words reach tokens: the spelling of a token set.

- letters spell themselves (a word's characters, recased to the labels' case);
- word pieces are cut by the model's own tokenizer (a SentencePiece ``.model`` or a Hugging Face
  ``tokenizer.json``), or without one greedily into the longest pieces of the vocabulary;
- phonemes (or any token set) go through a pronunciation lexicon (ctclab.lm.lexicon), several
  spellings per word allowed.

:func:`spelled_words` turns a spelling and the LM's word list into what a decoder builds its word
trie from (:class:`SpelledWords`): LM words, their spellings, and the text each word is written as.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ctclab.core.vocabulary import Vocabulary
from ctclab.lm.lexicon import Lexicon, map_to_lm_words

Tokenize = Callable[[str], list[str]]


@dataclass(frozen=True)
class SpelledWords:
    """Known words and their spellings in token ids.

    words[i]: word i as the LM writes it; text[i]: as the decoder outputs it (only when not
    from_tokens: letters and word pieces output their tokens' text, text is empty). spellings[k]
    words[owners[k]] (a word may have several). from_tokens: the text of a spelling's tokens is
    the word's text (letters, word pieces); False for pronunciations, whose text is the word's.
    """

    words: tuple[str, ...]
    text: tuple[str, ...]
    spellings: tuple[tuple[int, ...], ...]
    owners: tuple[int, ...]
    from_tokens: bool


class Spelling:
    """Spells words of one vocabulary: ``spell(word)`` -> its spellings (empty: cannot)."""

    def __init__(self, vocab: Vocabulary, lexicon: Lexicon | None = None,
                 tokenize: Tokenize | None = None):
        self.vocab, self.lexicon, self.tokenize = vocab, lexicon, tokenize
        self.from_tokens = lexicon is None or lexicon.reads_as_words(vocab)
        if vocab.units == "phonemes" and self.from_tokens:
            raise ValueError("a phoneme model spells words through a pronunciation lexicon: "
                             "give one (--lexicon FILE, word<TAB>phoneme phoneme ...)")
        self._by_word: dict[str, list[tuple[int, ...]]] = {}
        if lexicon is not None:
            for spelling, owner in zip(lexicon.spellings, lexicon.owners, strict=True):
                self._by_word.setdefault(lexicon.words[owner].lower(), []).append(spelling)

    @property
    def kind(self) -> str:
        """'lexicon', 'tokenizer', 'longest pieces' or 'letters'."""
        if self.lexicon is not None:
            return "lexicon"
        if self.vocab.word_start is not None:
            return "tokenizer" if self.tokenize is not None else "longest pieces"
        return "letters"

    def spell(self, word: str) -> list[tuple[int, ...]]:
        """Spellings of ``word`` (any casing) in token ids; [] when it cannot be spelled."""
        vocab = self.vocab
        if self.lexicon is not None:
            return list(self._by_word.get(word.lower(), ()))
        text = word.upper() if vocab.case == "upper" else word.lower() \
            if vocab.case == "lower" else word
        if vocab.word_start is not None:
            return _pieces(vocab, text, self.tokenize)
        ids = [vocab.label_to_id.get(ch, -1) for ch in text]
        if not ids or min(ids) < 0 or vocab.delimiter in ids:
            return []
        return [tuple(ids)]


def spelled_words(spelling: Spelling, unigrams: Sequence[str] | None,
                  mapper: Callable[[str], str]) -> SpelledWords:
    """The known words and their spellings.

    With a lexicon: its words (mapped to the LM's casing when ``unigrams`` is given; ValueError
    when the LM knows none of them). Otherwise: the ``unigrams`` that the labels can spell and
    that read back as themselves through ``mapper`` (acoustic word -> LM word).
    """
    vocab, lexicon = spelling.vocab, spelling.lexicon
    if lexicon is not None:
        lm_words, hits = map_to_lm_words(lexicon.words, None if unigrams is None
                                         else set(unigrams))
        if hits == 0:
            raise ValueError(f"{lexicon.path}: none of its {len(lexicon.words)} words (e.g. "
                             f"{list(lexicon.words[:5])}) is a word of the language model "
                             f"(e.g. {list(unigrams or [])[:5]}): a lexicon for another "
                             "language or word list?")
        text = lexicon.words if not spelling.from_tokens else ()
        return SpelledWords(tuple(lm_words), text, lexicon.spellings, lexicon.owners,
                            spelling.from_tokens)
    words: list[str] = []
    spellings: list[tuple[int, ...]] = []
    owners: list[int] = []
    pieces = vocab.word_start is not None
    for word in unigrams or ():
        for ids in spelling.spell(word):
            shown = vocab.decode_tokens(ids) if pieces else "".join(vocab.labels[i] for i in ids)
            if mapper(shown) != word:
                continue
            if not owners or owners[-1] != len(words):
                words.append(word)
            spellings.append(ids)
            owners.append(len(words) - 1)
    if unigrams and not words:
        raise ValueError(
            f"none of the {len(unigrams)} known words (e.g. {list(unigrams)[:5]}) can be "
            f"spelled with the acoustic labels ({vocab.case} case): every word would be OOV; "
            "use an LM / unigram list written in the model's characters, or "
            "lexicon_mode='none'")
    return SpelledWords(tuple(words), (), tuple(spellings), tuple(owners), True)


def _pieces(vocab: Vocabulary, word: str, tokenize: Tokenize | None) -> list[tuple[int, ...]]:
    if tokenize is None:
        try:
            return [tuple(vocab.encode_text(word))]
        except ValueError:
            return []
    ids = []
    for piece in tokenize(word):
        token = vocab.label_to_id.get(piece)
        if token is None or token == vocab.blank or token in vocab.unused:
            return []
        ids.append(token)
    if not ids or not vocab.starts_word[ids[0]] or vocab.starts_word[ids[1:]].any():
        return []
    return [tuple(ids)]


def load_tokenizer(path: str | Path) -> Tokenize:
    """word -> its pieces, by a SentencePiece model (``.model``) or a Hugging Face tokenizer file
    (``tokenizer.json``). FileNotFoundError / ImportError / ValueError name the file and fix."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"tokenizer not found: {path} (a SentencePiece .model or a "
                                "Hugging Face tokenizer.json)")
    if path.suffix == ".json":
        try:
            from tokenizers import Tokenizer
        except ImportError as exc:  # pragma: no cover - comes with transformers
            raise ImportError("reading tokenizer.json needs: pip install tokenizers") from exc
        try:
            hf = Tokenizer.from_file(str(path))
        except Exception as exc:  # noqa: BLE001 - the library raises plain Exception
            raise ValueError(f"{path} is not a Hugging Face tokenizer file ({exc})") from None
        return lambda word: list(hf.encode(word, add_special_tokens=False).tokens)
    try:
        import sentencepiece
    except ImportError as exc:
        raise ImportError(f"{path} looks like a SentencePiece model, which needs: "
                          "pip install sentencepiece") from exc
    try:
        sp = sentencepiece.SentencePieceProcessor(model_file=str(path))
    except (RuntimeError, OSError) as exc:
        raise ValueError(f"{path} is not a SentencePiece model ({exc})") from None
    return lambda word: list(sp.encode(word, out_type=str))
