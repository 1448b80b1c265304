"""Evaluation of CTC decoders over cached emissions: systems, the decode-and-score loop, tuning,
results folders and reports. One module per job:

- run (python eval/run.py): the command line only; emit (python eval/emit.py): the emission CLI
- systems: System, build_systems, DecoderFactory      - runner: EvalSettings, evaluate
- tuning: tune_plan, tune_systems (search: tune)      - report: console_table, summary_markdown/tsv
- records: the result types; results: ResultsFolder   - progress: DecodeProgress
- word confidence: word_records (per-word JSONL records), confidence_metrics (right/wrong, ECE,
  AUC), calibration (calibrators, calibration.json), calibrating (fit per system on dev)
- n-best lists: oracle (oracle WER), rescore (+ causal_lm: re-ranking with a second LM)
- cached_models: pick_model (the one cached model, without --model)
- metrics, stats, oov; analysis + utterance_analysis: what the notebooks read (labels, runs,
  sweeps, tuning grids, substitutions, per-utterance errors, word confidence, emission statistics)
- the caches come from ctclab.emission.stage.open_emissions
"""
