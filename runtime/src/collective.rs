//! The collective-operations seam between the training loop and the ranks of a data-parallel job.
//! The loop calls only this trait; it never knows whether there is one rank, MPI or NCCL behind it.

use burn::tensor::{Device, Tensor, TensorData};

// Data parallelism behind the seam (docs/distributed.md): the launcher's environment, the
// parameter checksum, per-rank liveness, the two engines, and the post-mortem of a lost rank.
pub mod launch;
pub mod liveness;
#[cfg(feature = "mpi")]
pub mod mpi;
#[cfg(feature = "nccl")]
pub mod nccl;
pub mod postmortem;
pub mod replicas;

/// A collective operation failed (a peer died, the transport broke).
#[derive(Debug, thiserror::Error)]
pub enum CollectiveError {
    /// The transport reported an error.
    #[error("collective `{op}` failed on rank {rank}: {message}")]
    Transport {
        /// The operation that failed.
        op: &'static str,
        /// This process's rank.
        rank: usize,
        /// The transport's message.
        message: String,
    },
    /// A tensor handed to a collective could not be read back from its device.
    #[error("collective `{op}` could not read a tensor: {message}")]
    TensorData {
        /// The operation that failed.
        op: &'static str,
        /// Burn's message.
        message: String,
    },
    /// The ranks' parameters differ: the replicas drifted apart and the run cannot continue.
    #[error(
        "parameters differ across ranks at step {step}: rank(s) {ranks:?} disagree with rank 0 (parameter checksum)"
    )]
    ReplicasDiffer {
        /// The optimizer step at which the check ran.
        step: u64,
        /// The ranks whose checksum differs from rank 0's (as seen by this rank).
        ranks: Vec<usize>,
    },
}

/// The operations every rank calls in the same order with matching arguments.
///
/// Invariants: every rank calls the same sequence of collectives per optimizer step (the loop
/// guarantees it, also when ranks hold different numbers of micro-batches); results are
/// identical on every rank, so every rank takes the same decisions and applies the same update.
pub trait Collective {
    /// This process's rank, `0..world_size`.
    fn rank(&self) -> usize;

    /// The number of ranks.
    fn world_size(&self) -> usize;

    /// Element-wise sum of `values` over all ranks, in place.
    fn all_reduce_sum_f32(&mut self, values: &mut [f32]) -> Result<(), CollectiveError>;

    /// Sum of an exact count (loss tokens, samples) over all ranks.
    fn all_reduce_sum_u64(&mut self, value: u64) -> Result<u64, CollectiveError>;

    /// Sum of a host-side scalar (a loss sum) over all ranks.
    fn all_reduce_sum_f64(&mut self, value: f64) -> Result<f64, CollectiveError>;

    /// True on every rank when `flag` is true on any rank: the agreed stop decision.
    fn any(&mut self, flag: bool) -> Result<bool, CollectiveError>;

    /// Rank `root`'s bytes on every rank (`bytes` is replaced on the other ranks).
    fn broadcast_bytes(&mut self, root: usize, bytes: &mut Vec<u8>) -> Result<(), CollectiveError>;

    /// Compare parameter checksums across ranks every this many optimizer steps (and at the
    /// start); `None` with one rank, where there is nothing to compare.
    fn replica_check_every(&self) -> Option<u64> {
        None
    }

    /// Element-wise sum of a flat float tensor over all ranks.
    ///
    /// The default goes through host memory and [`Collective::all_reduce_sum_f32`]; a device
    /// collective (NCCL) overrides it to reduce in place on the accelerator. With one rank it
    /// returns the tensor untouched, without a copy.
    fn all_reduce_sum_tensor(&mut self, tensor: Tensor<1>) -> Result<Tensor<1>, CollectiveError> {
        if self.world_size() == 1 {
            return Ok(tensor);
        }
        let device: Device = tensor.device();
        let mut values =
            tensor
                .into_data()
                .try_into_vec::<f32>()
                .map_err(|e| CollectiveError::TensorData {
                    op: "all_reduce_sum_tensor",
                    message: format!("{e:?}"),
                })?;
        self.all_reduce_sum_f32(&mut values)?;
        let len = values.len();
        Ok(Tensor::from_data(TensorData::new(values, [len]), &device))
    }

    /// Element-wise sum over all ranks of `send`, scattered: `send` holds `world_size` equal
    /// blocks of `recv.len()` elements and rank `r` receives the sum of everyone's block `r`
    /// (ZeRO-1's gradient shards, `train/zero.rs`).
    ///
    /// The default reduces the whole buffer with [`Collective::all_reduce_sum_f32`] and keeps
    /// this rank's block: correct for any engine (one rank: a copy), at world-size times the
    /// traffic of a true reduce-scatter, which MPI overrides.
    fn reduce_scatter_sum_f32(
        &mut self,
        send: &[f32],
        recv: &mut [f32],
    ) -> Result<(), CollectiveError> {
        let (rank, n) = (self.rank(), recv.len());
        check_blocks(
            "reduce_scatter_sum_f32",
            rank,
            self.world_size(),
            n,
            send.len(),
        )?;
        let mut all = send.to_vec();
        self.all_reduce_sum_f32(&mut all)?;
        recv.copy_from_slice(&all[rank * n..(rank + 1) * n]);
        Ok(())
    }

    /// Every rank's `send` (equal lengths on all ranks), concatenated in rank order into
    /// `recv` on every rank (ZeRO-1's updated parameter shards).
    ///
    /// The default sums buffers that are zero outside each rank's block: exact (`x + 0 = x`;
    /// only a `-0.0` comes back as `0.0` with several ranks), at the cost of an all-reduce.
    fn all_gather_f32(&mut self, send: &[f32], recv: &mut [f32]) -> Result<(), CollectiveError> {
        let (rank, n) = (self.rank(), send.len());
        check_blocks("all_gather_f32", rank, self.world_size(), n, recv.len())?;
        recv.fill(0.0);
        recv[rank * n..(rank + 1) * n].copy_from_slice(send);
        self.all_reduce_sum_f32(recv)
    }
}

/// `whole` must be `world` blocks of `block` elements (the layout of the scattering and
/// gathering collectives).
pub(crate) fn check_blocks(
    op: &'static str,
    rank: usize,
    world: usize,
    block: usize,
    whole: usize,
) -> Result<(), CollectiveError> {
    if block * world == whole {
        return Ok(());
    }
    Err(CollectiveError::Transport {
        op,
        rank,
        message: format!(
            "buffer of {whole} elements is not {world} blocks of {block} (one per rank)"
        ),
    })
}

/// The collective of a job with a single rank: every reduction is the identity.
#[derive(Debug, Default, Clone, Copy)]
pub struct SingleProcess;

impl Collective for SingleProcess {
    fn rank(&self) -> usize {
        0
    }

    fn world_size(&self) -> usize {
        1
    }

    fn all_reduce_sum_f32(&mut self, _values: &mut [f32]) -> Result<(), CollectiveError> {
        Ok(())
    }

    fn all_reduce_sum_u64(&mut self, value: u64) -> Result<u64, CollectiveError> {
        Ok(value)
    }

    fn all_reduce_sum_f64(&mut self, value: f64) -> Result<f64, CollectiveError> {
        Ok(value)
    }

    fn any(&mut self, flag: bool) -> Result<bool, CollectiveError> {
        Ok(flag)
    }

    fn broadcast_bytes(
        &mut self,
        _root: usize,
        _bytes: &mut Vec<u8>,
    ) -> Result<(), CollectiveError> {
        Ok(())
    }
}
