"""The bottom of ctclab: the types and helpers every stage shares, importing no other stage.

- ctclab.core.vocabulary: Vocabulary (CTC labels, blank, word delimiter, never-emitted tokens)
- ctclab.core.hypothesis: Hypothesis, WordTimestamp (what every decoder returns)
- ctclab.core.validation: validate_log_probs (what every decoder accepts)
- ctclab.core.normalize: TextNormalizer (the one text normaliser: scoring, LM text, OOV reports)
- ctclab.core.options: option() fields with help text; add_option_flags / given_options turn
  options dataclasses into command-line flags (the one source of truth per option)
- ctclab.core.table: Table, the one renderer of tables (aligned text, Markdown, TSV)
- ctclab.core.progress: progress_bar (a tqdm bar on a terminal, plain lines in logs and pipes)
- ctclab.core.logs: show_notes (a command line prints the library's notes, or keeps quiet)
- ctclab.core.atomic: atomic file writes; ctclab.core.paths: the cache root
"""
