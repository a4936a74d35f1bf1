"""The report's sections and headline findings of the companion studies, one module each:
pruning orders (`orders`: random and layer location against importance order), fine-tuning
after pruning and compensation (`finetune`), both Budhraja et al.; importance estimators
against exact ablation (`estimators`); weight-magnitude pruning (`sparsity`, Gordon et al.).
Each module gives its `SECTION` (what, builder) and its `FINDER`.

Every number is computed from the study's tables: `order_curves`, `curves` (the importance
reference), `order_finetune`, `compensation`, `compensation_layers`,
`estimator_agreement`, `sparsity`. Means and standard deviations are over seeds (and, for
random order, over its draws too): population standard deviation, as in the rest of the
report.
"""
