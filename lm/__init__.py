"""Word n-gram language models: build with KenLM's tools, load, score; lexicons and unigram lists.

- ctclab.lm.language_model: LanguageModel (what decoders fuse), KenLMLanguageModel, load_language_model
- ctclab.lm.loaded: load_lm -> LoadedLM (path, model, known words, casing), once per process
- ctclab.lm.files: resolve_lm_path (.arpa.gz -> cached .arpa, known names -> download)
- ctclab.lm.unigrams: read_unigrams / write_unigrams (ARPA streamed, word lists, lexicons)
- ctclab.lm.casing: WordMapper, make_word_mapper, oov_rate (acoustic words -> LM words)
- ctclab.lm.arpa: ARPA header, streaming sections, validation with file/line errors
- ctclab.lm.corpus: CorpusNormalizer (core.normalize's steps + the vocabulary's word filter)
- ctclab.lm.build (python lm/build.py): text -> normalised corpus -> lmplz -> build_binary
- ctclab.lm.tools (python -m ctclab.lm.tools install|which): KenLM's lmplz/build_binary/query
- ctclab.lm.fetch (python -m ctclab.lm.fetch list|NAME): LibriSpeech LMs from OpenSLR 11
"""
