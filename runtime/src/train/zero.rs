//! ZeRO stage 1: AdamW state sharded across the data-parallel ranks. Gradients are flattened in
//! the model's parameter order, reduce-scattered so each rank holds the summed gradient of one
//! contiguous shard, clipped by the global norm (from the shards' sums of squares), and stepped
//! by [`FlatAdamW`] on fp32 master weights; the updated shards are all-gathered and written back
//! into the model's `Param`s. Talks to other ranks only through [`Collective`].
//!
//! Invariant: the update equals Burn's AdamW as [`AdamWSettings::build`] configures it, element
//! for element (the same f32 operations in the same order), so one rank with sharding is the
//! unsharded trainer bit for bit and several ranks differ only by the summation order of the
//! reduction.

use std::collections::HashMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::{DType, Device, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::collective::{Collective, CollectiveError};
use crate::train::optim::AdamWSettings;

/// The sharded optimizer's state in a checkpoint directory (replaces `optimizer.bpk`).
///
/// Format (safetensors): `exp_avg` and `exp_avg_sq`, each an F32 tensor `[n]` over the whole
/// flat parameter vector (the parameters of `trainer_state.json`'s `params`, in that order,
/// row-major), and metadata `format` = `sftctl-zero1`, `version` = `1`, `step_count` (AdamW's
/// time step, 0 before the first update), `params` = n. Independent of the world size, so a run
/// may resume on another number of ranks. The master weights are the checkpoint's fp32
/// `model.safetensors`.
pub const ZERO_FILE: &str = "optimizer-zero1.safetensors";

/// Elements of one rank's piece of a communication bucket: a bucket holds one piece per rank
/// (at most 2^24 floats, 64 MiB, in all).
const BUCKET: usize = 1 << 24;

/// How the optimizer state is laid out over the ranks (spec key `[train] optimizer_sharding`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerSharding {
    /// Every rank holds the whole AdamW state and applies the whole update (Burn's AdamW).
    #[default]
    None,
    /// ZeRO stage 1: each rank holds the fp32 master weights and moments of its shard only.
    Zero1,
}

impl std::str::FromStr for OptimizerSharding {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "none" => Ok(Self::None),
            "zero1" => Ok(Self::Zero1),
            other => Err(format!(
                "optimizer_sharding `{other}` is not one of `none`, `zero1`"
            )),
        }
    }
}

/// Where each rank's shard lies in the flat parameter vector of `total` elements: rank `r`
/// owns `[r·shard, (r+1)·shard)`, the vector padded with zeros to `world·shard`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardLayout {
    /// Elements of the flat parameter vector.
    pub total: usize,
    /// Ranks.
    pub world: usize,
    /// This rank.
    pub rank: usize,
    /// Elements per shard (the last rank's may run into the padding).
    pub shard: usize,
}

impl ShardLayout {
    /// The layout of `total` elements over `world` ranks, seen from `rank`.
    pub fn new(total: usize, world: usize, rank: usize) -> Self {
        let world = world.max(1);
        Self {
            total,
            world,
            rank,
            shard: total.div_ceil(world).max(1),
        }
    }

    /// Rank `rank`'s elements of the flat vector (without padding; may be empty).
    pub fn range_of(&self, rank: usize) -> Range<usize> {
        let start = (rank * self.shard).min(self.total);
        start..((rank + 1) * self.shard).min(self.total)
    }

    /// This rank's elements of the flat vector.
    pub fn range(&self) -> Range<usize> {
        self.range_of(self.rank)
    }

    /// The communication pieces, as offsets inside a shard: bucket `k` carries piece `k` of
    /// every rank's shard.
    pub fn pieces(&self) -> impl Iterator<Item = Range<usize>> + use<> {
        let step = (BUCKET / self.world).max(1);
        let shard = self.shard;
        (0..shard.div_ceil(step)).map(move |k| k * step..((k + 1) * step).min(shard))
    }

    /// Element `i` of the padded flat vector, or 0 in the padding.
    fn padded(flat: &[f32], i: usize) -> f32 {
        flat.get(i).copied().unwrap_or(0.0)
    }
}

/// AdamW on one flat fp32 vector, with the operations of Burn 0.22.1's `AdamW::step` (decoupled
/// weight decay, bias correction by `1 - beta^t` in f32, epsilon added to the root of the
/// corrected second moment).
#[derive(Debug, Clone)]
pub struct FlatAdamW {
    beta1: f32,
    beta2: f32,
    epsilon: f32,
    weight_decay: f32,
    /// First moment (`None` before the first step).
    pub exp_avg: Option<Tensor<1>>,
    /// Second moment.
    pub exp_avg_sq: Option<Tensor<1>>,
    /// Updates applied so far.
    pub time: u64,
}

impl FlatAdamW {
    /// Fresh state for `settings` (converted to f32, as Burn's config stores them).
    pub fn new(settings: &AdamWSettings) -> Self {
        Self {
            beta1: settings.beta1 as f32,
            beta2: settings.beta2 as f32,
            epsilon: settings.epsilon as f32,
            weight_decay: settings.weight_decay as f32,
            exp_avg: None,
            exp_avg_sq: None,
            time: 0,
        }
    }

    /// One update of `param` by `grad` at learning rate `lr`; returns the new parameters.
    pub fn step(&mut self, lr: f64, param: Tensor<1>, grad: Tensor<1>) -> Tensor<1> {
        let f1 = 1.0 - self.beta1;
        let f2 = 1.0 - self.beta2;
        let (m, v) = match (self.exp_avg.take(), self.exp_avg_sq.take()) {
            (Some(m), Some(v)) => (
                m.mul_scalar(self.beta1).add(grad.clone().mul_scalar(f1)),
                v.mul_scalar(self.beta2).add(grad.square().mul_scalar(f2)),
            ),
            _ => (grad.clone().mul_scalar(f1), grad.square().mul_scalar(f2)),
        };
        self.time += 1;
        let t = self.time as i32;
        let m_hat = m.clone().div_scalar(1f32 - self.beta1.powi(t));
        let v_hat = v.clone().div_scalar(1f32 - self.beta2.powi(t));
        let delta = m_hat.div(v_hat.sqrt().add_scalar(self.epsilon));
        self.exp_avg = Some(m);
        self.exp_avg_sq = Some(v);
        let decay = lr * f64::from(self.weight_decay);
        let decayed = if decay == 0.0 {
            param
        } else {
            param.mul_scalar(1.0 - decay)
        };
        decayed - delta.mul_scalar(lr)
    }
}

/// The whole-model moments gathered for a checkpoint (rank 0 only).
#[derive(Debug, Clone, PartialEq)]
pub struct ZeroState {
    /// AdamW's time step.
    pub step_count: u64,
    /// First moment over the flat parameter vector.
    pub exp_avg: Vec<f32>,
    /// Second moment.
    pub exp_avg_sq: Vec<f32>,
}

/// The sharded state could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum ZeroError {
    /// File system error (names the path).
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The file is not a valid state for this model.
    #[error("sharded optimizer state `{path}`: {message}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

impl ZeroState {
    /// Write [`ZERO_FILE`]'s format to `path` (not fsynced: the checkpoint writer syncs every
    /// file before the marker).
    pub fn write(&self, path: &Path) -> Result<(), ZeroError> {
        let err = |message: String| ZeroError::Format {
            path: path.to_path_buf(),
            message,
        };
        let bytes = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
        let (m, v) = (bytes(&self.exp_avg), bytes(&self.exp_avg_sq));
        let views = [
            ("exp_avg", &m, self.exp_avg.len()),
            ("exp_avg_sq", &v, self.exp_avg_sq.len()),
        ]
        .into_iter()
        .map(|(name, b, n)| {
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![n], b)
                .map(|view| (name.to_string(), view))
                .map_err(|e| err(e.to_string()))
        })
        .collect::<Result<Vec<_>, _>>()?;
        let metadata: HashMap<String, String> = [
            ("format", "sftctl-zero1".to_string()),
            ("version", "1".to_string()),
            ("step_count", self.step_count.to_string()),
            ("params", self.exp_avg.len().to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let encoded =
            safetensors::serialize(views, Some(metadata)).map_err(|e| err(e.to_string()))?;
        fs_err::write(path, encoded)?;
        Ok(())
    }

    /// Read `range` of the moments from a file written by [`ZeroState::write`] for a flat
    /// vector of `total` elements.
    pub fn read_range(path: &Path, total: usize, range: Range<usize>) -> Result<Self, ZeroError> {
        let err = |message: String| ZeroError::Format {
            path: path.to_path_buf(),
            message,
        };
        let bytes = fs_err::read(path)?;
        let (_, header) =
            safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| err(e.to_string()))?;
        let meta = header.metadata().clone().unwrap_or_default();
        if meta.get("format").map(String::as_str) != Some("sftctl-zero1") {
            return Err(err("no `format = sftctl-zero1` in its metadata".into()));
        }
        let step_count = meta
            .get("step_count")
            .and_then(|s| s.parse::<u64>().ok())
            .ok_or_else(|| err("no numeric `step_count` in its metadata".into()))?;
        let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| err(e.to_string()))?;
        let read = |name: &str| -> Result<Vec<f32>, ZeroError> {
            let t = st.tensor(name).map_err(|e| err(format!("`{name}`: {e}")))?;
            if t.dtype() != safetensors::Dtype::F32 || t.shape() != [total].as_slice() {
                return Err(err(format!(
                    "`{name}` is {:?} {:?}, expected F32 [{total}] (the model's parameter count)",
                    t.dtype(),
                    t.shape()
                )));
            }
            Ok(t.data()[range.start * 4..range.end * 4]
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect())
        };
        Ok(Self {
            step_count,
            exp_avg: read("exp_avg")?,
            exp_avg_sq: read("exp_avg_sq")?,
        })
    }
}

/// ZeRO-1 AdamW for one rank: the fp32 master weights and moments of this rank's shard.
pub struct ZeroAdamW {
    layout: ShardLayout,
    adamw: FlatAdamW,
    settings: AdamWSettings,
    device: Device,
    master: Tensor<1>,
    /// The summed (unclipped) gradient of this rank's shard, between
    /// [`ZeroAdamW::reduce_scatter`] and [`ZeroAdamW::apply`].
    grad: Option<GradShard>,
}

/// Where the reduced gradient shard lives: on the device when there is one rank (nothing to
/// exchange, so the flat gradient, the update and the write-back never leave the device), in
/// host memory after a reduce-scatter over several ranks.
enum GradShard {
    Device(Box<Tensor<1>>),
    Host(Vec<f32>),
}

impl std::fmt::Debug for ZeroAdamW {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ZeroAdamW")
            .field("layout", &self.layout)
            .field("time", &self.adamw.time)
            .finish()
    }
}

/// Every float parameter of `module` flattened in visiting order, as f32 on the host.
fn flat_params<M: Module>(module: &M) -> (Vec<f32>, Option<Device>) {
    struct Collect {
        flat: Vec<f32>,
        device: Option<Device>,
    }
    impl ModuleVisitor for Collect {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let value = param.val();
            self.device.get_or_insert_with(|| value.device().inner());
            self.flat.extend(value.into_data().iter::<f32>());
        }
    }
    let mut c = Collect {
        flat: Vec::new(),
        device: None,
    };
    module.visit(&mut c);
    (c.flat, c.device)
}

impl ZeroAdamW {
    /// The shard of `rank` among `world` ranks, its master weights taken from `model`.
    pub fn new<M: Module>(model: &M, settings: AdamWSettings, rank: usize, world: usize) -> Self {
        let (flat, device) = flat_params(model);
        let device = device.unwrap_or_default();
        let layout = ShardLayout::new(flat.len(), world, rank);
        let master = Self::shard_tensor(&layout, &flat, &device);
        Self {
            layout,
            adamw: FlatAdamW::new(&settings),
            settings,
            device,
            master,
            grad: None,
        }
    }

    fn shard_tensor(layout: &ShardLayout, flat: &[f32], device: &Device) -> Tensor<1> {
        let start = layout.rank * layout.shard;
        let values: Vec<f32> = (start..start + layout.shard)
            .map(|i| ShardLayout::padded(flat, i))
            .collect();
        Tensor::from_data(TensorData::new(values, [layout.shard]), device)
    }

    /// Where this rank's shard lies.
    pub fn layout(&self) -> ShardLayout {
        self.layout
    }

    /// AdamW updates applied.
    pub fn time(&self) -> u64 {
        self.adamw.time
    }

    /// Bytes of optimizer state this rank holds: fp32 master weights, first and second moment
    /// of its shard.
    pub fn state_bytes(&self) -> usize {
        let moments = usize::from(self.adamw.exp_avg.is_some()) * 2;
        (1 + moments) * self.layout.shard * 4
    }

    /// Sum `grads` over the ranks so that this rank holds the gradient of its shard; returns the
    /// global L2 norm (sums of squares in f64, summed over ranks). A parameter without a
    /// gradient contributes zeros.
    pub fn reduce_scatter<M: Module>(
        &mut self,
        model: &M,
        grads: GradientsParams,
        collective: &mut dyn Collective,
    ) -> Result<f64, CollectiveError> {
        if self.layout.world == 1 {
            let flat = flat_grad_tensor(model, grads, self.layout.shard, &self.device);
            let norm = square_sum(&flat).sqrt();
            self.grad = Some(GradShard::Device(Box::new(flat)));
            return Ok(norm);
        }
        struct Flatten {
            grads: GradientsParams,
            flat: Vec<f32>,
        }
        impl ModuleVisitor for Flatten {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
                let n = param.lazy_shape().num_elements();
                match self.grads.remove::<D>(param.id) {
                    Some(g) => self.flat.extend(g.into_data().iter::<f32>()),
                    None => self.flat.resize(self.flat.len() + n, 0.0),
                }
            }
        }
        let mut flatten = Flatten {
            grads,
            flat: Vec::with_capacity(self.layout.total),
        };
        model.visit(&mut flatten);
        let flat = flatten.flat;
        let l = self.layout;
        let mut shard = vec![0.0f32; l.shard];
        for piece in l.pieces() {
            let len = piece.len();
            let mut send = Vec::with_capacity(len * l.world);
            for q in 0..l.world {
                let base = q * l.shard;
                send.extend((piece.start..piece.end).map(|i| ShardLayout::padded(&flat, base + i)));
            }
            collective.reduce_scatter_sum_f32(&send, &mut shard[piece])?;
        }
        drop(flat);
        let local: f64 = shard.iter().map(|&g| f64::from(g) * f64::from(g)).sum();
        let total = collective.all_reduce_sum_f64(local)?;
        self.grad = Some(GradShard::Host(shard));
        Ok(total.sqrt())
    }

    /// Scale the reduced gradient by `clip` (when given), step AdamW on the shard at `lr`,
    /// all-gather the shards and write them into `model`'s parameters (cast to each
    /// parameter's dtype).
    pub fn apply<M: Module>(
        &mut self,
        model: M,
        lr: f64,
        clip: Option<f64>,
        collective: &mut dyn Collective,
    ) -> Result<M, CollectiveError> {
        let Some(grad) = self.grad.take() else {
            return Ok(model);
        };
        let l = self.layout;
        let mut grad = match grad {
            GradShard::Device(grad) => *grad,
            GradShard::Host(grad) => {
                Tensor::<1>::from_data(TensorData::new(grad, [l.shard]), &self.device)
            }
        };
        if let Some(factor) = clip {
            grad = grad.mul_scalar(factor);
        }
        // The padding's gradient is zero, and so stays its update without weight decay; its
        // value never leaves this rank (the gather is cut to the parameters).
        self.master = self.adamw.step(lr, self.master.clone(), grad);
        self.write_master(model, collective)
    }

    /// `model` with every rank's master shard written into its parameters (cast to each
    /// parameter's dtype): with one rank straight from the device tensor, else all-gathered
    /// through host memory. Every rank must call it.
    fn write_master<M: Module>(
        &self,
        model: M,
        collective: &mut dyn Collective,
    ) -> Result<M, CollectiveError> {
        if self.layout.world == 1 {
            return Ok(write_params(model, Flat::Device(&self.master)));
        }
        let mine: Vec<f32> = self
            .master
            .clone()
            .into_data()
            .try_into_vec::<f32>()
            .map_err(|e| CollectiveError::TensorData {
                op: "all_gather_f32",
                message: format!("{e:?}"),
            })?;
        let flat = self.gather(&mine, collective)?;
        Ok(write_params(model, Flat::Host(&flat)))
    }

    /// Every rank's shard of `mine` all-gathered into the flat vector (without padding).
    fn gather(
        &self,
        mine: &[f32],
        collective: &mut dyn Collective,
    ) -> Result<Vec<f32>, CollectiveError> {
        let l = self.layout;
        let mut flat = vec![0.0f32; l.shard * l.world];
        let mut gathered = Vec::new();
        for piece in l.pieces() {
            let len = piece.len();
            gathered.resize(len * l.world, 0.0);
            collective.all_gather_f32(&mine[piece.clone()], &mut gathered)?;
            for q in 0..l.world {
                let base = q * l.shard + piece.start;
                flat[base..base + len].copy_from_slice(&gathered[q * len..(q + 1) * len]);
            }
        }
        flat.truncate(l.total);
        Ok(flat)
    }

    /// `model` with the fp32 master weights (all ranks' shards, gathered) in its parameters,
    /// cast to f32: what a mixed-precision checkpoint stores, so that a resume continues from
    /// the master weights and not from their bf16 copy. Every rank must call it.
    pub fn master_model<M: Module>(
        &self,
        model: M,
        collective: &mut dyn Collective,
    ) -> Result<M, CollectiveError> {
        let model = crate::train::precision::cast_params(model, DType::F32);
        self.write_master(model, collective)
    }

    /// The whole moments on rank 0 (`None` elsewhere), gathered piece by piece: every rank
    /// takes part, only rank 0 keeps more than one bucket.
    pub fn gather_state(
        &self,
        collective: &mut dyn Collective,
    ) -> Result<Option<ZeroState>, CollectiveError> {
        let l = self.layout;
        let keep = collective.rank() == 0;
        let host = |t: &Option<Tensor<1>>| -> Result<Vec<f32>, CollectiveError> {
            match t {
                Some(t) => t.clone().into_data().try_into_vec::<f32>().map_err(|e| {
                    CollectiveError::TensorData {
                        op: "all_gather_f32",
                        message: format!("{e:?}"),
                    }
                }),
                None => Ok(vec![0.0; l.shard]),
            }
        };
        let mut out = Vec::new();
        for mine in [host(&self.adamw.exp_avg)?, host(&self.adamw.exp_avg_sq)?] {
            let mut full = if keep {
                vec![0.0f32; l.shard * l.world]
            } else {
                Vec::new()
            };
            let mut gathered = Vec::new();
            for piece in l.pieces() {
                let len = piece.len();
                gathered.resize(len * l.world, 0.0);
                collective.all_gather_f32(&mine[piece.clone()], &mut gathered)?;
                if keep {
                    for q in 0..l.world {
                        let base = q * l.shard + piece.start;
                        full[base..base + len].copy_from_slice(&gathered[q * len..(q + 1) * len]);
                    }
                }
            }
            full.truncate(l.total);
            out.push(full);
        }
        let exp_avg_sq = out.pop().unwrap_or_default();
        let exp_avg = out.pop().unwrap_or_default();
        Ok(keep.then_some(ZeroState {
            step_count: self.adamw.time,
            exp_avg,
            exp_avg_sq,
        }))
    }

    /// Resume: master weights from `model` (the checkpoint's weights), moments and time step
    /// from this rank's range of [`ZERO_FILE`] in `dir` (written at any world size).
    pub fn load<M: Module>(&mut self, model: &M, dir: &Path) -> Result<(), ZeroError> {
        let (flat, _) = flat_params(model);
        let path = dir.join(ZERO_FILE);
        if flat.len() != self.layout.total {
            return Err(ZeroError::Format {
                path,
                message: format!(
                    "the model has {} parameters, the optimizer was built for {}",
                    flat.len(),
                    self.layout.total
                ),
            });
        }
        if !path.exists() && dir.join("optimizer.bpk").exists() {
            return Err(ZeroError::Format {
                path,
                message: "missing: this checkpoint's optimizer state is not sharded \
                          (`optimizer.bpk`)\nhint: resume with `optimizer_sharding = \"none\"` \
                          in `[train]`"
                    .into(),
            });
        }
        let state = ZeroState::read_range(&path, self.layout.total, self.layout.range())?;
        self.master = Self::shard_tensor(&self.layout, &flat, &self.device);
        let mut fresh = FlatAdamW::new(&self.settings);
        if state.step_count > 0 {
            let pad = |mut v: Vec<f32>| {
                v.resize(self.layout.shard, 0.0);
                Tensor::<1>::from_data(TensorData::new(v, [self.layout.shard]), &self.device)
            };
            fresh.exp_avg = Some(pad(state.exp_avg));
            fresh.exp_avg_sq = Some(pad(state.exp_avg_sq));
            fresh.time = state.step_count;
        }
        self.adamw = fresh;
        self.grad = None;
        Ok(())
    }
}

/// The flat f32 parameter vector, in host memory or as a tensor on the device (at least as long
/// as the parameters; anything after them is padding).
#[derive(Clone, Copy)]
enum Flat<'a> {
    Host(&'a [f32]),
    Device(&'a Tensor<1>),
}

/// The gradients of `model`'s float parameters (visiting order) as one f32 tensor of `len`
/// elements on `device` (zeros for a parameter without a gradient and for the padding after the
/// last one), built there without a copy to the host.
fn flat_grad_tensor<M: Module>(
    model: &M,
    grads: GradientsParams,
    len: usize,
    device: &Device,
) -> Tensor<1> {
    struct Flatten<'a> {
        grads: GradientsParams,
        parts: Vec<Tensor<1>>,
        device: &'a Device,
    }
    impl ModuleVisitor for Flatten<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let n = param.lazy_shape().num_elements();
            self.parts.push(match self.grads.remove::<D>(param.id) {
                Some(g) => g.reshape([n]).cast(DType::F32),
                None => Tensor::zeros([n], self.device),
            });
        }
    }
    let mut flatten = Flatten {
        grads,
        parts: Vec::new(),
        device,
    };
    model.visit(&mut flatten);
    let mut parts = flatten.parts;
    let n: usize = parts.iter().map(|p| p.dims()[0]).sum();
    if n < len {
        parts.push(Tensor::zeros([len - n], device));
    }
    Tensor::cat(parts, 0)
}

/// Sum of squares of `flat` as the unsharded norm computes it: f32 partial sums of rows of
/// [`NORM_ROW`] elements on the device, added in f64 on the host.
fn square_sum(flat: &Tensor<1>) -> f64 {
    let n = flat.dims()[0];
    if n == 0 {
        return 0.0;
    }
    let rows = n.div_ceil(NORM_ROW);
    let squares = flat.clone().square();
    let squares = if rows * NORM_ROW > n {
        Tensor::cat(
            vec![
                squares,
                Tensor::zeros([rows * NORM_ROW - n], &flat.device()),
            ],
            0,
        )
    } else {
        squares
    };
    let sums = squares.reshape([rows, NORM_ROW]).sum_dim(1).into_data();
    sums.iter::<f32>().map(f64::from).sum()
}

/// Elements per f32 partial sum of [`square_sum`].
const NORM_ROW: usize = 4096;

/// Write consecutive slices of `flat` into `model`'s float parameters (visiting order), each
/// cast to the parameter's dtype and given back its autodiff settings; parameters that do not
/// require a gradient keep their value.
fn write_params<M: Module>(model: M, flat: Flat<'_>) -> M {
    struct Write<'a> {
        flat: Flat<'a>,
        offset: usize,
    }
    impl ModuleMapper for Write<'_> {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            let (id, tensor, mapper) = param.consume();
            let shape = tensor.shape();
            let n = shape.num_elements();
            let range = self.offset..self.offset + n;
            self.offset += n;
            // Frozen parameters get no gradient, and Burn's AdamW leaves them alone too.
            if !tensor.is_require_grad() {
                return Param::from_mapped_value(id, tensor, mapper);
            }
            let device = tensor.device().inner();
            let mut updated = match self.flat {
                Flat::Host(flat) => {
                    Tensor::<D>::from_data(TensorData::new(flat[range].to_vec(), shape), &device)
                }
                Flat::Device(flat) => flat.clone().slice(range).reshape(shape),
            };
            let dtype: DType = tensor.dtype();
            if updated.dtype() != dtype {
                updated = updated.cast(dtype);
            }
            let mut value = updated;
            if tensor.is_autodiff() {
                value = Tensor::from_inner(value);
                if let Some(strategy) = tensor.gradient_checkpointing_strategy() {
                    value = value.with_gradient_checkpointing_strategy(strategy);
                }
            }
            if tensor.is_require_grad() {
                value = value.require_grad();
            }
            Param::from_mapped_value(id, value, mapper)
        }
    }
    model.map(&mut Write { flat, offset: 0 })
}
