//! Placeholder, replaced by the registrations benchmark.
fn main() {}
