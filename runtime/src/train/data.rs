//! The loop's data source over `sftctl-data`: token caches, the exact-batch sampler and packer,
//! and the conversion of packed rows into the loop's micro-batches (labels shifted within each
//! sample). The validation split is packed once, in file order.

use sftctl_data::batch::{IGNORE_INDEX, PackedRow, materialize};
use sftctl_data::cache::TokenCache;
use sftctl_data::pack::{BatchConfig, SampleId, Sampler, SamplerState, Source, pack_step};

use crate::train::run::{BatchSource, StepBatch};
use crate::train::step::{IGNORE, MicroBatch};

/// A packed row as the loop takes it: targets are the next token's label inside the sample
/// (the packer already makes each sample's first label ignored, so nothing crosses a boundary).
pub fn micro_batch(row: &PackedRow) -> MicroBatch {
    let n = row.input_ids.len();
    let targets = (0..n)
        .map(|t| match row.labels.get(t + 1) {
            Some(&l) if l != IGNORE_INDEX => l as i32,
            _ => IGNORE,
        })
        .collect();
    MicroBatch {
        tokens: row.input_ids.clone(),
        positions: row.position_ids.clone(),
        targets,
        sample_lengths: row
            .cu_seqlens
            .windows(2)
            .map(|w| (w[1] - w[0]) as usize)
            .collect(),
    }
}

/// Training data of one phase for one rank.
#[derive(Debug)]
pub struct PackedSource {
    sampler: Sampler,
    config: BatchConfig,
    sources: Vec<Source>,
    caches: Vec<TokenCache>,
    rank: usize,
    validation: Vec<MicroBatch>,
}

impl PackedSource {
    /// A source over `caches` (with their sampler `sources`), starting at the beginning.
    pub fn new(
        config: BatchConfig,
        sources: Vec<Source>,
        caches: Vec<TokenCache>,
        rank: usize,
        validation: Vec<MicroBatch>,
    ) -> sftctl_data::Result<Self> {
        Ok(Self {
            sampler: Sampler::new(config, sources.clone())?,
            config,
            sources,
            caches,
            rank,
            validation,
        })
    }

    /// Samples in one epoch of the mix.
    pub fn epoch_len(&self) -> usize {
        self.sampler.epoch_len()
    }
}

impl BatchSource for PackedSource {
    fn next_step(&mut self) -> Option<StepBatch> {
        let step = self.sampler.next_step();
        let caches: Vec<&TokenCache> = self.caches.iter().collect();
        let mine = step.ranks.get(self.rank)?;
        let micro_batches = mine
            .micro_batches
            .iter()
            .map(|mb| micro_batch(&materialize(mb, &caches)))
            .collect();
        Some(StepBatch {
            micro_batches,
            agree_points: step.stats.max_micro_batches as usize,
        })
    }

    fn state(&self) -> serde_json::Value {
        serde_json::to_value(self.sampler.state()).unwrap_or(serde_json::Value::Null)
    }

    fn restore(&mut self, state: &serde_json::Value) -> Result<(), String> {
        let state: SamplerState =
            serde_json::from_value(state.clone()).map_err(|e| e.to_string())?;
        self.sampler =
            Sampler::resume(self.config, self.sources.clone(), state).map_err(|e| e.to_string())?;
        Ok(())
    }

    fn epoch(&self) -> u64 {
        self.sampler.state().epoch
    }

    fn validation(&self) -> &[MicroBatch] {
        &self.validation
    }
}

/// Every sample of `caches` packed into micro-batches of at most `token_budget` tokens, this
/// rank's share (the packer splits across `world_size`).
pub fn pack_all(
    caches: &[TokenCache],
    sources: &[Source],
    token_budget: usize,
    world_size: usize,
    rank: usize,
) -> sftctl_data::Result<Vec<MicroBatch>> {
    let with_info: Vec<_> = sources
        .iter()
        .enumerate()
        .flat_map(|(s, src)| {
            src.samples.iter().enumerate().map(move |(i, info)| {
                (
                    SampleId {
                        source: s as u32,
                        index: i as u32,
                    },
                    *info,
                )
            })
        })
        .collect();
    if with_info.is_empty() {
        return Ok(Vec::new());
    }
    let ranks = pack_step(&with_info, world_size, token_budget)?;
    let refs: Vec<&TokenCache> = caches.iter().collect();
    Ok(ranks
        .get(rank)
        .map(|r| {
            r.micro_batches
                .iter()
                .map(|mb| micro_batch(&materialize(mb, &refs)))
                .collect()
        })
        .unwrap_or_default())
}
