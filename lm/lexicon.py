"""Pronunciation lexicons: ``word<TAB>tok tok tok``, one spelling a line, several lines per word.

The format is flashlight's and torchaudio's (their letter lexicons end each spelling with the
word delimiter, ``hello<TAB>h e l l o |``: a trailing delimiter is accepted and dropped). A word's
several lines are several pronunciations of one word: the LM sees one word.

    lex = read_lexicon("en.ipa-lexicon.tsv", vocab)          # checks every token against vocab
    lex.words[lex.owners[k]], lex.spellings[k]               # spelling k: its word, its token ids

Every malformed line is an error naming the file, the line and the fix; a token the model does not
have names the word, the token and the line (``skip_unknown_tokens`` skips such lines and counts
them in ``Lexicon.skipped`` instead).
"""
from __future__ import annotations

import os
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ctclab.core.vocabulary import Vocabulary
from ctclab.lm.arpa import open_text

# Lines quoted in an error about tokens the model lacks (the rest are counted).
SHOWN_BAD_LINES = 5


@dataclass(frozen=True)
class Lexicon:
    """A pronunciation lexicon checked against a vocabulary.

    words: distinct words in file order (word id = index). spellings[k]: token ids of spelling k;
    owners[k]: its word id; lines[k]: its line number in the file. skipped: lines left out because
    they use tokens the vocabulary lacks (only with skip_unknown_tokens).
    """

    path: str
    words: tuple[str, ...]
    spellings: tuple[tuple[int, ...], ...]
    owners: tuple[int, ...]
    lines: tuple[int, ...]
    skipped: int = 0

    def __len__(self) -> int:
        return len(self.spellings)

    def reads_as_words(self, vocab: Vocabulary) -> bool:
        """True when most spellings read as their own word in the labels' text (a letter or word
        piece lexicon), False for a pronunciation lexicon (phonemes)."""
        same = sum(vocab.decode_tokens(s).lower() == self.words[w].lower()
                   for s, w in zip(self.spellings, self.owners, strict=True))
        return same * 2 > len(self.spellings)


def read_lexicon(path: str | os.PathLike, vocab: Vocabulary, *,
                 skip_unknown_tokens: bool = False) -> Lexicon:
    """Read and check ``path`` (UTF-8, gzip allowed) against ``vocab``'s labels.

    Raises FileNotFoundError, or ValueError for: a line without a tab between word and spelling,
    an empty word or spelling, a word with whitespace, a repeated line, a spelling that uses the
    blank, an unused token or the delimiter inside, a token the vocabulary lacks (unless
    ``skip_unknown_tokens``), word-piece spellings whose first piece does not start a word (or a
    later one does), and a file with no usable line.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"lexicon not found: {path} (--lexicon FILE: word<TAB>tok tok tok)")
    token_ids = _token_lookup(vocab)
    words: dict[str, int] = {}
    spellings: list[tuple[int, ...]] = []
    owners: list[int] = []
    lines: list[int] = []
    seen: dict[tuple[str, tuple[int, ...]], int] = {}
    unknown: list[str] = []
    for line_no, word, tokens in _entries(path):
        ids: list[int] = []
        missing = next((t for t in tokens if t not in token_ids), None)
        if missing is not None:
            unknown.append(f"line {line_no}: word {word!r} uses token {missing!r}")
            continue
        ids = [token_ids[t] for t in tokens]
        if vocab.delimiter is not None and ids and ids[-1] == vocab.delimiter:
            ids.pop()  # flashlight / torchaudio letter lexicons end spellings with the delimiter
        _check_spelling(path, line_no, word, ids, vocab)
        key = (word, tuple(ids))
        if key in seen:
            raise ValueError(f"{path}:{line_no}: repeats line {seen[key]} ({word!r} spelled the "
                             "same way); remove the duplicate")
        seen[key] = line_no
        spellings.append(tuple(ids))
        owners.append(words.setdefault(word, len(words)))
        lines.append(line_no)
    if unknown and not skip_unknown_tokens:
        shown = "; ".join(unknown[:SHOWN_BAD_LINES])
        more = f" (and {len(unknown) - SHOWN_BAD_LINES} more lines)" if len(unknown) > \
            SHOWN_BAD_LINES else ""
        raise ValueError(f"{path}: spellings use tokens the model does not have: {shown}{more}. "
                         f"The model's tokens are {_preview(vocab)}; fix those lines, or skip "
                         "them with --skip-unknown-tokens (skip_unknown_tokens=True)")
    if not spellings:
        why = f" ({len(unknown)} lines use tokens the model lacks)" if unknown else ""
        raise ValueError(f"{path}: the lexicon has no usable line{why}; expected "
                         "word<TAB>tok tok tok lines")
    return Lexicon(str(path), tuple(words), tuple(spellings), tuple(owners), tuple(lines),
                   len(unknown))


def _entries(path: Path) -> Iterable[tuple[int, str, list[str]]]:
    """(line number, word, tokens) of each non-blank line; ValueError for a malformed one."""
    line_no = 0
    try:
        with open_text(path) as f:
            for line_no, raw in enumerate(f, start=1):
                line = raw.rstrip("\r\n")
                if not line.strip():
                    continue
                if "\t" not in line:
                    raise ValueError(f"{path}:{line_no}: no tab between the word and its "
                                     f"spelling in {line[:60]!r}; lexicon lines are "
                                     "word<TAB>tok tok tok")
                word, spelling = line.split("\t", 1)
                word = word.strip()
                tokens = spelling.split()
                if not word or not tokens:
                    raise ValueError(f"{path}:{line_no}: empty {'word' if not word else 'spelling'}"
                                     f" in {line[:60]!r}; lexicon lines are word<TAB>tok tok tok")
                if len(word.split()) != 1:
                    raise ValueError(f"{path}:{line_no}: the word {word!r} contains whitespace; "
                                     "one word a line (word<TAB>tok tok tok)")
                yield line_no, word, tokens
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not UTF-8 text near line {line_no + 1} ({exc.reason})"
                         ) from None
    except (EOFError, OSError, zlib.error) as exc:
        raise ValueError(f"{path}: unreadable near line {line_no + 1} ({exc})") from None


def _token_lookup(vocab: Vocabulary) -> dict[str, int]:
    """Token string -> id for every label a spelling may use (also in the labels' letter case)."""
    out: dict[str, int] = {}
    for i, label in enumerate(vocab.labels):
        out[label] = i
        if vocab.case == "upper":
            out.setdefault(label.lower(), i)
        elif vocab.case == "lower":
            out.setdefault(label.upper(), i)
    if vocab.delimiter is not None:  # flashlight's letter lexicons write the delimiter as '|'
        out.setdefault("|", vocab.delimiter)
    return out


def _check_spelling(path: Path, line_no: int, word: str, ids: list[int],
                    vocab: Vocabulary) -> None:
    where = f"{path}:{line_no}: {word!r}"
    if not ids:
        raise ValueError(f"{where} is spelled by the delimiter alone; give its tokens")
    for token in ids:
        if token == vocab.blank or token in vocab.unused:
            raise ValueError(f"{where} uses {vocab.labels[token]!r}, which the model never emits "
                             "(blank or unused); spell words with emitted tokens only")
        if token == vocab.delimiter:
            raise ValueError(f"{where} has the word delimiter {vocab.labels[token]!r} inside its "
                             "spelling; a lexicon line spells one word")
    if vocab.word_start is not None:
        starts = vocab.starts_word
        if not starts[ids[0]] or starts[ids[1:]].any():
            raise ValueError(
                f"{where} is not spelled in word pieces: the first piece must start with "
                f"{vocab.word_start!r} and no later one may (got "
                f"{' '.join(vocab.labels[t] for t in ids)}). Is this a letter or phoneme lexicon? "
                "A word-piece model spells words with its own tokenizer (--tokenizer FILE)")


def _preview(vocab: Vocabulary) -> str:
    shown = [vocab.labels[int(i)] for i in vocab.emitting_ids[:30]]
    return " ".join(shown) + (" ..." if len(vocab.emitting_ids) > 30 else "")


def map_to_lm_words(words: Iterable[str], lm_words: set[str] | None) -> tuple[list[str], int]:
    """Each lexicon word in the LM's casing (identity, lower or upper: whichever the LM knows most
    of) and how many the LM knows. Without an LM word list: the words unchanged, count -1."""
    words = list(words)
    if lm_words is None:
        return words, -1
    best: tuple[int, list[str]] | None = None
    for mapped in (words, [w.lower() for w in words], [w.upper() for w in words]):
        hits = sum(w in lm_words for w in mapped)
        if best is None or hits > best[0]:
            best = (hits, mapped)
    assert best is not None
    return best[1], best[0]
