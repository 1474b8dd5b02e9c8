//! oclagl: a sidecar that turns OpenClaw agent runs into Agent Lightning
//! rollouts and training data, built on OpenTelemetry.
//!
//! The modules follow the data: [`ingest`] receives OTLP, [`store`] makes it
//! durable, [`agl`] groups spans into rollouts and writes AGL trace files, and
//! [`serve`] wires them into the `oclagl serve` sidecar. On the gateway side,
//! [`gateway`] holds the clients for the four ways to run an agent turn,
//! [`rollout`] records one turn as OTel spans (and rewards), and [`collect`]
//! runs many. On the read side, [`export`] builds datasets and [`inspect`]
//! lists and shows rollouts.

pub mod agl;
pub mod args;
pub mod bridge;
pub mod collect;
pub mod conversation;
pub mod export;
pub mod forward;
pub mod gateway;
pub mod ingest;
pub mod inspect;
pub mod local;
pub mod reward;
pub mod reward_client;
pub mod rollout;
pub mod semconv;
pub mod serve;
pub mod store;
pub mod util;
