//! Global-norm clipping against PyTorch's `clip_grad_norm_` on the same gradients
//! (fixture written by `fixtures/clip_grad_norm.py` with torch 2.11).

mod common;

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::{Tensor, TensorData};
use common::*;
use sftctl_runtime::train::clip_by_global_norm;

#[derive(serde::Deserialize)]
struct Case {
    name: String,
    max_norm: f64,
    grads: Vec<Vec<f32>>,
    norm: f64,
    clipped: Vec<Vec<f32>>,
}

#[derive(serde::Deserialize)]
struct Fixture {
    cases: Vec<Case>,
}

fn register(model: &impl Module, values: &[Vec<f32>]) -> GradientsParams {
    struct Reg<'a> {
        values: std::slice::Iter<'a, Vec<f32>>,
        grads: GradientsParams,
    }
    impl ModuleVisitor for Reg<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let v = self
                .values
                .next()
                .expect("fixture has fewer tensors than the model");
            let dims = param.lazy_shape().dims::<D>();
            let t = Tensor::<D>::from_data(TensorData::new(v.clone(), dims), &device());
            self.grads.register::<D>(param.id, t);
        }
    }
    let mut r = Reg {
        values: values.iter(),
        grads: GradientsParams::new(),
    };
    model.visit(&mut r);
    r.grads
}

fn read(model: &impl Module, grads: &GradientsParams) -> Vec<Vec<f32>> {
    struct Get<'a>(&'a GradientsParams, Vec<Vec<f32>>);
    impl ModuleVisitor for Get<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let g = self.0.get::<D>(param.id).unwrap();
            self.1.push(g.into_data().try_into_vec::<f32>().unwrap());
        }
    }
    let mut g = Get(grads, vec![]);
    model.visit(&mut g);
    g.1
}

/// Tolerance: 1e-6 relative on the norm and on every clipped value (f32 sums in another order).
#[test]
fn global_norm_clipping_matches_pytorch() {
    let text = fs_err::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/clip_grad_norm.json"
    ))
    .unwrap();
    let fixture: Fixture = serde_json::from_str(&text).unwrap();
    assert_eq!(fixture.cases.len(), 3);
    let model = toy(1);
    for case in &fixture.cases {
        let grads = register(&model, &case.grads);
        let (clipped, norm) = clip_by_global_norm(&model, grads, Some(case.max_norm));
        assert!(
            (norm - case.norm).abs() <= 1e-6 * case.norm,
            "{}: norm {norm} vs torch {}",
            case.name,
            case.norm
        );
        let got = read(&model, &clipped);
        for (g, w) in got.iter().flatten().zip(case.clipped.iter().flatten()) {
            assert!(
                (g - w).abs() <= 1e-6 * w.abs().max(1e-6),
                "{}: clipped {g} vs torch {w}",
                case.name
            );
        }
        if case.name == "unclipped" {
            assert_eq!(got, case.grads, "below the threshold nothing changes");
        }
    }
}

/// The global norm of a large gradient (2M elements, one matrix) equals the f64 norm to 1e-6
/// relative: a single f32 running sum over so many squares drifts by about 3e-4.
#[test]
fn global_norm_of_a_large_gradient_is_accurate() {
    let model = burn::nn::LinearConfig::new(2048, 1024)
        .with_bias(false)
        .init(&device());
    let mut state = 12345u64;
    let values: Vec<f32> = (0..2048 * 1024)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 24) as f32) - 0.5
        })
        .collect();
    let exact = values
        .iter()
        .map(|&v| f64::from(v) * f64::from(v))
        .sum::<f64>()
        .sqrt();
    let grads = register(&model, &[values]);
    let norm = sftctl_runtime::train::global_grad_norm(&model, &grads);
    let rel = (norm - exact).abs() / exact;
    assert!(
        rel <= 1e-6,
        "norm {norm} vs exact {exact}: relative error {rel:e}"
    );
}
