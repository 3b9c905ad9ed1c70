//! Packing waste of the exact-batch packer (`sftctl_data::pack`) against naive padding and
//! first-fit-decreasing multipack on a long-tailed length distribution.
//!
//! Full run: `cargo bench -p sftctl-data --bench data_pack` (100k samples, 4,096-token budget,
//! B 128..7,680, 1..16 ranks). Without `--bench` (as `cargo test` runs it) it is the CI smoke size.
//! Waste = 1 − tokens / (world × busiest rank's micro-batches × budget), averaged over the steps
//! of one epoch (token-weighted).

use std::time::Instant;

use sftctl_data::pack::{
    BatchConfig, MicroBatch, RankBatches, Rng, SampleId, SampleInfo, Sampler, Source, TailPolicy,
    step_stats,
};

const BUDGET: usize = 4096;

/// Lengths like chat SFT data: log-normal, median 350 tokens, long right tail, cut at the budget.
fn lengths(n: usize, seed: u64) -> Vec<u32> {
    let mut rng = Rng::new(seed);
    let unit = |r: &mut Rng| (r.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
    (0..n)
        .map(|_| {
            let (u1, u2) = (unit(&mut rng).max(1e-300), unit(&mut rng));
            let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
            (350.0 * (1.0 * z).exp()).round().clamp(8.0, BUDGET as f64) as u32
        })
        .collect()
}

fn mb(samples: &[(SampleId, SampleInfo)]) -> MicroBatch {
    let mut cu = vec![0u32];
    for (_, i) in samples {
        cu.push(cu.last().unwrap() + i.len);
    }
    MicroBatch {
        samples: samples.iter().map(|s| s.0).collect(),
        cu_seqlens: cu,
        loss_tokens: 0,
    }
}

/// Naive padding: each rank takes its B/world samples in order; a micro-batch holds as many
/// samples as fit when every one is padded to the micro-batch's longest.
fn naive(step: &[(SampleId, SampleInfo)], world: usize) -> (Vec<RankBatches>, u64) {
    let mut ranks = vec![RankBatches::default(); world];
    let mut padded = 0u64;
    for (r, rank) in ranks.iter_mut().enumerate() {
        let mine: Vec<_> = step.iter().skip(r).step_by(world).copied().collect();
        let mut cur: Vec<(SampleId, SampleInfo)> = Vec::new();
        let mut longest = 0u32;
        for s in mine {
            let l = longest.max(s.1.len);
            if !cur.is_empty() && (cur.len() + 1) * l as usize > BUDGET {
                padded += cur.len() as u64 * u64::from(longest);
                rank.micro_batches.push(mb(&cur));
                cur.clear();
                longest = 0;
            }
            longest = longest.max(s.1.len);
            cur.push(s);
        }
        if !cur.is_empty() {
            padded += cur.len() as u64 * u64::from(longest);
            rank.micro_batches.push(mb(&cur));
        }
    }
    (ranks, padded)
}

/// Multipack: first-fit-decreasing into world × m bins for the smallest m that fits, bins dealt
/// to ranks in order.
fn ffd(step: &[(SampleId, SampleInfo)], world: usize) -> Vec<RankBatches> {
    let mut sorted = step.to_vec();
    sorted.sort_by_key(|s| std::cmp::Reverse(s.1.len));
    let total: u64 = step.iter().map(|s| u64::from(s.1.len)).sum();
    let mut m = total.div_ceil((world * BUDGET) as u64).max(1) as usize;
    loop {
        let k = world * m;
        let mut load = vec![0usize; k];
        let mut bins: Vec<Vec<(SampleId, SampleInfo)>> = vec![Vec::new(); k];
        let mut ok = true;
        for s in &sorted {
            match (0..k).find(|&b| load[b] + s.1.len as usize <= BUDGET) {
                Some(b) => {
                    load[b] += s.1.len as usize;
                    bins[b].push(*s);
                }
                None => {
                    ok = false;
                    break;
                }
            }
        }
        if ok {
            let mut ranks = vec![RankBatches::default(); world];
            for (b, bin) in bins.iter().enumerate() {
                if !bin.is_empty() {
                    ranks[b / m].micro_batches.push(mb(bin));
                }
            }
            return ranks;
        }
        m += 1;
    }
}

#[derive(Default)]
struct Acc {
    tokens: u64,
    capacity: u64,
    imbalance: f64,
    steps: u64,
}

impl Acc {
    fn add(&mut self, ranks: &[RankBatches]) {
        let s = step_stats(ranks, BUDGET);
        self.tokens += s.tokens;
        self.capacity += ranks.len() as u64 * s.max_micro_batches * BUDGET as u64;
        self.imbalance += s.imbalance;
        self.steps += 1;
    }
    fn waste(&self) -> f64 {
        100.0 * (1.0 - self.tokens as f64 / self.capacity as f64)
    }
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (n, batches, worlds): (usize, &[usize], &[usize]) = if full {
        (100_000, &[128, 512, 3840, 7680], &[1, 2, 4, 8, 16])
    } else {
        (5_000, &[128, 1024], &[1, 4])
    };
    let lens = lengths(n, 42);
    let mut sorted = lens.clone();
    sorted.sort_unstable();
    println!(
        "{n} samples, lengths median {} p90 {} p99 {} max {}, budget {BUDGET}",
        sorted[n / 2],
        sorted[n * 9 / 10],
        sorted[n * 99 / 100],
        sorted[n - 1]
    );
    println!(
        "| B | ranks | steps | ours waste % | ours imbalance % | FFD multipack waste % | FFD imbalance % | naive padding waste % | lower bound % | ours ms/step |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let source = Source {
        name: "bench".into(),
        samples: lens
            .iter()
            .map(|&len| SampleInfo {
                len,
                loss_tokens: len / 2,
            })
            .collect(),
        weight: 1.0,
    };
    for &b in batches {
        for &world in worlds {
            let cfg = BatchConfig {
                batch_size: b,
                world_size: world,
                token_budget: BUDGET,
                seed: 1,
                tail: TailPolicy::DropLast,
            };
            let mut sampler = Sampler::new(cfg, vec![source.clone()]).unwrap();
            let steps = n / b;
            let (mut ours, mut multipack, mut pad) =
                (Acc::default(), Acc::default(), Acc::default());
            let mut bound_cap = 0u64;
            let mut pack_time = 0.0;
            for _ in 0..steps {
                let t = Instant::now();
                let step = sampler.next_step();
                pack_time += t.elapsed().as_secs_f64();
                ours.add(&step.ranks);
                let with: Vec<(SampleId, SampleInfo)> = step
                    .samples
                    .iter()
                    .map(|&id| (id, sampler.info(id)))
                    .collect();
                multipack.add(&ffd(&with, world));
                let (ranks, _) = naive(&with, world);
                pad.add(&ranks);
                let total = step.stats.tokens;
                bound_cap += world as u64 * total.div_ceil((world * BUDGET) as u64) * BUDGET as u64;
            }
            let bound = 100.0 * (1.0 - ours.tokens as f64 / bound_cap as f64);
            println!(
                "| {b} | {world} | {steps} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {bound:.2} | {:.2} |",
                ours.waste(),
                100.0 * ours.imbalance / ours.steps as f64,
                multipack.waste(),
                100.0 * multipack.imbalance / multipack.steps as f64,
                pad.waste(),
                1000.0 * pack_time / steps as f64
            );
            assert!(
                ours.waste() <= multipack.waste() + 1e-9,
                "packer worse than FFD at B {b}, {world} ranks"
            );
            assert!(
                ours.waste() < pad.waste(),
                "packer worse than padding at B {b}, {world} ranks"
            );
        }
    }
}
