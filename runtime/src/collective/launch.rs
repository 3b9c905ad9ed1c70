//! Which rank this process is, read from the launcher's environment (mpirun, srun), and the
//! choice of engine behind the [`Collective`] seam: one place turns the environment into a
//! collective, the loop never looks at the launcher.

use std::path::Path;

use crate::collective::{Collective, SingleProcess};

/// This process's place in the job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RankEnv {
    /// Global rank, `0..world_size`.
    pub rank: usize,
    /// Number of ranks.
    pub world_size: usize,
    /// Rank among the ranks on this node (picks the GPU).
    pub local_rank: usize,
    /// Who started the process.
    pub launcher: Launcher,
}

/// The program that started the ranks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Launcher {
    /// Started directly (a single rank).
    None,
    /// Open MPI's `mpirun` (`OMPI_COMM_WORLD_*`).
    OpenMpi,
    /// Slurm's `srun` (`SLURM_PROCID`, `SLURM_STEP_NUM_TASKS`, `SLURM_LOCALID`).
    Srun,
}

/// The launcher's environment is inconsistent or names an engine this binary lacks.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// A variable is not a number or is out of range.
    #[error("launcher variable {name}=`{value}`: {message}")]
    BadVariable {
        /// The variable.
        name: &'static str,
        /// Its value.
        value: String,
        /// What is wrong.
        message: String,
    },
    /// More than one rank, but this binary has no engine for this launcher and backend.
    #[error(
        "{world_size} ranks started by {launcher:?}, but this `sftctl-train` has no engine for them: {hint}"
    )]
    NoEngine {
        /// Number of ranks.
        world_size: usize,
        /// The launcher.
        launcher: Launcher,
        /// What to build or launch instead.
        hint: &'static str,
    },
    /// The engine failed to start.
    #[error("starting the collective engine: {0}")]
    Engine(String),
}

impl RankEnv {
    /// A single rank, not started by a launcher.
    pub const SINGLE: RankEnv = RankEnv {
        rank: 0,
        world_size: 1,
        local_rank: 0,
        launcher: Launcher::None,
    };

    /// Read the process's environment.
    pub fn from_env() -> Result<Self, LaunchError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Read rank, world size and local rank through `get`. Open MPI's variables win over
    /// Slurm's: under `mpirun` inside an allocation the processes also see the variables of
    /// the Slurm step that started Open MPI's daemons. Slurm's are used only inside a step
    /// (`SLURM_STEP_ID` set): the batch script itself sees `SLURM_NTASKS` but is one process.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, LaunchError> {
        let num = |name: &'static str| -> Result<Option<usize>, LaunchError> {
            match get(name) {
                None => Ok(None),
                Some(v) => {
                    v.trim()
                        .parse::<usize>()
                        .map(Some)
                        .map_err(|e| LaunchError::BadVariable {
                            name,
                            value: v.clone(),
                            message: e.to_string(),
                        })
                }
            }
        };
        let (rank, world, local, launcher, world_name) =
            if let Some(world) = num("OMPI_COMM_WORLD_SIZE")? {
                let rank = num("OMPI_COMM_WORLD_RANK")?.unwrap_or(0);
                let local = num("OMPI_COMM_WORLD_LOCAL_RANK")?.unwrap_or(0);
                (
                    rank,
                    world,
                    local,
                    Launcher::OpenMpi,
                    "OMPI_COMM_WORLD_SIZE",
                )
            } else if get("SLURM_STEP_ID").is_some()
                && let Some(world) = num("SLURM_STEP_NUM_TASKS")?.or(num("SLURM_NTASKS")?)
            {
                let rank = num("SLURM_PROCID")?.unwrap_or(0);
                let local = num("SLURM_LOCALID")?.unwrap_or(0);
                (rank, world, local, Launcher::Srun, "SLURM_STEP_NUM_TASKS")
            } else {
                return Ok(Self::SINGLE);
            };
        if world == 0 || rank >= world {
            return Err(LaunchError::BadVariable {
                name: world_name,
                value: world.to_string(),
                message: format!("rank {rank} is not below the world size {world}"),
            });
        }
        Ok(Self {
            rank,
            world_size: world,
            local_rank: local,
            launcher,
        })
    }
}

/// The collective for this process: [`SingleProcess`] for one rank, MPI under `mpirun` (feature
/// `mpi`), NCCL under `srun` on a CUDA device (feature `nccl`, `cuda_device` = the CUDA ordinal
/// the model lives on). `run_dir` is the run's ledger directory: heartbeats (and NCCL's unique
/// id) go under `run_dir/dist/`.
pub fn connect(
    env: &RankEnv,
    run_dir: &Path,
    cuda_device: Option<usize>,
) -> Result<Box<dyn Collective>, LaunchError> {
    let _ = (run_dir, cuda_device);
    if env.world_size == 1 && env.launcher == Launcher::None {
        return Ok(Box::new(SingleProcess));
    }
    match env.launcher {
        Launcher::OpenMpi => {
            #[cfg(feature = "mpi")]
            return crate::collective::mpi::MpiCollective::init(Some(run_dir))
                .map(|c| Box::new(c) as Box<dyn Collective>)
                .map_err(|e| LaunchError::Engine(e.to_string()));
            #[cfg(not(feature = "mpi"))]
            if env.world_size == 1 {
                return Ok(Box::new(SingleProcess));
            }
            #[cfg(not(feature = "mpi"))]
            return Err(LaunchError::NoEngine {
                world_size: env.world_size,
                launcher: env.launcher,
                hint: "build sftctl-runtime with `--features mpi`",
            });
        }
        Launcher::Srun => {
            if env.world_size == 1 {
                return Ok(Box::new(SingleProcess));
            }
            #[cfg(feature = "nccl")]
            if let Some(ordinal) = cuda_device {
                let c = crate::collective::nccl::NcclCollective::init(env, run_dir, ordinal)
                    .map_err(|e| LaunchError::Engine(e.to_string()))?;
                return Ok(Box::new(c));
            }
            Err(LaunchError::NoEngine {
                world_size: env.world_size,
                launcher: env.launcher,
                hint: "srun ranks need a CUDA device and `--features nccl`; CPU ranks start with \
                       `mpirun` and `--features mpi` (docs/distributed.md)",
            })
        }
        Launcher::None => Ok(Box::new(SingleProcess)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &[(&str, &str)]) -> Result<RankEnv, LaunchError> {
        RankEnv::from_lookup(|k| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        })
    }

    #[test]
    fn launcher_variables_give_rank_world_and_local_rank() {
        use Launcher::*;
        // (variables, rank, world, local rank, launcher)
        type Case<'a> = (&'a [(&'a str, &'a str)], usize, usize, usize, Launcher);
        let cases: &[Case] = &[
            (&[], 0, 1, 0, None),
            (
                &[("SLURM_NTASKS", "4"), ("SLURM_PROCID", "0")],
                0,
                1,
                0,
                None,
            ),
            (
                &[
                    ("OMPI_COMM_WORLD_SIZE", "2"),
                    ("OMPI_COMM_WORLD_RANK", "1"),
                    ("OMPI_COMM_WORLD_LOCAL_RANK", "0"),
                ],
                1,
                2,
                0,
                OpenMpi,
            ),
            (
                &[
                    ("SLURM_STEP_ID", "0"),
                    ("SLURM_STEP_NUM_TASKS", "4"),
                    ("SLURM_PROCID", "3"),
                    ("SLURM_LOCALID", "1"),
                ],
                3,
                4,
                1,
                Srun,
            ),
            (
                &[
                    ("OMPI_COMM_WORLD_SIZE", "2"),
                    ("OMPI_COMM_WORLD_RANK", "0"),
                    ("SLURM_STEP_ID", "0"),
                    ("SLURM_STEP_NUM_TASKS", "2"),
                    ("SLURM_PROCID", "1"),
                ],
                0,
                2,
                0,
                OpenMpi,
            ),
        ];
        for (vars, rank, world, local, launcher) in cases {
            let e = env(vars).unwrap();
            assert_eq!(
                (e.rank, e.world_size, e.local_rank, e.launcher),
                (*rank, *world, *local, *launcher),
                "{vars:?}"
            );
        }
    }

    #[test]
    fn bad_launcher_variables_are_named() {
        let e = env(&[("OMPI_COMM_WORLD_SIZE", "two")]).unwrap_err();
        assert!(e.to_string().contains("OMPI_COMM_WORLD_SIZE=`two`"), "{e}");
        let e = env(&[("OMPI_COMM_WORLD_SIZE", "2"), ("OMPI_COMM_WORLD_RANK", "2")]).unwrap_err();
        assert!(e.to_string().contains("not below the world size 2"), "{e}");
    }

    #[test]
    fn one_rank_connects_without_an_engine() {
        let c = connect(&RankEnv::SINGLE, Path::new("/nonexistent"), None).unwrap();
        assert_eq!((c.rank(), c.world_size()), (0, 1));
    }
}
