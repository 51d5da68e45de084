//! Benchmarks of the event stream (placeholder)
