//! The exact-effective-batch sampler and packer: a seeded sample order that does not depend on
//! the number of ranks, steps of exactly B samples, each split across ranks into padding-free
//! micro-batches under a token budget, plus the per-step figures. Knows nothing about tokens'
//! values, only lengths and loss-token counts.
//!
//! Tail policy. [`TailPolicy::Continue`] (the default) treats the epochs as one stream: a step
//! takes the next B samples, crossing into the next epoch's (freshly shuffled) order when the
//! current one runs out, so every step has exactly B samples and every sample is used exactly
//! once per epoch; when B > N a step spans several epochs and holds some samples twice.
//! [`TailPolicy::DropLast`] never crosses an epoch: the last N mod B samples of each epoch's order
//! are left out (different ones each epoch), and B > N is an error.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use serde::{Deserialize, Serialize};

use crate::error::{DataError, Result};

/// What the sampler needs to know about one sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SampleInfo {
    pub len: u32,
    pub loss_tokens: u32,
}

/// One data set of a mix: its samples and its weight (expected uses of each sample per epoch).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Source {
    pub name: String,
    pub samples: Vec<SampleInfo>,
    pub weight: f64,
}

/// A sample of a mix: which source, which sample in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SampleId {
    pub source: u32,
    pub index: u32,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TailPolicy {
    #[default]
    Continue,
    DropLast,
}

/// The batch settings of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchConfig {
    /// B: samples per optimizer step, over all ranks.
    pub batch_size: usize,
    pub world_size: usize,
    /// Most tokens in one micro-batch (one packed row).
    pub token_budget: usize,
    pub seed: u64,
    #[serde(default)]
    pub tail: TailPolicy,
}

/// Where the sampler is: goes into checkpoints; a sampler resumed from it yields exactly the
/// steps the original would have yielded next.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SamplerState {
    pub epoch: u64,
    /// Samples of this epoch's order already used.
    pub position: u64,
    /// Optimizer steps taken so far.
    pub step: u64,
}

/// Padding-free micro-batch: samples concatenated in one row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MicroBatch {
    pub samples: Vec<SampleId>,
    /// Sample boundaries in the row, flash-attention style: `[0, l0, l0+l1, …, tokens]`.
    pub cu_seqlens: Vec<u32>,
    pub loss_tokens: u64,
}

impl MicroBatch {
    pub fn tokens(&self) -> u64 {
        u64::from(*self.cu_seqlens.last().unwrap_or(&0))
    }

    /// Position ids restarting at 0 at every sample.
    pub fn position_ids(&self) -> Vec<u32> {
        self.cu_seqlens
            .windows(2)
            .flat_map(|w| 0..w[1] - w[0])
            .collect()
    }
}

/// One rank's share of a step.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RankBatches {
    pub micro_batches: Vec<MicroBatch>,
}

impl RankBatches {
    pub fn tokens(&self) -> u64 {
        self.micro_batches.iter().map(MicroBatch::tokens).sum()
    }
}

/// The figures logged per step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepStats {
    pub samples: u64,
    pub tokens: u64,
    /// Loss tokens of the whole step over all ranks: the loss normalizer.
    pub loss_tokens: u64,
    /// Micro-batches of the busiest rank (every rank waits for it).
    pub max_micro_batches: u64,
    /// Busiest rank's tokens over the mean rank's, minus one.
    pub imbalance: f64,
    /// 1 − tokens / (world × busiest rank's micro-batches × budget).
    pub waste: f64,
}

/// One optimizer step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    pub step: u64,
    /// Epoch of the step's first sample.
    pub epoch: u64,
    /// The B samples in stream order (independent of the world size).
    pub samples: Vec<SampleId>,
    pub ranks: Vec<RankBatches>,
    pub stats: StepStats,
}

/// SplitMix64: small, fast, and fixed forever, so orders never change with a dependency.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (Lemire's multiply-shift; the bias is below 2^-40 for our n).
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            v.swap(i, j);
        }
    }
}

fn mix(seed: u64, a: u64, b: u64) -> u64 {
    let mut r = Rng::new(seed ^ a.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ b.rotate_left(32));
    r.next_u64()
}

/// The order of one epoch of a mix. A source of weight w contributes round(w × N) samples:
/// every sample ⌊w⌋ times plus a seeded subset for the fraction; then everything is shuffled.
pub fn epoch_order(sources: &[Source], seed: u64, epoch: u64) -> Vec<SampleId> {
    let mut order = Vec::new();
    for (s, src) in sources.iter().enumerate() {
        let n = src.samples.len();
        let want = (src.weight * n as f64).round() as usize;
        let ids = |i: usize| SampleId {
            source: s as u32,
            index: i as u32,
        };
        for _ in 0..want / n.max(1) {
            order.extend((0..n).map(ids));
        }
        let rest = want - (want / n.max(1)) * n;
        if rest > 0 {
            let mut idx: Vec<usize> = (0..n).collect();
            Rng::new(mix(seed, epoch, 1 + s as u64)).shuffle(&mut idx);
            order.extend(idx[..rest].iter().copied().map(ids));
        }
    }
    Rng::new(mix(seed, epoch, 0)).shuffle(&mut order);
    order
}

/// Splits one step's samples into `world` ranks of micro-batches of at most `budget` tokens.
///
/// Finds the smallest m for which the samples fit in world × m bins, starting from the bound
/// ⌈tokens / (world × budget)⌉: first by longest-processing-time-first (each sample, longest
/// first, into the least-loaded bin, which balances the bins), then by best-fit-decreasing for
/// the same m, else m + 1. Bins go to ranks heaviest first, each to the lightest rank with fewer
/// than m bins. Ties break on sample id, so the result is a function of the inputs alone.
pub fn pack_step(
    samples: &[(SampleId, SampleInfo)],
    world: usize,
    budget: usize,
) -> Result<Vec<RankBatches>> {
    if world == 0 || budget == 0 {
        return Err(DataError::Packing(
            "world size and token budget must be positive".into(),
        ));
    }
    if let Some((id, info)) = samples.iter().find(|(_, i)| i.len as usize > budget) {
        return Err(DataError::Packing(format!(
            "sample {}:{} has {} tokens, over the token budget {budget}",
            id.source, id.index, info.len
        )));
    }
    let mut sorted: Vec<&(SampleId, SampleInfo)> = samples.iter().collect();
    sorted.sort_by_key(|(id, info)| (Reverse(info.len), *id));
    let total: u64 = samples.iter().map(|(_, i)| u64::from(i.len)).sum();
    let budget64 = budget as u64;
    let mut m = (total.div_ceil(world as u64 * budget64)).max(1) as usize;
    let bins = loop {
        let k = world * m;
        if let Some(b) = lpt(&sorted, k, budget64).or_else(|| bfd(&sorted, k, budget64)) {
            break b;
        }
        m += 1;
    };
    // Heaviest bins first, each to the lightest rank that still has room for a bin.
    let mut bins: Vec<(u64, Vec<usize>)> = bins;
    bins.sort_by_key(|(load, members)| (Reverse(*load), members.first().map(|&i| sorted[i].0)));
    let mut ranks: Vec<(u64, Vec<Vec<usize>>)> = vec![(0, Vec::new()); world];
    for (load, members) in bins {
        if members.is_empty() {
            continue;
        }
        let r = (0..world)
            .filter(|&r| ranks[r].1.len() < m)
            .min_by_key(|&r| (ranks[r].0, r))
            .expect("world × m bins fit in world ranks of m");
        ranks[r].0 += load;
        ranks[r].1.push(members);
    }
    Ok(ranks
        .into_iter()
        .map(|(_, mbs)| RankBatches {
            micro_batches: mbs
                .into_iter()
                .map(|mut members| {
                    members.sort_by_key(|&i| sorted[i].0);
                    let mut cu = vec![0u32];
                    let mut loss = 0u64;
                    for &i in &members {
                        cu.push(cu.last().expect("starts with 0") + sorted[i].1.len);
                        loss += u64::from(sorted[i].1.loss_tokens);
                    }
                    MicroBatch {
                        samples: members.iter().map(|&i| sorted[i].0).collect(),
                        cu_seqlens: cu,
                        loss_tokens: loss,
                    }
                })
                .collect(),
        })
        .collect())
}

type Bins = Vec<(u64, Vec<usize>)>;

fn lpt(sorted: &[&(SampleId, SampleInfo)], k: usize, budget: u64) -> Option<Bins> {
    let mut heap: BinaryHeap<Reverse<(u64, usize)>> = (0..k).map(|b| Reverse((0, b))).collect();
    let mut bins: Bins = vec![(0, Vec::new()); k];
    for (i, (_, info)) in sorted.iter().enumerate() {
        let Reverse((load, b)) = heap.pop().expect("k > 0 bins");
        let load = load + u64::from(info.len);
        if load > budget {
            return None;
        }
        bins[b].0 = load;
        bins[b].1.push(i);
        heap.push(Reverse((load, b)));
    }
    Some(bins)
}

fn bfd(sorted: &[&(SampleId, SampleInfo)], k: usize, budget: u64) -> Option<Bins> {
    // Free space -> bins with that much room; best fit is the smallest room that is enough.
    let mut room: std::collections::BTreeMap<u64, Vec<usize>> = std::collections::BTreeMap::new();
    room.insert(budget, (0..k).rev().collect());
    let mut bins: Bins = vec![(0, Vec::new()); k];
    for (i, (_, info)) in sorted.iter().enumerate() {
        let len = u64::from(info.len);
        let (&free, _) = room.range(len..).next()?;
        let list = room.get_mut(&free).expect("key just found");
        let b = list.pop().expect("non-empty lists only");
        if list.is_empty() {
            room.remove(&free);
        }
        bins[b].0 += len;
        bins[b].1.push(i);
        room.entry(free - len).or_default().push(b);
    }
    Some(bins)
}

/// The figures of a packed step.
pub fn step_stats(ranks: &[RankBatches], budget: usize) -> StepStats {
    let tokens: u64 = ranks.iter().map(RankBatches::tokens).sum();
    let samples: u64 = ranks
        .iter()
        .flat_map(|r| &r.micro_batches)
        .map(|mb| mb.samples.len() as u64)
        .sum();
    let loss_tokens = ranks
        .iter()
        .flat_map(|r| &r.micro_batches)
        .map(|mb| mb.loss_tokens)
        .sum();
    let max_mb = ranks
        .iter()
        .map(|r| r.micro_batches.len() as u64)
        .max()
        .unwrap_or(0);
    let world = ranks.len().max(1) as f64;
    let max_tokens = ranks.iter().map(RankBatches::tokens).max().unwrap_or(0) as f64;
    let mean = tokens as f64 / world;
    let capacity = world * max_mb as f64 * budget as f64;
    StepStats {
        samples,
        tokens,
        loss_tokens,
        max_micro_batches: max_mb,
        imbalance: if mean > 0.0 {
            max_tokens / mean - 1.0
        } else {
            0.0
        },
        waste: if capacity > 0.0 {
            1.0 - tokens as f64 / capacity
        } else {
            0.0
        },
    }
}

/// Yields the steps of a run: exactly B samples each, packed for the world size.
#[derive(Debug, Clone)]
pub struct Sampler {
    config: BatchConfig,
    sources: Vec<Source>,
    state: SamplerState,
    order: Vec<SampleId>,
}

impl Sampler {
    /// A sampler at the start of training.
    pub fn new(config: BatchConfig, sources: Vec<Source>) -> Result<Self> {
        Self::resume(config, sources, SamplerState::default())
    }

    /// A sampler continuing from a checkpoint's state.
    pub fn resume(config: BatchConfig, sources: Vec<Source>, state: SamplerState) -> Result<Self> {
        if config.batch_size == 0 || config.world_size == 0 || config.token_budget == 0 {
            return Err(DataError::Packing(
                "batch size, world size and token budget must be positive".into(),
            ));
        }
        for (s, src) in sources.iter().enumerate() {
            if !(src.weight.is_finite() && src.weight >= 0.0) {
                return Err(DataError::Packing(format!(
                    "weight of `{}` must be a non-negative number",
                    src.name
                )));
            }
            if let Some(i) = src
                .samples
                .iter()
                .position(|x| x.len as usize > config.token_budget)
            {
                return Err(DataError::Packing(format!(
                    "`{}` sample {i} (source {s}) has {} tokens, over the token budget {}; raise the budget or lower the maximum length",
                    src.name, src.samples[i].len, config.token_budget
                )));
            }
        }
        let order = epoch_order(&sources, config.seed, state.epoch);
        if order.is_empty() {
            return Err(DataError::Packing("the mix has no samples".into()));
        }
        if config.tail == TailPolicy::DropLast && config.batch_size > order.len() {
            return Err(DataError::Packing(format!(
                "batch size {} is larger than an epoch ({} samples) and the tail policy is drop_last",
                config.batch_size,
                order.len()
            )));
        }
        if state.position > order.len() as u64 {
            return Err(DataError::Packing(format!(
                "sampler position {} is past the epoch's {} samples",
                state.position,
                order.len()
            )));
        }
        Ok(Self {
            config,
            sources,
            state,
            order,
        })
    }

    pub fn state(&self) -> SamplerState {
        self.state
    }

    pub fn config(&self) -> &BatchConfig {
        &self.config
    }

    /// Samples in one epoch of the mix.
    pub fn epoch_len(&self) -> usize {
        self.order.len()
    }

    pub fn info(&self, id: SampleId) -> SampleInfo {
        self.sources[id.source as usize].samples[id.index as usize]
    }

    fn next_epoch(&mut self) {
        self.state.epoch += 1;
        self.state.position = 0;
        self.order = epoch_order(&self.sources, self.config.seed, self.state.epoch);
    }

    /// The next B sample ids in stream order, advancing the state (no packing).
    pub fn next_samples(&mut self) -> (u64, Vec<SampleId>) {
        let b = self.config.batch_size;
        if self.config.tail == TailPolicy::DropLast
            && self.order.len() - (self.state.position as usize) < b
        {
            self.next_epoch();
        }
        if self.state.position as usize == self.order.len() {
            self.next_epoch();
        }
        let epoch = self.state.epoch;
        let mut out = Vec::with_capacity(b);
        while out.len() < b {
            if self.state.position as usize == self.order.len() {
                self.next_epoch();
            }
            let p = self.state.position as usize;
            let take = (b - out.len()).min(self.order.len() - p);
            out.extend_from_slice(&self.order[p..p + take]);
            self.state.position += take as u64;
        }
        self.state.step += 1;
        (epoch, out)
    }

    /// The next optimizer step, packed.
    pub fn next_step(&mut self) -> Step {
        let step = self.state.step;
        let (epoch, samples) = self.next_samples();
        let with_info: Vec<(SampleId, SampleInfo)> =
            samples.iter().map(|&id| (id, self.info(id))).collect();
        let ranks = pack_step(&with_info, self.config.world_size, self.config.token_budget)
            .expect("lengths checked against the budget in resume");
        let stats = step_stats(&ranks, self.config.token_budget);
        Step {
            step,
            epoch,
            samples,
            ranks,
            stats,
        }
    }
}

/// How a run uses several groups of data sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// All groups mixed in one run.
    Stacked,
    /// One run per group, in order, each starting from the previous phase's checkpoint.
    Phased,
}

/// The source lists of the runs of a strategy: one list for stacked, one per phase for phased.
pub fn phase_groups<T: Clone>(strategy: Strategy, groups: &[Vec<T>]) -> Vec<Vec<T>> {
    match strategy {
        Strategy::Stacked => vec![groups.iter().flatten().cloned().collect()],
        Strategy::Phased => groups.to_vec(),
    }
}
