//! The training step on the real Llama model (the tiny configuration): k micro-batches against
//! one batch, and the learning rate of a warmup schedule against hand-computed values.

use std::time::Duration;

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::{Device, Tensor};
use sftctl_runtime::collective::SingleProcess;
use sftctl_runtime::config::Arch;
use sftctl_runtime::model::CausalLm;
use sftctl_runtime::tiny::tiny_config;
use sftctl_runtime::train::{
    AdamWSettings, IGNORE, LrSchedule, MicroBatch, ScheduleKind, StepOutcome, StepSettings,
    StopSignal, Trainer, with_stable_param_ids,
};

const VOCAB: usize = 300;

fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// `n` random samples of 5..=24 tokens; the second half of each carries loss.
fn samples(seed: u64, n: usize) -> Vec<(Vec<u32>, Vec<i32>)> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            let len = 5 + (splitmix(&mut s) % 20) as usize;
            let tokens: Vec<u32> = (0..len)
                .map(|_| (splitmix(&mut s) % VOCAB as u64) as u32)
                .collect();
            let mut targets = vec![IGNORE; len];
            for t in len / 2..len - 1 {
                targets[t] = tokens[t + 1] as i32;
            }
            (tokens, targets)
        })
        .collect()
}

fn pack(samples: &[(Vec<u32>, Vec<i32>)]) -> MicroBatch {
    let mut mb = MicroBatch {
        tokens: vec![],
        positions: vec![],
        targets: vec![],
        sample_lengths: vec![],
    };
    for (tokens, targets) in samples {
        mb.tokens.extend(tokens);
        mb.positions.extend(0..tokens.len() as u32);
        mb.targets.extend(targets);
        mb.sample_lengths.push(tokens.len());
    }
    mb
}

fn params(model: &CausalLm) -> Vec<f32> {
    struct Collect(Vec<f32>);
    impl ModuleVisitor for Collect {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            self.0
                .extend(param.val().into_data().try_into_vec::<f32>().unwrap());
        }
    }
    let mut c = Collect(vec![]);
    model.visit(&mut c);
    c.0
}

fn device() -> Device {
    Device::flex().autodiff()
}

fn trainer(arch: Arch) -> Trainer<CausalLm> {
    let model = CausalLm::random(&tiny_config(arch, VOCAB), &device(), 5);
    Trainer::new(
        with_stable_param_ids(model),
        StepSettings {
            adamw: AdamWSettings::default(),
            schedule: LrSchedule {
                kind: ScheduleKind::Cosine,
                peak_lr: 1e-3,
                warmup_steps: 2,
                total_steps: 6,
                min_lr_ratio: 0.0,
            },
            max_grad_norm: Some(1.0),
        },
        device(),
    )
}

/// Runs 3 steps of 8 samples split into micro-batches of `per_micro`; returns parameters and
/// the applied learning rates.
fn train(arch: Arch, per_micro: usize) -> (Vec<f32>, Vec<(f64, f64, f64)>) {
    let mut t = trainer(arch);
    let stop = StopSignal::manual(Duration::from_secs(60));
    let mut log = vec![];
    for step in 0..3 {
        let s = samples(100 + step, 8);
        let mbs: Vec<MicroBatch> = s.chunks(per_micro).map(pack).collect();
        match t.step(&mbs, mbs.len(), &mut SingleProcess, &stop).unwrap() {
            StepOutcome::Completed(st) => log.push((st.loss, st.grad_norm, st.lr)),
            other => panic!("{other:?}"),
        }
    }
    (params(&t.model), log)
}

/// Tolerance: parameters within 1e-5 absolute (Adam's steps are 1e-3; that is 1% of one step),
/// loss and gradient norm within 1e-5 relative. Learning rates exact: warmup 0, 5e-4, then
/// cosine over 4 steps from 1e-3.
#[test]
fn llama_accumulation_equals_one_batch_and_lr_follows_warmup() {
    for arch in [Arch::Llama, Arch::Granite] {
        let (one, log_one) = train(arch, 8);
        for per_micro in [1, 3] {
            let (many, log_many) = train(arch, per_micro);
            let worst = one
                .iter()
                .zip(&many)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            eprintln!("{arch:?}, micro-batches of {per_micro}: max |param diff| {worst:e}");
            assert!(worst <= 1e-5, "{arch:?} per_micro {per_micro}: {worst}");
            for ((l1, n1, lr1), (l2, n2, lr2)) in log_one.iter().zip(&log_many) {
                assert!((l1 - l2).abs() <= 1e-5 * l1, "loss {l1} vs {l2}");
                assert!((n1 - n2).abs() <= 1e-5 * n1, "norm {n1} vs {n2}");
                assert_eq!(lr1, lr2);
            }
        }
        let lrs: Vec<f64> = log_one.iter().map(|l| l.2).collect();
        assert_eq!(lrs, vec![0.0, 5e-4, 1e-3]);
    }
}
