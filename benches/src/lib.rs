//! Load generator and micro-benchmarks for walship (see benches/README.md).
