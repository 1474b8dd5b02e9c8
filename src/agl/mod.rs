//! The AGL view of stored spans: OTLP spans as Agent Lightning v0.x `Span`
//! JSON, grouped into rollouts the way AGL's store groups them, and written as
//! the seed integration's trace files.

pub mod call;
pub mod index;
pub mod span;
pub mod summary;
pub mod trace_file;
pub mod view;
