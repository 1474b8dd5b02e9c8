//! oclagl: a sidecar that turns OpenClaw agent runs into Agent Lightning
//! rollouts and training data, built on OpenTelemetry.
//!
//! The modules follow the data: [`ingest`] receives OTLP, [`store`] makes it
//! durable, [`agl`] groups spans into rollouts and writes AGL trace files, and
//! [`serve`] wires them into the `oclagl serve` sidecar.

pub mod agl;
pub mod args;
pub mod ingest;
pub mod serve;
pub mod store;
