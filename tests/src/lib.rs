//! Helpers shared by the cross-component tests and benchmarks.
