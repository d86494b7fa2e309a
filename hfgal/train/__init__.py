"""Training stage: the recipe (finetune: `hfgal train`, `python -m hfgal.train`), its arguments (args),
`GZ10Trainer` (trainer), learning-rate schedules the Trainer lacks (schedules), metrics, carbon tracking, resuming
and shared training (resume), the machine (hardware), and what a finished run writes into its folder (outputs; the
folder's contract itself is `hfgal.runs`)."""
