//! Benchmark: forward + backward time per token of the runtime's model (random weights, fp32) on
//! one backend. Compare with `bench/model_fwd_bwd_torch.py` (same config); `bench/model_bench.sh`
//! runs both. Prints one JSON line.
//!
//! Usage: cargo run --release -p sftctl-runtime --example model_fwd_bwd -- \
//!   [--backend flex|tch-cpu|cuda:N] [--layers 4] [--hidden 512] [--batch 4] [--seq 256] [--iters 5]

use std::time::Instant;

use burn::tensor::{Int, Tensor, TensorData};
use sftctl_runtime::backend::BackendChoice;
use sftctl_runtime::config::Arch;
use sftctl_runtime::model::{CausalLm, loss_sum};
use sftctl_runtime::tiny::tiny_config;

fn arg(args: &[String], name: &str, default: &str) -> String {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
        .unwrap_or_else(|| default.to_string())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let num =
        |name: &str, default: &str| -> usize { arg(&args, name, default).parse().expect(name) };
    let backend: BackendChoice = arg(&args, "--backend", "flex").parse().expect("--backend");
    let (layers, hidden, batch, seq, iters) = (
        num("--layers", "4"),
        num("--hidden", "512"),
        num("--batch", "4"),
        num("--seq", "256"),
        num("--iters", "5"),
    );
    let vocab = num("--vocab", "4096");
    let heads = hidden / 64;
    let mut config = tiny_config(Arch::Llama, vocab);
    config.num_hidden_layers = layers;
    config.hidden_size = hidden;
    config.intermediate_size = hidden * 8 / 3 / 64 * 64;
    config.num_attention_heads = heads;
    config.num_key_value_heads = heads;
    config.head_dim = 64;
    config.tie_word_embeddings = false;
    config.rope_scaling = sftctl_runtime::config::RopeScaling::None;

    let device = backend.device().expect("backend").autodiff();
    let model = CausalLm::random(&config, &device, 0);
    let n = batch * seq;
    let ids: Vec<i64> = (0..n as i64)
        .map(|i| (i * 7919 + 13) % vocab as i64)
        .collect();
    let tokens: Tensor<2, Int> =
        Tensor::from_data(TensorData::new(ids.clone(), [batch, seq]), &device);
    let targets: Tensor<2, Int> = Tensor::from_data(
        TensorData::new(
            ids.iter()
                .map(|x| (x + 1) % vocab as i64)
                .collect::<Vec<_>>(),
            [batch, seq],
        ),
        &device,
    );
    let positions: Tensor<2, Int> = Tensor::from_data(
        TensorData::new(
            (0..n as i64).map(|i| i % seq as i64).collect::<Vec<_>>(),
            [batch, seq],
        ),
        &device,
    );
    let seq_ids: Tensor<2, Int> = Tensor::zeros([batch, seq], &device);

    let mut times = Vec::new();
    for i in 0..iters + 1 {
        let start = Instant::now();
        let logits = model.forward(tokens.clone(), positions.clone(), seq_ids.clone());
        let loss = loss_sum(logits, targets.clone());
        let grads = loss.backward();
        // Read one gradient back so the work is finished before the clock stops.
        let g = model.embed_tokens.val().grad(&grads).expect("gradient");
        let _ = g.sum().into_scalar::<f32>();
        let _ = loss.into_scalar::<f32>();
        if i > 0 {
            times.push(start.elapsed().as_secs_f64());
        }
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    println!(
        "{{\"impl\":\"burn-{backend}\",\"layers\":{layers},\"hidden\":{hidden},\"vocab\":{vocab},\"batch\":{batch},\"seq\":{seq},\"median_step_ms\":{:.1},\"us_per_token\":{:.2},\"params\":{}}}",
        median * 1e3,
        median * 1e6 / n as f64,
        model.param_count()
    );
}
