"""The study: a declarative, resumable run directory built from jobs.

`config` reads and checks a study TOML; `units` is the run directory and its resumable
units; `plan` runs the reference study's units per model, task and seed; `companion` the
companion studies' units; `tables` writes the tidy tables; `demo` is the offline demo's
configuration. The report on top of the tables is `headcount.report`.
"""
