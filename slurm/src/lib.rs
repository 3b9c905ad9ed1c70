//! The only code that runs Slurm commands (sbatch, squeue, sacct, scancel, scontrol) and parses their output. Knows nothing about sweeps.
