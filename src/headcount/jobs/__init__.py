"""Jobs: load -> compute -> record, one per command (no argument parsing, no printing).

Each job takes a model name or path and plain options, and returns the JSON-able record the
command writes: `measure` (importance, evaluation), `prune` (curves, pruned checkpoints),
`train` (fine-tuning), `weights` (weight-magnitude pruning), `analysis` (drift, correlation,
compensation), `mlm` (fitting a masked-LM head). `prepared` holds what they share: the data
options and the "resolve task -> load model -> prepare data" steps.
"""
