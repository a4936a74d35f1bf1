"""The study: a declarative, resumable run directory built from jobs.

`config` reads and checks a study TOML (its sections in `config_sections`, their value
checks in `config_checks`); `units` is the run directory, what a unit is about and the
resumable units; `plan` runs every unit per model, seed and task in order; `reference` holds
the reference study's units and rows, `companion` the companion studies', `pruned` the
fine-tuning after pruning that both use; `runner` runs a study into its tables, which
`tables` writes; `demo` is the offline demo's configuration. The report on top of the
tables is `headcount.report`.
"""
