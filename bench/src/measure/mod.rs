//! One function per measurement of `cargo xtask bench`; each returns its part of
//! [`crate::report::Results`].

pub mod allocs;
pub mod rate;
pub mod restart;
pub mod rotation;
pub mod syscalls;
pub mod throughput;
