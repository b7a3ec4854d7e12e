//! Ray's Jobs REST API on the dashboard (being written).
