//! Parity of the runtime's model with Hugging Face transformers on tiny random Llama, Mistral and
//! Granite models (fixtures from `fixtures/make_fixtures.py`, see `fixtures/versions.json`):
//! logits, per-token loss and the gradients of one backward pass, for packed rows compared with
//! every sample run alone by transformers. Each feature's test also switches the feature off
//! (`Ablation`) and asserts the result then disagrees with transformers, so the fixture really
//! exercises it.

use std::collections::HashMap;
use std::path::PathBuf;

use burn::tensor::{Device, Int, Tensor, TensorData};
use sftctl_runtime::backend::BackendChoice;
use sftctl_runtime::config::ModelConfig;
use sftctl_runtime::model::{Ablation, AttentionKernel, PackedBatch, PackedRow, token_losses};
use sftctl_runtime::weights::{self, WeightsError};

const TOL: f64 = 1e-4;

/// The fixtures; `SFTCTL_FIXTURES` overrides the directory (for a test binary carried to
/// another machine, such as the GPU one).
fn fixture(name: &str) -> PathBuf {
    std::env::var_os("SFTCTL_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures"))
        .join(name)
}

/// Every backend compiled into this test binary (flex by default; tch with `--features tch`),
/// or the comma-separated list in `SFTCTL_TEST_BACKENDS` (e.g. `cuda:0`).
fn devices() -> Vec<(BackendChoice, Device)> {
    let choices = match std::env::var("SFTCTL_TEST_BACKENDS") {
        Ok(list) => list
            .split(',')
            .map(|s| s.trim().parse().expect("SFTCTL_TEST_BACKENDS entry"))
            .collect(),
        Err(_) => BackendChoice::compiled(),
    };
    choices
        .into_iter()
        .map(|b| (b, b.device().expect("compiled backend")))
        .collect()
}

/// Float and int tensors of an `expected.safetensors`, as f32 / i64 host vectors with shapes.
struct Expected {
    floats: HashMap<String, (Vec<usize>, Vec<f32>)>,
    ints: HashMap<String, (Vec<usize>, Vec<i64>)>,
}

fn expected(dir: &str) -> Expected {
    let bytes = fs_err::read(fixture(dir).join("expected.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut floats = HashMap::new();
    let mut ints = HashMap::new();
    for (name, v) in st.iter() {
        let shape = v.shape().to_vec();
        match v.dtype() {
            safetensors::Dtype::F32 => {
                let d = v
                    .data()
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                    .collect();
                floats.insert(name.to_string(), (shape, d));
            }
            safetensors::Dtype::I64 => {
                let d = v
                    .data()
                    .chunks_exact(8)
                    .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
                    .collect();
                ints.insert(name.to_string(), (shape, d));
            }
            other => panic!("unexpected dtype {other:?} for {name}"),
        }
    }
    Expected { floats, ints }
}

/// ‖a − b‖ / ‖b‖.
fn rel_err(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    let num: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| (*x as f64 - *y as f64).powi(2))
        .sum();
    let den: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
    (num / den).sqrt()
}

fn host<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .unwrap()
}

/// The packed rows of `inputs.json`, built with the runtime's own [`PackedRow`].
fn packed_rows(dir: &str) -> Vec<PackedRow> {
    let text = fs_err::read_to_string(fixture(dir).join("inputs.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let len = v["length"].as_u64().unwrap() as usize;
    let ints = |x: &serde_json::Value| -> Vec<i64> {
        x.as_array()
            .unwrap()
            .iter()
            .map(|n| n.as_i64().unwrap())
            .collect()
    };
    v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| {
            let mut r = PackedRow::default();
            for s in row.as_array().unwrap() {
                r.push(&ints(&s["tokens"]), &ints(&s["labels"]));
            }
            r.pad_to(len, 0);
            r
        })
        .collect()
}

/// 1.0 where a token belongs to a sample, 0.0 on padding, per `[B, T]` position.
fn sample_mask(dir: &str, rows: &[PackedRow]) -> Vec<f32> {
    let text = fs_err::read_to_string(fixture(dir).join("inputs.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let lens: Vec<usize> = v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| {
            row.as_array()
                .unwrap()
                .iter()
                .map(|s| s["tokens"].as_array().unwrap().len())
                .sum()
        })
        .collect();
    rows.iter()
        .zip(lens)
        .flat_map(|(r, n)| (0..r.len()).map(move |i| (i < n) as u8 as f32))
        .collect()
}

/// Results of one forward + backward of the runtime on the fixture's packed batch.
struct Run {
    logits: Vec<f32>,
    token_loss: Vec<f32>,
    grads: Vec<(String, Vec<usize>, Vec<f32>)>,
}

/// The attention kernels a device runs: the decomposed path everywhere, and libtorch's fused
/// kernel on libtorch devices.
fn kernels(backend: BackendChoice) -> Vec<AttentionKernel> {
    match backend {
        BackendChoice::Flex => vec![AttentionKernel::Plain],
        _ => vec![AttentionKernel::Plain, AttentionKernel::Auto],
    }
}

fn run(dir: &str, device: &Device, ablation: Ablation, kernel: AttentionKernel) -> Run {
    let exp = expected(dir);
    let ad = device.clone().autodiff();
    let mut model = weights::load_model(&fixture(dir), &ad).unwrap();
    model.ablation = ablation;
    model.attention = kernel;
    // `Auto` is the fused kernel wherever this test asks for it (see `kernels`).
    assert_eq!(
        model.fused_attention(&ad),
        kernel == AttentionKernel::Auto && !ablation.tiled_kv_heads,
        "{dir}: {kernel:?} on {device:?}"
    );
    let rows = packed_rows(dir);
    let batch = PackedBatch::new(&rows, &device.clone().autodiff());
    // The runtime's packing gives exactly the tensors the fixture script built.
    for (name, t) in [
        ("tokens", &batch.tokens),
        ("positions", &batch.positions),
        ("seq_ids", &batch.seq_ids),
        ("targets", &batch.targets),
    ] {
        let ours: Vec<i64> = t.to_data().convert::<i64>().try_into_vec::<i64>().unwrap();
        assert_eq!(ours, exp.ints[name].1, "{dir}: packed `{name}` differs");
    }
    let logits = model.forward(batch.tokens, batch.positions, batch.seq_ids);
    let losses = token_losses(logits.clone(), batch.targets);
    let grads = losses.clone().sum().backward();
    let mask = sample_mask(dir, &rows);
    let vocab = model.config.vocab_size;
    let logits: Vec<f32> = host(logits)
        .into_iter()
        .enumerate()
        .map(|(i, x)| x * mask[i / vocab])
        .collect();
    Run {
        logits,
        token_loss: host(losses),
        grads: weights::hf_gradients(&model, &grads),
    }
}

/// Max relative error over logits, per-token loss and every gradient.
fn errors(dir: &str, r: &Run) -> Vec<(String, f64)> {
    let exp = expected(dir);
    let mut out = vec![
        (
            "logits".to_string(),
            rel_err(&r.logits, &exp.floats["logits"].1),
        ),
        (
            "token_loss".to_string(),
            rel_err(&r.token_loss, &exp.floats["token_loss"].1),
        ),
    ];
    let grad_names: Vec<&String> = exp
        .floats
        .keys()
        .filter(|k| k.starts_with("grad."))
        .collect();
    assert_eq!(
        grad_names.len(),
        r.grads.len(),
        "{dir}: one gradient per parameter"
    );
    for (name, shape, g) in &r.grads {
        let (eshape, e) = &exp.floats[&format!("grad.{name}")];
        assert_eq!(shape, eshape, "{dir}: gradient shape of {name}");
        out.push((format!("grad.{name}"), rel_err(g, e)));
    }
    out
}

fn assert_parity(dir: &str) {
    for (backend, device) in devices() {
        for kernel in kernels(backend) {
            let r = run(dir, &device, Ablation::default(), kernel);
            let errs = errors(dir, &r);
            let worst = errs.iter().max_by(|a, b| a.1.total_cmp(&b.1)).unwrap();
            eprintln!(
                "{dir} on {backend} ({kernel:?} attention): logits {:.2e}, token loss {:.2e}, worst {} {:.2e}",
                errs[0].1, errs[1].1, worst.0, worst.1
            );
            for (name, e) in errs {
                assert!(
                    e <= TOL,
                    "{dir} on {backend} ({kernel:?} attention): {name} rel err {e:.3e} > {TOL:e}"
                );
            }
        }
    }
}

/// Switching `ablation` on must break parity (logits), proving the fixture exercises it, on
/// every backend and attention kernel.
fn assert_ablation_breaks(dir: &str, ablation: Ablation, what: &str) {
    for (backend, device) in devices() {
        for kernel in kernels(backend) {
            let r = run(dir, &device, ablation, kernel);
            let e = errors(dir, &r)[0].1;
            assert!(
                e > 1e-2,
                "{dir} on {backend} ({kernel:?} attention): with {what} switched off the logits still match (rel err {e:.3e})"
            );
        }
    }
}

#[test]
fn llama_gqa_llama3_rope_tied_biases_packed_match_transformers() {
    assert_parity("llama");
    assert_ablation_breaks(
        "llama",
        Ablation {
            no_rope_scaling: true,
            ..Ablation::default()
        },
        "llama3 rope scaling",
    );
    assert_ablation_breaks(
        "llama",
        Ablation {
            tiled_kv_heads: true,
            ..Ablation::default()
        },
        "grouped kv-head mapping",
    );
    assert_ablation_breaks(
        "llama",
        Ablation {
            no_packing_mask: true,
            ..Ablation::default()
        },
        "the packed-sequence mask",
    );
}

#[test]
fn mistral_sliding_window_gqa_packed_match_transformers() {
    assert_parity("mistral");
    assert_ablation_breaks(
        "mistral",
        Ablation {
            no_sliding_window: true,
            ..Ablation::default()
        },
        "the sliding window",
    );
    assert_ablation_breaks(
        "mistral",
        Ablation {
            no_packing_mask: true,
            ..Ablation::default()
        },
        "the packed-sequence mask",
    );
}

#[test]
fn granite_multipliers_packed_match_transformers() {
    assert_parity("granite");
    assert_ablation_breaks(
        "granite",
        Ablation {
            no_granite_multipliers: true,
            ..Ablation::default()
        },
        "Granite's multipliers",
    );
    assert_ablation_breaks(
        "granite",
        Ablation {
            tiled_kv_heads: true,
            ..Ablation::default()
        },
        "grouped kv-head mapping",
    );
}

/// The tied fixture stores no `lm_head.weight`: read as untied it must fail naming the tensor
/// (so the tied path is what made the logits match). Likewise its biases: read without
/// `attention_bias`, the bias tensors are reported unused.
#[test]
fn tied_embeddings_and_bias_flags_are_required_by_the_weights() {
    let dir = fixture("llama");
    let config = ModelConfig::from_file(&dir.join("config.json")).unwrap();
    assert!(config.tie_word_embeddings && config.attention_bias && config.mlp_bias);
    let device = devices()[0].1.clone();

    let mut untied = config.clone();
    untied.tie_word_embeddings = false;
    match weights::load_weights(&dir, untied, &device) {
        Err(WeightsError::Mismatch { missing, .. }) => {
            assert_eq!(missing, vec!["lm_head.weight".to_string()])
        }
        other => panic!("expected a mismatch, got {other:?}"),
    }

    let mut no_bias = config;
    no_bias.attention_bias = false;
    match weights::load_weights(&dir, no_bias, &device) {
        Err(e @ WeightsError::Mismatch { .. }) => {
            let WeightsError::Mismatch {
                unused, missing, ..
            } = &e
            else {
                unreachable!()
            };
            assert!(missing.is_empty());
            assert_eq!(unused.len(), 2 * 4, "{e}");
            assert!(
                e.to_string()
                    .contains("model.layers.0.self_attn.q_proj.bias"),
                "{e}"
            );
        }
        other => panic!("expected a mismatch, got {other:?}"),
    }
}

/// bf16 weights in two shards with an index (written by transformers), and fp16 in one file.
#[test]
fn bf16_sharded_and_fp16_checkpoints_match_transformers() {
    for dir in ["llama_bfloat16", "granite_float16"] {
        let exp = expected(dir);
        let (shape, tokens) = &exp.ints["tokens"];
        for (backend, device) in devices() {
            let model = weights::load_model(&fixture(dir), &device).unwrap();
            let t = shape[1];
            let tokens: Tensor<2, Int> =
                Tensor::from_data(TensorData::new(tokens.clone(), [1, t]), &device);
            let positions: Tensor<2, Int> = Tensor::from_data(
                TensorData::new((0..t as i64).collect::<Vec<_>>(), [1, t]),
                &device,
            );
            let seq_ids: Tensor<2, Int> = Tensor::zeros([1, t], &device);
            let logits = host(model.forward(tokens, positions, seq_ids));
            let e = rel_err(&logits, &exp.floats["logits"].1);
            assert!(e <= TOL, "{dir} on {backend}: logits rel err {e:.3e}");
        }
    }
    assert!(
        fixture("llama_bfloat16")
            .join(weights::INDEX_FILE)
            .is_file()
    );
}
