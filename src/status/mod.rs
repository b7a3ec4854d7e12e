//! The one model of a cluster that `status` renders as text and JSON (being written).
