"""Word n-gram language models: build with KenLM's tools, load, score; lexicons and unigram lists.

- ctclab.lm.language_model: LanguageModel and BatchLanguageModel (what decoders fuse: a word, or
  arrays of words at a time), KenLMLanguageModel, load_language_model
- ctclab.lm.array_lm: ArrayLanguageModel, load_array_lm (KenLM's scores from sorted arrays, built
  once by lm.array_build into an mmap-able file of lm.array_file)
- ctclab.lm.scalar_batch: a word-at-a-time LM (KenLM) behind the array interface, with its cache
- ctclab.lm.loaded: load_lm -> LoadedLM (path, model, known words, casing), once per process and
  form (backend 'kenlm', 'arrays' or 'auto')
- ctclab.lm.sentence: SentenceScorer, KenLMSentenceScorer (whole sentences, for n-best rescoring)
- ctclab.lm.files: resolve_lm_path (.arpa.gz -> cached .arpa, known names -> download)
- ctclab.lm.unigrams: read_unigrams / write_unigrams (ARPA streamed, word lists, lexicons)
- ctclab.lm.casing: WordMapper, make_word_mapper, oov_rate (acoustic words -> LM words)
- ctclab.lm.arpa: ARPA header, streaming sections, validation with file/line errors
- ctclab.lm.corpus: CorpusNormalizer (core.normalize's steps + the vocabulary's word filter)
- ctclab.lm.build (python lm/build.py): text -> normalised corpus -> lmplz -> build_binary
- ctclab.lm.tools (python -m ctclab.lm.tools install|which): KenLM's lmplz/build_binary/query
- ctclab.lm.fetch (python -m ctclab.lm.fetch list|NAME): LibriSpeech LMs from OpenSLR 11
"""
