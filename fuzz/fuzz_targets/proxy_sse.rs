//! The LLM proxy's recording of model calls (`ingest::proxy`): a response
//! body as JSON or as a server-sent event stream reassembled into one answer
//! (chat completion chunks, Responses API events), a request body, for both
//! APIs, the whole call turned into its span (`span::Call::record`), and
//! that span's bodies read again into AGL's attributes as its trace file
//! gets them (`agl::call::expand`).
//!
//! The first input byte picks the API (bit 0), whether the response is an
//! event stream (bit 1), and whether the whole call is recorded with the
//! input as both its bodies (bit 2); the rest is the body. What it looks for:
//! panics, overflows, memory errors, and allocations an upstream can size
//! (an index, a count): the readers return `Malformed` instead, within a
//! parse budget as small as a tight `--llm-record-max` gives.
#![no_main]

use libfuzzer_sys::fuzz_target;
use oclagl::conversation::openai::{model_of, request, response, Api, PARSE_BUDGET_FACTOR};
use oclagl::agl::call::expand;
use oclagl::agl::span::flatten_attributes;
use oclagl::ingest::proxy::span::{Call, Captured, End};
use oclagl::semconv::llm_proxy::UNREADABLE;

/// The parse budget of a 256 KiB recording cap.
const BUDGET: usize = PARSE_BUDGET_FACTOR * (256 << 10);

fuzz_target!(|data: &[u8]| {
    let Some((&mode, body)) = data.split_first() else {
        return;
    };
    let api = if mode & 1 == 0 {
        Api::Chat
    } else {
        Api::Responses
    };
    let event_stream = mode & 2 != 0;
    if mode & 4 == 0 {
        let _ = response(api, body, event_stream, BUDGET);
        let _ = request(api, body, BUDGET);
        let _ = model_of(body);
        return;
    }
    let captured = Captured {
        bytes: body.to_vec(),
        truncated: false,
    };
    let call = Call {
        status: Some(200),
        event_stream,
        request: captured.clone(),
        response: captured,
        end: End::Complete,
        path: match api {
            Api::Chat => "/v1/chat/completions",
            Api::Responses => "/v1/responses",
        }
        .into(),
        ..Call::begin(api, [1; 16], [2; 8], 1)
    };
    let (export, unreadable) = call.record(BUDGET);
    let span = &export.resource_spans[0].scope_spans[0].spans[0];
    assert_eq!(
        span.attributes.iter().any(|kv| kv.key == UNREADABLE),
        unreadable.is_some()
    );
    // What the proxy could read, the trace file reads again.
    let mut attrs = flatten_attributes(&span.attributes);
    expand(&mut attrs);
    if unreadable.is_none() && request(api, body, BUDGET).is_ok_and(|r| !r.messages.is_empty()) {
        assert!(attrs.contains_key("gen_ai.prompt.0.role"));
    }
});
