//! The MPI engine behind the [`Collective`] seam (feature `mpi`): Open MPI through the `mpi`
//! crate, for CPU ranks started by `mpirun` (inside a Slurm allocation on the local cluster,
//! `mpirun` starts one rank per node). Host buffers only; reductions are MPI's.
//!
//! MPI's default error handler aborts the whole job on a transport error, and a rank that dies
//! makes `mpirun` kill the others; a rank that is stopped or hung is caught by the heartbeat
//! files of [`crate::collective::liveness`], whose watcher calls `MPI_Abort`; so is a collective
//! that never returns because a live peer never joins it (every call runs under the watcher's
//! [`CollectiveClock`]).

use std::path::Path;
use std::time::Instant;

use mpi::collective::{CommunicatorCollectives, Root, SystemOperation};
use mpi::environment::Universe;
use mpi::topology::{Communicator, SimpleCommunicator};

use crate::collective::liveness::{CollectiveClock, Liveness, LivenessConfig};
use crate::collective::{Collective, CollectiveError};

/// Exit status of a job aborted because a rank stopped answering.
pub const ABORT_RANK_LOST: i32 = 70;

/// Time spent in collectives and bytes this rank contributed to them (for the benchmark and
/// the step log).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CommStats {
    /// Collective calls.
    pub calls: u64,
    /// Bytes contributed by this rank.
    pub bytes: u64,
    /// Seconds spent inside collectives (including waiting for slower ranks).
    pub seconds: f64,
}

/// MPI could not start.
#[derive(Debug, thiserror::Error)]
pub enum MpiError {
    /// `MPI_Init_thread` was already called in this process.
    #[error("MPI is already initialized in this process")]
    AlreadyInitialized,
    /// The heartbeat directory could not be written.
    #[error("rank {rank}: heartbeat directory: {source}")]
    Liveness {
        /// This rank.
        rank: usize,
        /// The I/O error (names the path).
        source: std::io::Error,
    },
    /// A setting from the environment is invalid.
    #[error("rank {rank}: {message}")]
    Setting {
        /// This rank.
        rank: usize,
        /// What is wrong.
        message: String,
    },
}

/// The collective over `MPI_COMM_WORLD`.
pub struct MpiCollective {
    // Dropped before the universe: the heartbeat stops (and says `done`) before MPI_Finalize.
    liveness: Option<Liveness>,
    world: SimpleCommunicator,
    rank: usize,
    size: usize,
    check_every: u64,
    stats: CommStats,
    // Shared with the heartbeat thread, which aborts a collective that never returns.
    clock: std::sync::Arc<CollectiveClock>,
    _universe: Universe,
}

impl std::fmt::Debug for MpiCollective {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MpiCollective")
            .field("rank", &self.rank)
            .field("size", &self.size)
            .field("check_every", &self.check_every)
            .field("stats", &self.stats)
            .finish()
    }
}

impl MpiCollective {
    /// Initialize MPI and, when `run_dir` is given, start the heartbeat under
    /// `run_dir/dist/heartbeat-<attempt>/` (the name is chosen by rank 0 and broadcast, so a
    /// retry never reads the files of an earlier attempt).
    pub fn init(run_dir: Option<&Path>) -> Result<Self, MpiError> {
        let (universe, threading) = mpi::initialize_with_threading(mpi::Threading::Multiple)
            .ok_or(MpiError::AlreadyInitialized)?;
        let world = universe.world();
        let rank = world.rank() as usize;
        let size = world.size() as usize;
        let check_every = crate::collective::replicas::check_every_from_env()
            .map_err(|message| MpiError::Setting { rank, message })?;
        let mut this = Self {
            liveness: None,
            world,
            rank,
            size,
            check_every,
            stats: CommStats::default(),
            clock: Default::default(),
            _universe: universe,
        };
        if let Some(run_dir) = run_dir
            && size > 1
        {
            let mut token = if rank == 0 {
                let nanos = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos())
                    .unwrap_or(0);
                format!("heartbeat-{}-{nanos}", std::process::id()).into_bytes()
            } else {
                Vec::new()
            };
            this.broadcast_bytes(0, &mut token)
                .map_err(|e| MpiError::Setting {
                    rank,
                    message: e.to_string(),
                })?;
            let dir = run_dir
                .join("dist")
                .join(String::from_utf8_lossy(&token).as_ref());
            let mut config = LivenessConfig::from_env(dir)
                .map_err(|message| MpiError::Setting { rank, message })?;
            config.clock = std::sync::Arc::clone(&this.clock);
            let multiple = threading == mpi::Threading::Multiple;
            let on_dead = Box::new(move |message: String| {
                eprintln!("error: {message}");
                tracing::error!("{message}");
                if multiple {
                    // MPI_Abort from this thread is allowed at MPI_THREAD_MULTIPLE; mpirun then
                    // kills every rank, including the one that stopped.
                    SimpleCommunicator::world().abort(ABORT_RANK_LOST);
                }
                std::process::exit(ABORT_RANK_LOST);
            });
            this.liveness = Some(
                Liveness::start(config, rank, size, on_dead)
                    .map_err(|source| MpiError::Liveness { rank, source })?,
            );
        }
        Ok(this)
    }

    /// Time and bytes spent in collectives so far.
    pub fn stats(&self) -> CommStats {
        self.stats
    }

    /// Block until every rank reaches this call.
    pub fn barrier(&mut self) {
        self.timed("barrier", |w| w.barrier());
    }

    /// Runs one collective `op` under the clock the heartbeat thread watches.
    fn timed<T>(&mut self, op: &'static str, f: impl FnOnce(&SimpleCommunicator) -> T) -> T {
        self.clock.enter(op);
        let out = f(&self.world);
        self.clock.leave();
        out
    }

    fn account(&mut self, started: Instant, bytes: usize) {
        self.stats.calls += 1;
        self.stats.bytes += bytes as u64;
        self.stats.seconds += started.elapsed().as_secs_f64();
    }
}

impl Collective for MpiCollective {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world_size(&self) -> usize {
        self.size
    }

    fn all_reduce_sum_f32(&mut self, values: &mut [f32]) -> Result<(), CollectiveError> {
        let started = Instant::now();
        let send = values.to_vec();
        self.timed("all_reduce_sum_f32", |w| {
            w.all_reduce_into(&send[..], values, SystemOperation::sum())
        });
        self.account(started, std::mem::size_of_val(values));
        Ok(())
    }

    fn all_reduce_sum_u64(&mut self, value: u64) -> Result<u64, CollectiveError> {
        let started = Instant::now();
        let mut out = 0u64;
        self.timed("all_reduce_sum_u64", |w| {
            w.all_reduce_into(&value, &mut out, SystemOperation::sum())
        });
        self.account(started, 8);
        Ok(out)
    }

    fn all_reduce_sum_f64(&mut self, value: f64) -> Result<f64, CollectiveError> {
        let started = Instant::now();
        let mut out = 0f64;
        self.timed("all_reduce_sum_f64", |w| {
            w.all_reduce_into(&value, &mut out, SystemOperation::sum())
        });
        self.account(started, 8);
        Ok(out)
    }

    fn any(&mut self, flag: bool) -> Result<bool, CollectiveError> {
        let started = Instant::now();
        let mine = u32::from(flag);
        let mut out = 0u32;
        self.timed("any", |w| {
            w.all_reduce_into(&mine, &mut out, SystemOperation::max())
        });
        self.account(started, 4);
        Ok(out != 0)
    }

    fn broadcast_bytes(&mut self, root: usize, bytes: &mut Vec<u8>) -> Result<(), CollectiveError> {
        if root >= self.size {
            return Err(CollectiveError::Transport {
                op: "broadcast_bytes",
                rank: self.rank,
                message: format!("root {root} is not below the world size {}", self.size),
            });
        }
        let started = Instant::now();
        let me = self.rank;
        self.timed("broadcast_bytes", |w| {
            let process = w.process_at_rank(root as i32);
            let mut len = bytes.len() as u64;
            process.broadcast_into(&mut len);
            if me != root {
                bytes.clear();
                bytes.resize(len as usize, 0);
            }
            process.broadcast_into(&mut bytes[..]);
        });
        self.account(started, 8 + bytes.len());
        Ok(())
    }

    fn replica_check_every(&self) -> Option<u64> {
        (self.size > 1).then_some(self.check_every)
    }

    fn reduce_scatter_sum_f32(
        &mut self,
        send: &[f32],
        recv: &mut [f32],
    ) -> Result<(), CollectiveError> {
        crate::collective::check_blocks(
            "reduce_scatter_sum_f32",
            self.rank,
            self.size,
            recv.len(),
            send.len(),
        )?;
        let started = Instant::now();
        self.world
            .reduce_scatter_block_into(send, recv, SystemOperation::sum());
        self.account(started, std::mem::size_of_val(send));
        Ok(())
    }

    fn all_gather_f32(&mut self, send: &[f32], recv: &mut [f32]) -> Result<(), CollectiveError> {
        crate::collective::check_blocks(
            "all_gather_f32",
            self.rank,
            self.size,
            send.len(),
            recv.len(),
        )?;
        let started = Instant::now();
        self.world.all_gather_into(send, recv);
        self.account(started, std::mem::size_of_val(send));
        Ok(())
    }
}
