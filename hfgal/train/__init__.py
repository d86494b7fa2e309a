"""Training stage: the recipe's arguments (args), `GZ10Trainer` (trainer), metrics and confusion matrices, carbon
tracking, resuming and shared training (resume), the machine (hardware), and the run record `RunRecord` with the
run folder's file names (results)."""
