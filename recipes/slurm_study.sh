#!/bin/bash
# Run a study as a SLURM job array: one array task per fine-tuning run, one GPU each.
#
#   hfgal study run --config full --output-dir studies/full --emit-commands commands.txt
#   sbatch --array=1-$(wc -l < commands.txt)%8 recipes/slurm_study.sh commands.txt
#   # when every task is done (afterok dependency or by hand):
#   hfgal study report studies/full
#
# Each line of commands.txt is the exact command of one run (`accelerate launch --num_processes 1 -m hfgal.train
# ... --resume_from_checkpoint true`, the recipe of the installed hfgal, so the nodes need the same environment,
# not a checkout): a pre-empted or requeued task resumes from its last checkpoint, and a task whose run already
# finished exits at once. Re-emitting after a partial array lists only the runs still to do.
#SBATCH --job-name=hfgal-study
#SBATCH --gres=gpu:1
#SBATCH --cpus-per-task=8
#SBATCH --mem=48G
#SBATCH --time=06:00:00
#SBATCH --requeue
#SBATCH --output=logs/%x-%A_%a.out
set -euo pipefail

COMMANDS=${1:-commands.txt}
cd "${SLURM_SUBMIT_DIR:-.}"
mkdir -p logs
echo "task ${SLURM_ARRAY_TASK_ID} on $(hostname): $(sed -n "${SLURM_ARRAY_TASK_ID}p" "$COMMANDS")"
sed -n "${SLURM_ARRAY_TASK_ID}p" "$COMMANDS" | bash
