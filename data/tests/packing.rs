//! The exact-batch sampler and packer: tables of small cases, then properties over random
//! lengths, batch sizes and world sizes.

use proptest::prelude::*;
use sftctl_data::pack::{
    BatchConfig, SampleId, SampleInfo, Sampler, SamplerState, Source, Strategy, TailPolicy,
    pack_step, phase_groups, step_stats,
};

fn source(name: &str, lens: &[u32], weight: f64) -> Source {
    Source {
        name: name.into(),
        samples: lens
            .iter()
            .map(|&len| SampleInfo {
                len,
                loss_tokens: len / 2,
            })
            .collect(),
        weight,
    }
}

fn sid(i: u32) -> SampleId {
    SampleId {
        source: 0,
        index: i,
    }
}

/// (lengths, world, budget) -> (micro-batches per rank, tokens per rank, waste).
#[test]
fn packing_table() {
    #[allow(clippy::type_complexity)]
    let cases: &[(&[u32], usize, usize, &[usize], &[u64], f64)] = &[
        (&[4, 4, 4, 4], 1, 8, &[2], &[16], 0.0),
        (&[4, 4, 4, 4], 2, 8, &[1, 1], &[8, 8], 0.0),
        (&[8, 1], 2, 8, &[1, 1], &[8, 1], 1.0 - 9.0 / 16.0),
        (&[5, 5, 5], 1, 8, &[3], &[15], 1.0 - 15.0 / 24.0),
        (&[6, 2, 5, 3, 4, 4], 2, 8, &[2, 2], &[12, 12], 0.25),
        (&[7, 6, 5, 4, 3, 2, 1], 1, 7, &[4], &[28], 0.0),
        (&[3], 4, 8, &[1, 0, 0, 0], &[3, 0, 0, 0], 1.0 - 3.0 / 32.0),
    ];
    for &(lens, world, budget, mbs, tokens, waste) in cases {
        let samples: Vec<_> = lens
            .iter()
            .enumerate()
            .map(|(i, &l)| {
                (
                    sid(i as u32),
                    SampleInfo {
                        len: l,
                        loss_tokens: 1,
                    },
                )
            })
            .collect();
        let ranks = pack_step(&samples, world, budget).unwrap();
        let got_mbs: Vec<usize> = ranks.iter().map(|r| r.micro_batches.len()).collect();
        let got_tokens: Vec<u64> = ranks.iter().map(|r| r.tokens()).collect();
        assert_eq!(
            (got_mbs.as_slice(), got_tokens.as_slice()),
            (mbs, tokens),
            "{lens:?} world {world} budget {budget}"
        );
        let stats = step_stats(&ranks, budget);
        assert!(
            (stats.waste - waste).abs() < 1e-12,
            "{lens:?}: waste {}",
            stats.waste
        );
        assert_eq!(stats.samples, lens.len() as u64);
        assert_eq!(stats.loss_tokens, lens.len() as u64);
    }
}

#[test]
fn micro_batches_expose_boundaries_and_positions() {
    let samples: Vec<_> = [3u32, 2, 4]
        .iter()
        .enumerate()
        .map(|(i, &l)| {
            (
                sid(i as u32),
                SampleInfo {
                    len: l,
                    loss_tokens: 1,
                },
            )
        })
        .collect();
    let ranks = pack_step(&samples, 1, 16).unwrap();
    let mb = &ranks[0].micro_batches[0];
    assert_eq!(mb.samples, [sid(0), sid(1), sid(2)]);
    assert_eq!(mb.cu_seqlens, [0, 3, 5, 9]);
    assert_eq!(mb.position_ids(), [0, 1, 2, 0, 1, 0, 1, 2, 3]);
}

#[test]
fn bad_settings_are_errors() {
    let cfg = BatchConfig {
        batch_size: 4,
        world_size: 1,
        token_budget: 8,
        seed: 1,
        tail: TailPolicy::DropLast,
    };
    let err = Sampler::new(cfg, vec![source("a", &[1, 2, 3], 1.0)]).unwrap_err();
    assert!(err.to_string().contains("larger than an epoch"), "{err}");
    let err = Sampler::new(
        BatchConfig {
            token_budget: 2,
            ..cfg
        },
        vec![source("a", &[1, 2, 3, 4, 5], 1.0)],
    )
    .unwrap_err();
    assert!(err.to_string().contains("over the token budget 2"), "{err}");
    let err = Sampler::new(cfg, vec![source("a", &[1, 2, 3, 4, 5], f64::NAN)]).unwrap_err();
    assert!(err.to_string().contains("weight of `a`"), "{err}");
}

#[test]
fn drop_last_never_crosses_an_epoch() {
    let cfg = BatchConfig {
        batch_size: 3,
        world_size: 2,
        token_budget: 64,
        seed: 7,
        tail: TailPolicy::DropLast,
    };
    let mut s = Sampler::new(cfg, vec![source("a", &(1..=10).collect::<Vec<_>>(), 1.0)]).unwrap();
    for epoch in 0..3u64 {
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..3 {
            let step = s.next_step();
            assert_eq!(step.epoch, epoch);
            assert_eq!(step.samples.len(), 3);
            assert!(
                step.samples.iter().all(|id| seen.insert(*id)),
                "repeat within epoch {epoch}"
            );
        }
        assert_eq!(
            seen.len(),
            9,
            "10 mod 3 = 1 sample left out of epoch {epoch}"
        );
    }
}

#[test]
fn batch_larger_than_the_data_spans_epochs() {
    let cfg = BatchConfig {
        batch_size: 7,
        world_size: 2,
        token_budget: 64,
        seed: 3,
        tail: TailPolicy::Continue,
    };
    let mut s = Sampler::new(cfg, vec![source("a", &[5, 6, 7], 1.0)]).unwrap();
    let step = s.next_step();
    assert_eq!(step.samples.len(), 7);
    assert_eq!(
        s.state(),
        SamplerState {
            epoch: 2,
            position: 1,
            step: 1
        }
    );
}

#[test]
fn mixing_weights_set_uses_per_epoch() {
    let cfg = BatchConfig {
        batch_size: 1,
        world_size: 1,
        token_budget: 64,
        seed: 11,
        tail: TailPolicy::Continue,
    };
    let s = Sampler::new(
        cfg,
        vec![
            source("a", &[1; 10], 0.5),
            source("b", &[2; 4], 2.0),
            source("c", &[3; 6], 1.5),
        ],
    )
    .unwrap();
    assert_eq!(s.epoch_len(), 5 + 8 + 9);
    let mut s = s;
    let (_, ids) = (0..22).fold((0, Vec::new()), |(e, mut v), _| {
        v.extend(s.next_samples().1);
        (e, v)
    });
    let count = |src: u32| ids.iter().filter(|id| id.source == src).count();
    assert_eq!((count(0), count(1), count(2)), (5, 8, 9));
    for i in 0..4 {
        assert_eq!(
            ids.iter()
                .filter(|id| **id
                    == SampleId {
                        source: 1,
                        index: i
                    })
                .count(),
            2
        );
    }
}

#[test]
fn phases_and_stacking() {
    let groups = vec![vec!["a", "b"], vec!["c"]];
    assert_eq!(
        phase_groups(Strategy::Stacked, &groups),
        vec![vec!["a", "b", "c"]]
    );
    assert_eq!(phase_groups(Strategy::Phased, &groups), groups);
}

fn lens_strategy() -> impl proptest::strategy::Strategy<Value = Vec<u32>> {
    proptest::collection::vec(1u32..=512, 1..200)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn every_sample_once_per_epoch_exactly_b_per_step_and_budget_kept(
        lens in lens_strategy(), b in 1usize..300, world in 1usize..9, seed in any::<u64>(), budget in 512usize..2048,
    ) {
        let n = lens.len();
        let cfg = BatchConfig { batch_size: b, world_size: world, token_budget: budget, seed, tail: TailPolicy::Continue };
        let mut s = Sampler::new(cfg, vec![source("a", &lens, 1.0)]).unwrap();
        let mut stream = Vec::new();
        let steps = (3 * n).div_ceil(b);
        for _ in 0..steps {
            let step = s.next_step();
            prop_assert_eq!(step.samples.len(), b);
            prop_assert_eq!(step.ranks.len(), world);
            let mut packed: Vec<SampleId> = step.ranks.iter().flat_map(|r| &r.micro_batches).flat_map(|mb| mb.samples.clone()).collect();
            let mut want = step.samples.clone();
            packed.sort();
            want.sort();
            prop_assert_eq!(packed, want);
            let mut loss = 0;
            for mb in step.ranks.iter().flat_map(|r| &r.micro_batches) {
                prop_assert!(mb.tokens() as usize <= budget);
                prop_assert!(!mb.samples.is_empty());
                loss += mb.loss_tokens;
            }
            prop_assert_eq!(step.stats.loss_tokens, loss);
            prop_assert_eq!(step.stats.loss_tokens, step.samples.iter().map(|id| u64::from(lens[id.index as usize] / 2)).sum::<u64>());
            prop_assert!(step.stats.waste >= 0.0 && step.stats.waste < 1.0);
            stream.extend(step.samples);
        }
        for epoch in stream.chunks(n).filter(|c| c.len() == n) {
            let mut e: Vec<u32> = epoch.iter().map(|id| id.index).collect();
            e.sort_unstable();
            prop_assert_eq!(e, (0..n as u32).collect::<Vec<_>>());
        }
    }

    #[test]
    fn order_is_independent_of_world_size(lens in lens_strategy(), b in 1usize..100, world in 2usize..17, seed in any::<u64>()) {
        let cfg = |w| BatchConfig { batch_size: b, world_size: w, token_budget: 1024, seed, tail: TailPolicy::Continue };
        let mut one = Sampler::new(cfg(1), vec![source("a", &lens, 1.0)]).unwrap();
        let mut many = Sampler::new(cfg(world), vec![source("a", &lens, 1.0)]).unwrap();
        for _ in 0..5 {
            let (a, b) = (one.next_step(), many.next_step());
            prop_assert_eq!(a.samples, b.samples);
            prop_assert_eq!(a.stats.loss_tokens, b.stats.loss_tokens);
        }
    }

    #[test]
    fn resumed_sampler_continues_exactly(lens in lens_strategy(), b in 1usize..100, cut in 0usize..20, seed in any::<u64>(), drop_last in any::<bool>()) {
        let tail = if drop_last { TailPolicy::DropLast } else { TailPolicy::Continue };
        let b = if drop_last { b.min(lens.len()) } else { b };
        let cfg = BatchConfig { batch_size: b, world_size: 3, token_budget: 1024, seed, tail };
        let mut straight = Sampler::new(cfg, vec![source("a", &lens, 1.0)]).unwrap();
        let mut first = Sampler::new(cfg, vec![source("a", &lens, 1.0)]).unwrap();
        for _ in 0..cut {
            straight.next_step();
            first.next_step();
        }
        let saved = serde_json::to_string(&first.state()).unwrap();
        let state: SamplerState = serde_json::from_str(&saved).unwrap();
        let mut resumed = Sampler::resume(cfg, vec![source("a", &lens, 1.0)], state).unwrap();
        for _ in 0..10 {
            prop_assert_eq!(straight.next_step(), resumed.next_step());
        }
    }
}
