"""Evaluation of CTC decoders over cached emissions: systems, the decode-and-score loop, tuning,
results folders and reports. One module per job:

- run (python eval/run.py): the command line only; emit (python eval/emit.py): the emission CLI
- systems: System, build_systems, DecoderFactory      - runner: EvalSettings, evaluate
- tuning: tune_plan, tune_systems (search: tune)      - report: console_table, summary_markdown/tsv
- records: the result types; results: ResultsFolder   - progress: DecodeProgress
- metrics, stats, analysis, oov (the caches come from ctclab.emission.stage.open_emissions)
"""
