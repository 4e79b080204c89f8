//! The `egress` binary: CLI parsing and wiring only. (Skeleton: being written.)

fn main() {}
