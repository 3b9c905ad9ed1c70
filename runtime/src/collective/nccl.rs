//! The NCCL engine behind the [`Collective`] seam (feature `nccl`): CUDA ranks started by `srun`
//! (one task per GPU), no MPI. Rank 0 creates NCCL's unique id and writes it to a file in the
//! run's ledger directory (`dist/nccl-<job>-<step>-<restart>.id`, renamed into place so a
//! reader never sees half of it); the other ranks wait for that file. NCCL is loaded at run
//! time (`dynamic-loading`), so the binary builds and runs without CUDA.
//!
//! Reductions stage through one device buffer per call: the seam's host-side API
//! ([`Collective::all_reduce_sum_f32`]) is what the loop uses today; an in-place reduction of
//! the tch CUDA tensor itself needs its raw device pointer (unsafe, not done).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cudarc::driver::{CudaContext, CudaStream};
use cudarc::nccl::{Comm, Id, ReduceOp};

use crate::collective::launch::RankEnv;
use crate::collective::liveness::{CollectiveClock, Liveness, LivenessConfig};
use crate::collective::{Collective, CollectiveError};

/// Exit status of a rank that aborts the job because a peer stopped answering.
pub const ABORT_RANK_LOST: i32 = 70;

/// How long ranks other than 0 wait for the id file.
pub const ID_WAIT: Duration = Duration::from_secs(300);

/// NCCL or CUDA could not start.
#[derive(Debug, thiserror::Error)]
pub enum NcclError {
    /// No usable CUDA driver or device.
    #[error("rank {rank}: no CUDA device {ordinal}: {message}")]
    NoDevice {
        /// This rank.
        rank: usize,
        /// The device asked for.
        ordinal: usize,
        /// Why.
        message: String,
    },
    /// Writing or reading the unique-id file.
    #[error("rank {rank}: NCCL id file `{path}`: {message}")]
    IdFile {
        /// This rank.
        rank: usize,
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// NCCL or the driver returned an error.
    #[error("rank {rank}: {what}: {message}")]
    Cuda {
        /// This rank.
        rank: usize,
        /// The call.
        what: &'static str,
        /// The library's error.
        message: String,
    },
}

/// Whether CUDA device `ordinal` exists, without letting cudarc panic when the driver library
/// is missing (`CudaContext::new` and `device_count` panic then, they do not return an error).
pub fn cuda_device_present(ordinal: usize) -> Result<(), String> {
    if !Path::new("/dev/nvidiactl").exists() {
        return Err("no NVIDIA driver (`/dev/nvidiactl` is missing)".into());
    }
    let count = std::panic::catch_unwind(CudaContext::device_count)
        .map_err(|_| "the CUDA driver library could not be loaded".to_string())?
        .map_err(|e| format!("cuDeviceGetCount: {e}"))?;
    if ordinal >= count.max(0) as usize {
        return Err(format!("the machine has {count} CUDA device(s)"));
    }
    Ok(())
}

/// The NCCL id file of this attempt of the job step in `run_dir`.
pub fn id_path(run_dir: &Path) -> PathBuf {
    let var = |k: &str| std::env::var(k).unwrap_or_else(|_| "0".into());
    run_dir.join("dist").join(format!(
        "nccl-{}-{}-{}.id",
        var("SLURM_JOB_ID"),
        var("SLURM_STEP_ID"),
        var("SLURM_RESTART_COUNT")
    ))
}

/// Hex text of the 128-byte unique id (a text file a person can inspect).
fn encode(id: &Id) -> String {
    id.internal()
        .iter()
        .map(|&c| format!("{:02x}", c as u8))
        .collect()
}

fn decode(text: &str) -> Result<Id, String> {
    let text = text.trim();
    if text.len() != 256 {
        return Err(format!("expected 256 hex digits, found {}", text.len()));
    }
    let mut internal = [0 as std::ffi::c_char; 128];
    for (i, slot) in internal.iter_mut().enumerate() {
        let byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16)
            .map_err(|e| format!("byte {i}: {e}"))?;
        *slot = byte as std::ffi::c_char;
    }
    Ok(Id::uninit(internal))
}

/// The collective over an NCCL communicator of all ranks of the `srun` step.
pub struct NcclCollective {
    liveness: Option<Liveness>,
    comm: Comm,
    stream: Arc<CudaStream>,
    rank: usize,
    size: usize,
    check_every: u64,
    // Shared with the heartbeat thread, which aborts a collective that never returns.
    clock: Arc<CollectiveClock>,
}

impl std::fmt::Debug for NcclCollective {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NcclCollective")
            .field("rank", &self.rank)
            .field("size", &self.size)
            .finish()
    }
}

impl NcclCollective {
    /// Join the communicator of the ranks of `env` on CUDA device `ordinal`, exchanging the
    /// unique id through [`id_path`]`(run_dir)`, and start the heartbeat.
    pub fn init(env: &RankEnv, run_dir: &Path, ordinal: usize) -> Result<Self, NcclError> {
        let rank = env.rank;
        cuda_device_present(ordinal).map_err(|message| NcclError::NoDevice {
            rank,
            ordinal,
            message,
        })?;
        let cuda = |what: &'static str| {
            move |e: cudarc::driver::DriverError| NcclError::Cuda {
                rank,
                what,
                message: e.to_string(),
            }
        };
        let nccl = |what: &'static str| {
            move |e: cudarc::nccl::result::NcclError| NcclError::Cuda {
                rank,
                what,
                message: format!("{e:?}"),
            }
        };
        let path = id_path(run_dir);
        let id_err = |message: String| NcclError::IdFile {
            rank,
            path: path.clone(),
            message,
        };
        let id = if rank == 0 {
            let id = Id::new().map_err(nccl("ncclGetUniqueId"))?;
            let dir = path.parent().unwrap_or(run_dir);
            fs_err::create_dir_all(dir).map_err(|e| id_err(e.to_string()))?;
            let tmp = path.with_extension("tmp");
            fs_err::write(&tmp, encode(&id)).map_err(|e| id_err(e.to_string()))?;
            fs_err::rename(&tmp, &path).map_err(|e| id_err(e.to_string()))?;
            id
        } else {
            let started = Instant::now();
            loop {
                match fs_err::read_to_string(&path) {
                    Ok(text) => break decode(&text).map_err(id_err)?,
                    Err(_) if started.elapsed() < ID_WAIT => {
                        std::thread::sleep(Duration::from_millis(200))
                    }
                    Err(e) => {
                        return Err(id_err(format!(
                            "rank 0 did not write it within {} s: {e}",
                            ID_WAIT.as_secs()
                        )));
                    }
                }
            }
        };
        let ctx = CudaContext::new(ordinal).map_err(cuda("cuCtxCreate"))?;
        let stream = ctx.default_stream();
        let check_every =
            crate::collective::replicas::check_every_from_env().map_err(|message| {
                NcclError::Cuda {
                    rank,
                    what: "settings",
                    message,
                }
            })?;
        let comm = Comm::from_rank(stream.clone(), rank, env.world_size, id)
            .map_err(nccl("ncclCommInitRank"))?;
        let dir = run_dir.join("dist").join(
            path.file_stem()
                .map(|s| format!("heartbeat-{}", s.to_string_lossy()))
                .unwrap_or_else(|| "heartbeat".into()),
        );
        let config = LivenessConfig::from_env(dir).map_err(|message| NcclError::IdFile {
            rank,
            path: path.clone(),
            message,
        })?;
        let clock = Arc::clone(&config.clock);
        let on_dead = Box::new(|message: String| {
            eprintln!("error: {message}");
            tracing::error!("{message}");
            // `srun --kill-on-bad-exit=1` (the template's) then ends the other tasks.
            std::process::exit(ABORT_RANK_LOST);
        });
        let liveness = Liveness::start(config, rank, env.world_size, on_dead).map_err(|e| {
            NcclError::IdFile {
                rank,
                path: path.clone(),
                message: format!("heartbeat: {e}"),
            }
        })?;
        Ok(Self {
            liveness: Some(liveness),
            comm,
            stream,
            rank,
            size: env.world_size,
            check_every,
            clock,
        })
    }

    fn transport(&self, op: &'static str, message: String) -> CollectiveError {
        CollectiveError::Transport {
            op,
            rank: self.rank,
            message,
        }
    }

    /// Sum `values` over all ranks through one device buffer.
    fn reduce<T>(
        &mut self,
        op: &'static str,
        values: &mut [T],
        how: ReduceOp,
    ) -> Result<(), CollectiveError>
    where
        T: cudarc::driver::DeviceRepr + cudarc::nccl::NcclType,
    {
        let clock = Arc::clone(&self.clock);
        let _in = clock.guard(op);
        let mut buf = self
            .stream
            .clone_htod(values)
            .map_err(|e| self.transport(op, e.to_string()))?;
        self.comm
            .all_reduce_in_place(&mut buf, &how)
            .map_err(|e| self.transport(op, format!("{e:?}")))?;
        self.stream
            .memcpy_dtoh(&buf, values)
            .map_err(|e| self.transport(op, e.to_string()))?;
        self.stream
            .synchronize()
            .map_err(|e| self.transport(op, e.to_string()))
    }
}

impl Drop for NcclCollective {
    fn drop(&mut self) {
        if let Some(l) = self.liveness.take() {
            l.finish();
        }
    }
}

impl Collective for NcclCollective {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world_size(&self) -> usize {
        self.size
    }

    fn all_reduce_sum_f32(&mut self, values: &mut [f32]) -> Result<(), CollectiveError> {
        self.reduce("all_reduce_sum_f32", values, ReduceOp::Sum)
    }

    fn all_reduce_sum_u64(&mut self, value: u64) -> Result<u64, CollectiveError> {
        let mut v = [value];
        self.reduce("all_reduce_sum_u64", &mut v, ReduceOp::Sum)?;
        Ok(v[0])
    }

    fn all_reduce_sum_f64(&mut self, value: f64) -> Result<f64, CollectiveError> {
        let mut v = [value];
        self.reduce("all_reduce_sum_f64", &mut v, ReduceOp::Sum)?;
        Ok(v[0])
    }

    fn any(&mut self, flag: bool) -> Result<bool, CollectiveError> {
        let mut v = [u32::from(flag)];
        self.reduce("any", &mut v, ReduceOp::Max)?;
        Ok(v[0] != 0)
    }

    fn broadcast_bytes(&mut self, root: usize, bytes: &mut Vec<u8>) -> Result<(), CollectiveError> {
        let op = "broadcast_bytes";
        // Lengths first (max over ranks = root's, as the others send 0), then the bytes.
        let mut len = [if self.rank == root {
            bytes.len() as u64
        } else {
            0
        }];
        self.reduce(op, &mut len, ReduceOp::Max)?;
        if self.rank != root {
            bytes.clear();
            bytes.resize(len[0] as usize, 0);
        }
        if bytes.is_empty() {
            return Ok(());
        }
        let clock = Arc::clone(&self.clock);
        let _in = clock.guard(op);
        let mut buf = self
            .stream
            .clone_htod(&bytes[..])
            .map_err(|e| self.transport(op, e.to_string()))?;
        self.comm
            .broadcast_in_place(&mut buf, root as i32)
            .map_err(|e| self.transport(op, format!("{e:?}")))?;
        self.stream
            .memcpy_dtoh(&buf, &mut bytes[..])
            .map_err(|e| self.transport(op, e.to_string()))?;
        self.stream
            .synchronize()
            .map_err(|e| self.transport(op, e.to_string()))
    }

    fn replica_check_every(&self) -> Option<u64> {
        (self.size > 1).then_some(self.check_every)
    }

    fn reduce_scatter_sum_f32(
        &mut self,
        send: &[f32],
        recv: &mut [f32],
    ) -> Result<(), CollectiveError> {
        let op = "reduce_scatter_sum_f32";
        crate::collective::check_blocks(op, self.rank, self.size, recv.len(), send.len())?;
        self.staged(op, send, recv, |comm, src, dst| {
            comm.reduce_scatter(src, dst, &ReduceOp::Sum)
        })
    }

    fn all_gather_f32(&mut self, send: &[f32], recv: &mut [f32]) -> Result<(), CollectiveError> {
        let op = "all_gather_f32";
        crate::collective::check_blocks(op, self.rank, self.size, send.len(), recv.len())?;
        self.staged(op, send, recv, |comm, src, dst| comm.all_gather(src, dst))
    }
}

impl NcclCollective {
    /// Run a collective from `send` into `recv` through two device buffers (ZeRO-1's
    /// reduce-scatter and all-gather).
    fn staged(
        &mut self,
        op: &'static str,
        send: &[f32],
        recv: &mut [f32],
        call: impl FnOnce(
            &Comm,
            &cudarc::driver::CudaSlice<f32>,
            &mut cudarc::driver::CudaSlice<f32>,
        )
            -> Result<cudarc::nccl::result::NcclStatus, cudarc::nccl::result::NcclError>,
    ) -> Result<(), CollectiveError> {
        if recv.is_empty() {
            return Ok(());
        }
        let src = self
            .stream
            .clone_htod(send)
            .map_err(|e| self.transport(op, e.to_string()))?;
        let mut dst = self
            .stream
            .alloc_zeros::<f32>(recv.len())
            .map_err(|e| self.transport(op, e.to_string()))?;
        call(&self.comm, &src, &mut dst).map_err(|e| self.transport(op, format!("{e:?}")))?;
        self.stream
            .memcpy_dtoh(&dst, recv)
            .map_err(|e| self.transport(op, e.to_string()))?;
        self.stream
            .synchronize()
            .map_err(|e| self.transport(op, e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_id_survives_the_file_round_trip() {
        let mut internal = [0 as std::ffi::c_char; 128];
        for (i, c) in internal.iter_mut().enumerate() {
            *c = (i as u8).wrapping_mul(37) as std::ffi::c_char;
        }
        let id = Id::uninit(internal);
        let back = decode(&encode(&id)).unwrap();
        assert_eq!(back.internal(), id.internal());
        assert!(decode("abc").unwrap_err().contains("256 hex digits"));
    }

    #[test]
    fn a_machine_without_cuda_is_an_error_not_a_panic() {
        if Path::new("/dev/nvidiactl").exists() {
            return;
        }
        let e = cuda_device_present(0).unwrap_err();
        assert!(e.contains("/dev/nvidiactl"), "{e}");
    }
}
