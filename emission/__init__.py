"""The emission stage: run a CTC model over a corpus once and cache its per-frame log-probs.

- ctclab.emission.stage: open_emissions (the one entry point: a split's cache found, imported or
  computed), ModelLoader, EmissionResult
- ctclab.emission.options: EmissionSpec, SourceOptions, ExtractOptions (declared once; both
  commands' flags are generated from them)
- ctclab.emission.audio_sources: OpenSLR folders, HF datasets, manifests (listing, probing, reading)
- ctclab.emission.models: load_ctc_model, resolve_revision; hub: fast offline checks
- ctclab.emission.ctc_model: CTCModel (what every path runs); hf_models: any transformers CTC
  type as a CTCModel; front_end: its feature extractor per utterance; exactness / padding: exact
  padded batches
- ctclab.emission.sync: a cache against its source (extend, update references, refuse)
- ctclab.emission.extract: the batched model run; cache: EmissionCache, CacheWriter, CacheMeta
- ctclab.emission.importer: emissions made elsewhere, keyed by content; locate: find caches
"""
