#!/usr/bin/env bash
# An example SLURM batch script for the paper's ImageNet 32x32 run on several nodes (one MPI rank
# per node, its cores as threads). Submit with `sbatch tools/experiments/slurm_imagenet32.sh DATA_DIR`.
# SLURM sends SIGTERM to the ranks 10 minutes before the time limit (--signal): hepsim finishes the
# step, writes a mid-epoch checkpoint and exits with code 3, and the script queues its own
# continuation, which resumes exactly where the run stopped (README, "Training on several machines").
#SBATCH --job-name=hepsim-imagenet32
#SBATCH --nodes=4
#SBATCH --ntasks-per-node=1
#SBATCH --cpus-per-task=32
#SBATCH --time=24:00:00
#SBATCH --signal=TERM@600
set -uo pipefail
data="${1:?usage: sbatch $0 DATA_DIR (the ImageNet 32x32 npz files)}"
cd "${SLURM_SUBMIT_DIR:-.}"
run=runs/imagenet32_exact_homeo
if [[ -f "$run/checkpoint.h5" ]]; then
  args=(--resume "$run")
else
  args=(--config tools/configs/imagenet32_exact_homeo.json --data-dir "$data" --out "$run")
fi
# srun delivers SLURM's signal to every rank (mpirun would kill them soon after passing it on).
srun --mpi=pmix build/tools/hepsim train "${args[@]}" --threads "${SLURM_CPUS_PER_TASK}" --checkpoint-every 30m
code=$?
if [[ $code -eq 3 ]]; then sbatch tools/experiments/slurm_imagenet32.sh "$data"; fi  # stopped at the limit: continue
exit "$code"
