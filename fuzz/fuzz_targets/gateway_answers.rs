//! What oclagl reads of an OpenClaw gateway's answers, for each client mode:
//!
//! - internal: the fork's agent-run answer (`gateway::internal::answer`,
//!   with the transcript's messages and their content parts);
//! - openai: a chat completion (`gateway::openai::completion`);
//! - cli: what `openclaw agent --json` printed (`gateway::cli::output_result`,
//!   then `agent_result`);
//! - ws: a sequence of WebSocket text frames, one per line, read one after
//!   the other as the client's loop does (`gateway::ws::read_frame`: the
//!   challenge, the `connect` and `agent` responses and their errors, then
//!   `agent_result`);
//! - and an HTTP error answer of the internal and openai modes
//!   (`gateway::status_error`: the status, `Retry-After`, the JSON error).
//!
//! The first input byte picks the reader (modulo 5); the rest is the answer
//! (for `status_error`, an HTTP answer as `common/http_answer.rs` lays it
//! out). Every error is also formatted, as it is logged and recorded.
//!
//! What it looks for: panics and overflows on any answer (durations, token
//! counts and indexes the gateway sent).
#![no_main]

#[path = "../common/http_answer.rs"]
mod http_answer;

use http::HeaderMap;
use libfuzzer_sys::fuzz_target;
use oclagl::gateway::ws::{read_frame, Step};
use oclagl::gateway::{cli, internal, openai, status_error, GatewayError, Reply};

fn check(result: Result<Reply, GatewayError>) {
    if let Err(e) = result {
        let _ = e.to_string();
        let _ = (e.retryable(), e.retry_after());
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    match mode % 5 {
        0 => check(internal::answer(&text)),
        1 => check(openai::completion(&text)),
        2 => {
            if let Some(result) = cli::output_result(rest) {
                check(result);
            }
        }
        3 => {
            let mut connected = false;
            for frame in text.split('\n') {
                match read_frame(frame, connected) {
                    Ok(Step::Connect | Step::Wait) => {}
                    Ok(Step::Agent) => connected = true,
                    Ok(Step::Done(result)) => return check(result),
                    Err(e) => return check(Err(e)),
                }
            }
        }
        _ => {
            let Some(a) = http_answer::split(rest) else {
                return;
            };
            let mut headers = HeaderMap::new();
            if let Some(v) = a.retry_after {
                headers.insert(http::header::RETRY_AFTER, v);
            }
            let body = String::from_utf8_lossy(a.body);
            check(Err(status_error(a.status, &headers, &body, "TOKEN")));
        }
    }
});
