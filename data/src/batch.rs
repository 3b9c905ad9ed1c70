//! Packed rows for the model: a micro-batch's samples read from the token caches and laid out as
//! one padding-free row with labels, restarting position ids and sample boundaries.

use serde::{Deserialize, Serialize};

use crate::cache::TokenCache;
use crate::pack::{MicroBatch, SampleInfo, Source};

/// The label value the loss ignores (PyTorch's `ignore_index`).
pub const IGNORE_INDEX: i64 = -100;

/// One micro-batch as the model's packed forward takes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackedRow {
    pub input_ids: Vec<u32>,
    /// Hugging Face labels, aligned with `input_ids` (the loss shifts them): the token id where the
    /// loss counts, [`IGNORE_INDEX`] elsewhere, always at a sample's first token so that no
    /// sample predicts across a boundary.
    pub labels: Vec<i64>,
    pub position_ids: Vec<u32>,
    /// `[0, l0, l0+l1, …, len]`.
    pub cu_seqlens: Vec<u32>,
}

impl PackedRow {
    /// Tokens the loss counts: the normalizer's share of this row.
    pub fn loss_tokens(&self) -> usize {
        self.labels.iter().filter(|&&l| l != IGNORE_INDEX).count()
    }
}

/// Lengths and loss-token counts of a cache's samples (a first token never counts), for the
/// sampler.
pub fn source_from_cache(name: &str, cache: &TokenCache, weight: f64) -> Source {
    let samples = (0..cache.len())
        .map(|i| {
            let mask = cache.loss_mask(i);
            SampleInfo {
                len: mask.len() as u32,
                loss_tokens: mask.iter().skip(1).filter(|&&m| m != 0).count() as u32,
            }
        })
        .collect();
    Source {
        name: name.to_owned(),
        samples,
        weight,
    }
}

/// Reads a micro-batch's samples from `caches` (indexed by [`crate::pack::SampleId::source`]).
pub fn materialize(mb: &MicroBatch, caches: &[&TokenCache]) -> PackedRow {
    let mut row = PackedRow {
        input_ids: Vec::with_capacity(mb.tokens() as usize),
        labels: Vec::with_capacity(mb.tokens() as usize),
        position_ids: mb.position_ids(),
        cu_seqlens: mb.cu_seqlens.clone(),
    };
    for id in &mb.samples {
        let cache = caches[id.source as usize];
        let ids = cache.input_ids(id.index as usize);
        let mask = cache.loss_mask(id.index as usize);
        for (t, (&tok, &m)) in ids.iter().zip(mask).enumerate() {
            row.input_ids.push(tok);
            row.labels.push(if m != 0 && t > 0 {
                i64::from(tok)
            } else {
                IGNORE_INDEX
            });
        }
    }
    row
}
