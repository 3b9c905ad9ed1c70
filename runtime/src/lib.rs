//! The runtime that runs inside an allocation: the Llama-family model in Burn, its weights, and (later) the training loop.

pub mod backend;
pub mod collective;
pub mod config;
pub mod model;
pub mod tiny;
pub mod train;
pub mod weights;
