//! Shared pieces of the training-loop tests: a toy model on the flex device and a
//! deterministic synthetic sampler with a resumable state.
#![allow(dead_code)]

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::{Device, Tensor};
use sftctl_runtime::train::toy::ToyLm;
use sftctl_runtime::train::{
    AdamWSettings, BatchSource, IGNORE, LrSchedule, MicroBatch, ScheduleKind, StepBatch,
    StepSettings, Trainer, with_stable_param_ids,
};

pub const VOCAB: usize = 11;
pub const DIM: usize = 8;
pub const MAX_POS: usize = 16;

pub fn device() -> Device {
    Device::flex().autodiff()
}

/// A toy model with weights fixed by `seed`. Seeding and drawing hold a lock: the generator
/// is shared by the test threads of this binary, and another test's draws in between would
/// change the weights.
pub fn toy(seed: u64) -> ToyLm {
    static INIT: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = INIT.lock().unwrap_or_else(|e| e.into_inner());
    let device = device();
    device.seed(seed);
    with_stable_param_ids(ToyLm::new(VOCAB, DIM, MAX_POS, &device))
}

fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Sample `index` of a synthetic chat set: 3..=12 tokens, the second half counted in the loss.
pub fn sample(seed: u64, index: u64) -> (Vec<u32>, Vec<i32>) {
    let mut s = seed ^ index.wrapping_mul(0xD6E8_FEB8_6659_FD93);
    let len = 3 + (splitmix(&mut s) % 10) as usize;
    let tokens: Vec<u32> = (0..len)
        .map(|_| (splitmix(&mut s) % VOCAB as u64) as u32)
        .collect();
    let mut targets = vec![IGNORE; len];
    for t in len / 2..len - 1 {
        targets[t] = tokens[t + 1] as i32;
    }
    (tokens, targets)
}

/// Pack whole samples into one micro-batch.
pub fn pack(samples: &[(Vec<u32>, Vec<i32>)]) -> MicroBatch {
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

/// The step's samples split into micro-batches of `per_micro` samples.
pub fn step_batches(seed: u64, first: u64, batch: u64, per_micro: u64) -> Vec<MicroBatch> {
    let samples: Vec<_> = (first..first + batch).map(|i| sample(seed, i)).collect();
    samples.chunks(per_micro as usize).map(pack).collect()
}

/// A sampler over the synthetic set: `batch` samples per step in micro-batches of `per_micro`.
#[derive(Debug, Clone)]
pub struct ToySource {
    pub seed: u64,
    pub next: u64,
    pub batch: u64,
    pub per_micro: u64,
    pub epoch_len: u64,
    pub valid: Vec<MicroBatch>,
}

impl ToySource {
    pub fn new(seed: u64, batch: u64, per_micro: u64) -> Self {
        Self {
            seed,
            next: 0,
            batch,
            per_micro,
            epoch_len: 64,
            valid: step_batches(seed ^ 0xABCD, 0, 8, 4),
        }
    }
}

impl BatchSource for ToySource {
    fn next_step(&mut self) -> Option<StepBatch> {
        let micro_batches = step_batches(self.seed, self.next, self.batch, self.per_micro);
        self.next += self.batch;
        Some(StepBatch {
            agree_points: micro_batches.len(),
            micro_batches,
        })
    }
    fn state(&self) -> serde_json::Value {
        serde_json::json!({ "next": self.next })
    }
    fn restore(&mut self, state: &serde_json::Value) -> Result<(), String> {
        self.next = state["next"].as_u64().ok_or("no `next`")?;
        Ok(())
    }
    fn epoch(&self) -> u64 {
        self.next / self.epoch_len
    }
    fn validation(&self) -> &[MicroBatch] {
        &self.valid
    }
}

pub fn settings(kind: ScheduleKind, warmup: u64, total: u64) -> StepSettings {
    StepSettings {
        adamw: AdamWSettings::default(),
        schedule: LrSchedule {
            kind,
            peak_lr: 1e-2,
            warmup_steps: warmup,
            total_steps: total,
            min_lr_ratio: 0.0,
        },
        max_grad_norm: Some(1.0),
    }
}

pub fn trainer(seed: u64, settings: StepSettings) -> Trainer<ToyLm> {
    Trainer::new(toy(seed), settings, device())
}

/// Every float parameter as raw f32 values, in visiting order.
pub fn params<M: Module>(model: &M) -> Vec<Vec<f32>> {
    struct Collect(Vec<Vec<f32>>);
    impl ModuleVisitor for Collect {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            self.0
                .push(param.val().into_data().try_into_vec::<f32>().unwrap());
        }
    }
    let mut c = Collect(vec![]);
    model.visit(&mut c);
    c.0
}

/// Bitwise view of parameters (NaN-safe equality).
pub fn bits(values: &[Vec<f32>]) -> Vec<Vec<u32>> {
    values
        .iter()
        .map(|v| v.iter().map(|x| x.to_bits()).collect())
        .collect()
}

/// The optimizer state (every Adam moment tensor's raw bytes and every scalar such as the
/// step counter), keyed by name, for bitwise comparison.
pub fn adam_state(trainer: &Trainer<ToyLm>) -> std::collections::BTreeMap<String, String> {
    let bytes = trainer.optimizer.to_record().into_bytes().unwrap();
    let reader = burn_pack::Reader::from_bytes(bytes).unwrap();
    let mut out = std::collections::BTreeMap::new();
    for name in reader.tensor_names() {
        let data = reader.tensor_data(name).unwrap();
        out.insert(name.to_string(), hex_of(&data));
    }
    for (name, value) in reader.scalars() {
        out.insert(name.clone(), format!("{value:?}"));
    }
    out
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Micro-batch `index` of the synthetic stream `seed` for the tiny Llama: `samples` chat samples
/// of 4..=19 tokens below `vocab`, the second half of each in the loss, so micro-batches have
/// unequal loss-token counts.
pub fn llama_micro_batch(seed: u64, index: u64, samples: usize, vocab: usize) -> MicroBatch {
    let mut mb = MicroBatch {
        tokens: vec![],
        positions: vec![],
        targets: vec![],
        sample_lengths: vec![],
    };
    for s in 0..samples as u64 {
        let mut state = seed ^ (index * 31 + s).wrapping_mul(0xD6E8_FEB8_6659_FD93);
        let len = 4 + (splitmix(&mut state) % 16) as usize;
        let tokens: Vec<u32> = (0..len)
            .map(|_| (splitmix(&mut state) % vocab as u64) as u32)
            .collect();
        let mut targets = vec![IGNORE; len];
        for t in len / 2..len - 1 {
            targets[t] = tokens[t + 1] as i32;
        }
        mb.positions.extend(0..len as u32);
        mb.tokens.extend(tokens);
        mb.targets.extend(targets);
        mb.sample_lengths.push(len);
    }
    mb
}
