"""Word n-gram language models: build with KenLM's tools, load, score; lexicons and unigram lists.

- lm.language_model: LanguageModel (what decoders fuse), KenLMLanguageModel, load_language_model
- lm.files: resolve_lm_path (.arpa.gz -> cached .arpa, known names -> download)
- lm.unigrams: read_unigrams / write_unigrams (ARPA streamed, word lists, lexicons)
- lm.casing: WordMapper, make_word_mapper, oov_rate (acoustic words -> LM words)
- lm.oov (python -m lm.oov --lm LM --texts CACHE_DIR|FILE): OOV rate of reference texts
- lm.arpa: ARPA header, streaming sections, validation with file/line errors
- lm.build (python lm/build.py): text -> normalised corpus -> lmplz -> build_binary
- lm.tools (python -m lm.tools install|which): KenLM's lmplz/build_binary/query
- lm.fetch (python -m lm.fetch list|NAME): LibriSpeech LMs from OpenSLR 11
"""
from lm.language_model import KenLMLanguageModel, LanguageModel, load_language_model

__all__ = ["KenLMLanguageModel", "LanguageModel", "load_language_model"]
