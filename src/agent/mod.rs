//! The agents: one per node. The head agent runs the cluster; worker agents run one raylet each.

pub mod control;
pub mod head;
pub mod node;
pub mod signals;
pub mod supervisor;
pub mod watchdog;
pub mod worker;
