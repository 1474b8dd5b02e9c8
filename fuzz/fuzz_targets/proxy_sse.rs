//! The LLM proxy's reading of model calls (`ingest::proxy::openai`): a
//! response body as JSON or as a server-sent event stream reassembled into
//! one answer (chat completion chunks, Responses API events), and a request
//! body, for both APIs.
//!
//! The first input byte picks the API (bit 0) and whether the response is an
//! event stream (bit 1); the rest is the body. What it looks for: panics,
//! overflows and memory errors on any input (the readers return `Malformed`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use oclagl::ingest::proxy::openai::{model_of, request, response, Api};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, body)) = data.split_first() else {
        return;
    };
    let api = if mode & 1 == 0 {
        Api::Chat
    } else {
        Api::Responses
    };
    let _ = response(api, body, mode & 2 != 0);
    let _ = request(api, body);
    let _ = model_of(body);
});
