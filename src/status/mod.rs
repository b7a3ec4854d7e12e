//! `ray-hpc status`: one model of a cluster (`view`), built from the registry record, the
//! scheduler and the GCS (`gather`), rendered as text or JSON (`render`).

pub mod gather;
pub mod reach;
pub mod render;
pub mod view;

pub use view::{ClusterView, ListView, SCHEMA};
