//! ray-hpc: the real Ray on HPC batch schedulers.
//!
//! Layers, each using only those below it: `cli` → `agent` → (`ray`, `scheduler`, `discovery`,
//! `registry`, `config`) → `proto`.

pub mod agent;
pub mod autoscaler;
pub mod cli;
pub mod config;
pub mod discovery;
pub mod doctor;
pub mod metrics;
pub mod proto;
pub mod ray;
pub mod registry;
pub mod scheduler;
pub mod status;
