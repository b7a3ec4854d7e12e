//! The head agent's Prometheus metrics and the file_sd target list (being written).
