//! The one place that turns a backend name (`flex`, `tch-cpu`, `cuda:N`) into a Burn `Device`.
//! Everything else takes a `Device` and never names a backend. LibTorch is deprecated in Burn
//! 0.22 (burn 0.23 points to burn-cuda), which is allowed here only.
#![allow(deprecated)]

use std::fmt;
use std::str::FromStr;

use burn::tensor::Device;

/// A backend choice, as given on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendChoice {
    /// Pure-Rust CPU (feature `flex`, the default).
    Flex,
    /// libtorch on the CPU (feature `tch`).
    TchCpu,
    /// libtorch on CUDA device N (feature `tch`).
    TchCuda(usize),
}

/// A backend name that cannot be used by this build.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("unknown backend `{0}` (expected `flex`, `tch-cpu` or `cuda:N`)")]
    Unknown(String),
    #[error("backend `{name}` is not compiled in; rebuild with `--features {feature}`")]
    NotCompiled { name: String, feature: &'static str },
}

impl FromStr for BackendChoice {
    type Err = BackendError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "flex" => Ok(BackendChoice::Flex),
            "tch-cpu" | "tch" | "libtorch" => Ok(BackendChoice::TchCpu),
            _ => match s.strip_prefix("cuda:").map(str::parse) {
                Some(Ok(n)) => Ok(BackendChoice::TchCuda(n)),
                _ => Err(BackendError::Unknown(s.to_string())),
            },
        }
    }
}

impl fmt::Display for BackendChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BackendChoice::Flex => write!(f, "flex"),
            BackendChoice::TchCpu => write!(f, "tch-cpu"),
            BackendChoice::TchCuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

impl BackendChoice {
    /// The backends this build can run, CPU first.
    pub fn compiled() -> Vec<BackendChoice> {
        let mut v = Vec::new();
        if cfg!(feature = "flex") {
            v.push(BackendChoice::Flex);
        }
        if cfg!(feature = "tch") {
            v.push(BackendChoice::TchCpu);
        }
        v
    }

    /// The plain (inference) device; call `.autodiff()` on it to train.
    pub fn device(self) -> Result<Device, BackendError> {
        match self {
            #[cfg(feature = "flex")]
            BackendChoice::Flex => Ok(Device::flex()),
            #[cfg(feature = "tch")]
            BackendChoice::TchCpu => Ok(Device::libtorch()),
            #[cfg(feature = "tch")]
            BackendChoice::TchCuda(n) => Ok(Device::libtorch_cuda(n)),
            #[allow(unreachable_patterns)]
            other => Err(BackendError::NotCompiled {
                name: other.to_string(),
                feature: if other == BackendChoice::Flex {
                    "flex"
                } else {
                    "tch"
                },
            }),
        }
    }
}
