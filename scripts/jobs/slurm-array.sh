#!/bin/bash
# One rhobench sweep split over a Slurm job array: task i of n runs shard i/n (0-based) of the
# config's grid into its own run folder on shared storage. Merge the shards afterwards with
# `rhobench merge` (see scripts/jobs/README.md; a dependent job for it is shown at the end).
#
#   sbatch --export=ALL,CONFIG=bench/presets/orekondy2020-mnist.json scripts/jobs/slurm-array.sh
#
# The array size below must stay 0-based (--array=0-(n-1)): SLURM_ARRAY_TASK_ID is the shard index
# and SLURM_ARRAY_TASK_COUNT the shard count. Change 0-3 to split into another number of shards.
#
#SBATCH --job-name=rhobench-sweep
#SBATCH --array=0-3
#SBATCH --ntasks=1
#SBATCH --gres=gpu:1
#SBATCH --cpus-per-task=8
#SBATCH --mem=32G
#SBATCH --time=12:00:00
# Preempted or failed-node tasks are put back in the queue; --resume below makes the requeued
# task continue its run folder instead of starting over.
#SBATCH --requeue
# SIGTERM two minutes before the time limit: rhobench writes what has finished and exits 130.
#SBATCH --signal=TERM@120
#SBATCH --output=rhobench-%A_%a.out

set -euo pipefail

: "${CONFIG:?set CONFIG to a sweep config path or preset name (sbatch --export=ALL,CONFIG=...)}"
SHARED="${SHARED:-/shared/rhobench}"
RESULTS="${RESULTS:-$SHARED/results}"
# One name for the whole array, stable across requeues (SLURM_ARRAY_JOB_ID does not change).
RUN_NAME="${RUN_NAME:-$(basename "$CONFIG" .json)-$SLURM_ARRAY_JOB_ID}"
RUN_ID="$RUN_NAME-shard$SLURM_ARRAY_TASK_ID"

# Datasets and trained targets, shared so every shard imitates the same target models (each
# entry is written atomically; two shards training the same target at once is safe).
export RHOBENCH_CACHE="${RHOBENCH_CACHE:-$SHARED/cache}"
mkdir -p "$RESULTS" "$RHOBENCH_CACHE"

# The repository (with node_modules installed) on the node; sbatch's submit folder by default.
cd "${RHOBENCH_DIR:-$SLURM_SUBMIT_DIR}"

echo "shard $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT of $CONFIG -> $RESULTS/$RUN_ID (restart ${SLURM_RESTART_COUNT:-0})"

# srun makes the sweep a job step, so --signal reaches it. A bare --resume continues
# $RESULTS/$RUN_ID when an earlier attempt left a run there and starts it otherwise.
# Exit codes: 0 all cells ran, 1 some cells failed (recorded in cells.jsonl), 2 bad input,
# 130 stopped by a signal (finished cells kept).
srun npx rhobench sweep "$CONFIG" \
  --shard "$SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT" \
  --results "$RESULTS" \
  --run-id "$RUN_ID" \
  --resume

# Then, once every task has ended (afterany: a shard with failed cells exits 1, and merge
# decides what is missing):
#
#   jobid=$(sbatch --parsable --export=ALL,CONFIG=quick scripts/jobs/slurm-array.sh)
#   sbatch --dependency=afterany:$jobid --wrap \
#     "npx rhobench merge /shared/rhobench/results/quick-$jobid /shared/rhobench/results/quick-$jobid-shard*"
