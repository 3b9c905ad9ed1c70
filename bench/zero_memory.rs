//! Resident memory per rank with and without ZeRO-1 (docs/distributed.md): a 28.97M-parameter
//! Mistral-shaped model trained for 2 steps of one 16-token micro-batch per rank.
//!
//! ```text
//! mpirun -np 2 -x GLIBC_TUNABLES=glibc.malloc.mmap_threshold=65536 \
//!   $CARGO_TARGET_DIR/debug/examples/zero_memory zero1      # or `none`
//! ```
//!
//! Each rank prints its resident memory over the baseline before the model was built: after the
//! model, after the steps (what stays: weights + optimizer state), and the peak (`VmHWM`).
//! With the glibc tunable every tensor buffer is its own mapping, returned when freed.

use std::time::Duration;

use burn::tensor::Device;
use sftctl_runtime::collective::Collective;
use sftctl_runtime::collective::mpi::MpiCollective;
use sftctl_runtime::config::Arch;
use sftctl_runtime::model::CausalLm;
use sftctl_runtime::tiny::tiny_config;
use sftctl_runtime::train::{
    AdamWSettings, IGNORE, LrSchedule, MicroBatch, ScheduleKind, StepOutcome, StepSettings,
    StopSignal, Trainer, with_stable_param_ids,
};

/// `VmRSS` and `VmHWM` of this process, in bytes.
fn rss() -> (u64, u64) {
    let status = fs_err::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn main() {
    let sharded = match std::env::args().nth(1).as_deref() {
        Some("zero1") => true,
        Some("none") => false,
        other => {
            eprintln!("usage: zero_memory none|zero1 (got {other:?})");
            std::process::exit(1);
        }
    };
    let mut c = MpiCollective::init(None).unwrap_or_else(|e| {
        eprintln!("error: {e}");
        std::process::exit(2)
    });
    let (rank, world) = (c.rank(), c.world_size());
    let device = Device::flex().autodiff();
    let mut config = tiny_config(Arch::Mistral, 16000);
    config.hidden_size = 512;
    config.intermediate_size = 1536;
    config.num_hidden_layers = 4;
    config.num_attention_heads = 8;
    config.num_key_value_heads = 4;
    config.head_dim = 64;
    let (base, _) = rss();
    let model = with_stable_param_ids(CausalLm::random(&config, &device, 1));
    let n = model.param_count();
    let (after_model, _) = rss();
    let settings = StepSettings {
        adamw: AdamWSettings::default(),
        schedule: LrSchedule {
            kind: ScheduleKind::Constant,
            peak_lr: 1e-4,
            warmup_steps: 0,
            total_steps: 10,
            min_lr_ratio: 0.0,
        },
        max_grad_norm: Some(1.0),
    };
    let mut trainer = Trainer::new(model, settings, device);
    if sharded {
        trainer = trainer.with_zero1(rank, world);
    }
    let stop = StopSignal::manual(Duration::from_secs(600));
    let t = 16;
    let mb = MicroBatch {
        tokens: (0..t as u32)
            .map(|i| (i * 7 + rank as u32) % 16000)
            .collect(),
        positions: (0..t as u32).collect(),
        targets: (0..t as i32)
            .map(|i| if i < 4 { IGNORE } else { i * 5 })
            .collect(),
        sample_lengths: vec![t],
    };
    for step in 0..2 {
        match trainer.step(std::slice::from_ref(&mb), 1, &mut c, &stop) {
            Ok(StepOutcome::Completed(_)) => {}
            other => panic!("step {step}: {other:?}"),
        }
    }
    let (after, peak) = rss();
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    let line = format!(
        "rank {rank}/{world} {}: {n} parameters; over baseline: model {:.1} MiB, after 2 steps \
         {:.1} MiB, peak {:.1} MiB; optimizer state {:.1} MiB\n",
        if sharded { "zero1" } else { "none" },
        mib(after_model - base),
        mib(after - base),
        mib(peak - base),
        mib(trainer
            .zero
            .as_ref()
            .map_or(8 * n as u64, |z| z.state_bytes() as u64)),
    );
    let _ = std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes());
}
