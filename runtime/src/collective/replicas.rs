//! The parameter checksum compared across ranks: every rank must hold bit-identical parameters
//! after every update, so a difference means the replicas drifted (a non-deterministic reduction,
//! a rank that skipped an update) and the run must stop rather than train on.
//! Uses only the [`Collective`] trait, so it works for every engine.

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::Tensor;
use sha2::{Digest, Sha256};

use crate::collective::{Collective, CollectiveError};

/// A digest of `module`'s float parameters: per tensor the sum and the sum of squares, taken
/// on the device (one small read for the whole model), hashed with SHA-256.
///
/// Equal parameters give equal digests on every rank (same data, same reduction); parameters
/// that differ in any update leave the sums different in practice.
pub fn fingerprint<M: Module>(module: &M) -> [u8; 32] {
    struct Sums {
        sums: Vec<Tensor<1>>,
    }
    impl ModuleVisitor for Sums {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let value = param.val();
            let n = value.shape().num_elements();
            let flat = value.reshape([n]);
            self.sums.push(flat.clone().sum());
            self.sums.push(flat.square().sum());
        }
    }
    let mut visitor = Sums { sums: Vec::new() };
    module.visit(&mut visitor);
    let mut hasher = Sha256::new();
    if !visitor.sums.is_empty() {
        let data = Tensor::cat(visitor.sums, 0).into_data();
        for v in data.iter::<f32>() {
            hasher.update(v.to_bits().to_le_bytes());
        }
    }
    hasher.finalize().into()
}

/// Compare `module`'s parameters with rank 0's on every rank; every rank returns the same
/// result, so all of them stop together on a mismatch. A no-op with one rank.
pub fn verify<M: Module>(
    module: &M,
    collective: &mut dyn Collective,
    step: u64,
) -> Result<(), CollectiveError> {
    let world = collective.world_size();
    if world == 1 {
        return Ok(());
    }
    let mine = fingerprint(module);
    let mut root = mine.to_vec();
    collective.broadcast_bytes(0, &mut root)?;
    // One slot per rank: 1.0 where that rank's digest differs from rank 0's. The sum tells every
    // rank which ranks differ, so each one's error names them.
    let mut differs = vec![0.0f32; world];
    if root != mine {
        differs[collective.rank()] = 1.0;
    }
    collective.all_reduce_sum_f32(&mut differs)?;
    let ranks: Vec<usize> = differs
        .iter()
        .enumerate()
        .filter(|&(_, &d)| d != 0.0)
        .map(|(r, _)| r)
        .collect();
    if ranks.is_empty() {
        Ok(())
    } else {
        Err(CollectiveError::ReplicasDiffer { step, ranks })
    }
}

/// [`verify`] when `step` is a multiple of the collective's check interval.
pub fn verify_if_due<M: Module>(
    module: &M,
    collective: &mut dyn Collective,
    step: u64,
) -> Result<(), CollectiveError> {
    match collective.replica_check_every() {
        Some(every) if every > 0 && step.is_multiple_of(every) => verify(module, collective, step),
        _ => Ok(()),
    }
}

/// Default interval of the parameter checksum, in optimizer steps.
pub const DEFAULT_CHECK_EVERY: u64 = 50;

/// The checksum interval from `SFTCTL_REPLICA_CHECK_EVERY` (0 turns the periodic check off;
/// the check at the start always runs), else [`DEFAULT_CHECK_EVERY`].
pub fn check_every_from_env() -> Result<u64, String> {
    match std::env::var("SFTCTL_REPLICA_CHECK_EVERY") {
        Ok(v) => v
            .trim()
            .parse::<u64>()
            .map_err(|e| format!("SFTCTL_REPLICA_CHECK_EVERY=`{v}`: {e}")),
        Err(_) => Ok(DEFAULT_CHECK_EVERY),
    }
}
