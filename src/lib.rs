//! oclagl: a sidecar that turns OpenClaw agent runs into Agent Lightning
//! rollouts and training data, built on OpenTelemetry.
//!
//! The modules follow the data: [`ingest`] receives OTLP, [`store`] makes it
//! durable, [`agl`] groups spans into rollouts and writes AGL trace files, and
//! [`serve`] wires them into the `oclagl serve` sidecar. On the gateway side,
//! [`gateway`] holds the clients for the four ways to run an agent turn,
//! [`rollout`] records one turn as OTel spans (and rewards), [`local`] runs
//! the sidecar in the process when no OTLP endpoint is configured, and
//! [`collect`] runs many turns; [`import`] turns OpenClaw's own recorded
//! runs into rollouts. On the read side, [`export`] builds datasets
//! and [`inspect`] lists and shows rollouts. Underneath lies what every stage
//! shares: the [`conversation`] model and the readers of each span
//! convention, the [`reward`] shape, the well-known span and attribute names
//! ([`semconv`]) and small helpers ([`util`]).
//!
//! # Layers
//!
//! The modules stand in layers, one a line, the commands on top and the
//! shared vocabulary at the bottom. A module imports only modules of the
//! layers below its own line, never one of its own line or above, so no
//! import cycle ties two modules together; `tests/layers.rs` reads this list
//! and fails on any `crate::` path that breaks it.
//!
//! ```text
//! bridge collect import inspect reward_client   # the commands
//! local                                  # the sidecar in this process
//! serve                                  # the sidecar
//! export rollout                         # datasets; recording a turn
//! forward ingest                         # spans in and out
//! agl                                    # rollouts and trace files
//! args gateway store                     # the foundations
//! reward                                 # the reward shape
//! conversation semconv util              # the shared vocabulary, helpers
//! ```

#![warn(missing_docs)]

pub mod agl;
pub mod args;
pub mod bridge;
pub mod collect;
pub mod conversation;
pub mod export;
pub mod forward;
pub mod gateway;
pub mod import;
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
