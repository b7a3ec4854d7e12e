//! Checks of the practices large Ray deployments depend on (being written).
