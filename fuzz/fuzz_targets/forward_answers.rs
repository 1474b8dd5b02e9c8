//! What oclagl reads of a forward destination's answers:
//!
//! - OTLP/HTTP (`forward::http_answer`): the status, `Retry-After`, and the
//!   `ExportTraceServiceResponse` partial success of a 2xx body;
//! - OTLP/gRPC (`forward::grpc_answer`): the answer's message as tonic's
//!   prost decoder reads it, or the status tonic reads from the trailers
//!   (`Status::from_header_map`: `grpc-status`, `grpc-message`, and
//!   `grpc-status-details-bin` with the `RetryInfo` oclagl looks for);
//! - an AGL store (`forward::agl::store_answer`, then `created_ids` on what
//!   a 2xx carried): the status and JSON of an answer to `POST /v1/agl/…`.
//!
//! Each wait a destination asked for then goes through `forward::backoff`,
//! as the forwarder takes it before the next try.
//!
//! The first input byte picks the kind (bits 0-1), for gRPC trailers whether
//! the target base64-encodes the status details itself (bit 2, so that the
//! protobuf decoders behind it see input), for the AGL store the path (bits
//! 2-3), and the retry number (bits 4-7). The rest: an HTTP answer as
//! `common/http_answer.rs` lays it out, a gRPC message, or the trailers as
//! `[code][n][n bytes of grpc-message][grpc-status-details-bin]`.
//!
//! What it looks for: panics and overflows on any answer (a delay, a count
//! or a length the server sent), a wait longer than the forwarder's cap, and
//! reasons (which are logged) longer than 300 characters of the body.
#![no_main]

#[path = "../common/http_answer.rs"]
mod http_answer;

use std::time::Duration;

use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD_NO_PAD};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use oclagl::forward::agl::{created_ids, store_answer, Failure};
use oclagl::forward::{backoff, grpc_answer, Outcome};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use prost::Message;
use tonic::Status;

const AGL_PATHS: [&str; 4] = [
    "/rollouts",
    "/spans",
    "/rollouts/ro-7f3c2a1b9e4d",
    "/rollouts/ro-7f3c2a1b9e4d/attempts/at-5d8e2f1a",
];
/// How tonic decodes `-bin` values.
const TONIC_BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);
/// The longest wait the forwarder honours (`RETRY_AFTER_MAX`).
const WAIT_MAX: Duration = Duration::from_secs(600);
/// "HTTP 599 <reason>: " and the like, before the body's 300 characters.
const REASON_MAX: usize = 400;

fn outcome(outcome: Outcome, attempt: u32) {
    let wait = match outcome {
        Outcome::Delivered { .. } => return,
        Outcome::Retry { after, reason } => {
            assert!(reason.chars().count() <= REASON_MAX, "{reason:?}");
            backoff(attempt, after)
        }
        Outcome::Refused { reason } => {
            assert!(reason.chars().count() <= REASON_MAX, "{reason:?}");
            return;
        }
    };
    assert!(wait <= WAIT_MAX, "{wait:?}");
}

/// Trailers from `[code][n][n bytes of grpc-message][details]`.
fn trailers(data: &[u8], encode_details: bool) -> Option<HeaderMap> {
    let (&[code, n], rest) = data.split_first_chunk::<2>()?;
    let (message, details) = rest.split_at_checked(n as usize)?;
    let mut map = HeaderMap::new();
    map.insert("grpc-status", HeaderValue::from(u16::from(code)));
    if let Ok(v) = HeaderValue::from_bytes(message) {
        map.insert("grpc-message", v);
    }
    let details = if encode_details {
        HeaderValue::from_str(&STANDARD_NO_PAD.encode(details)).ok()
    } else if TONIC_BASE64.decode(details).is_ok() {
        HeaderValue::from_bytes(details).ok()
    } else {
        // tonic panics on a value that is not base64 (grpc/grpc-rust#2618).
        // `Sender::send` contains that panic (its test
        // `an_answer_tonic_cannot_read_is_retried`); here libFuzzer would
        // stop at it, so such a value is left out.
        None
    };
    if let Some(v) = details {
        map.insert("grpc-status-details-bin", v);
    }
    Some(map)
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let attempt = u32::from(mode >> 4);
    match mode & 3 {
        0 => {
            let Some(a) = http_answer::split(rest) else {
                return;
            };
            outcome(
                oclagl::forward::http_answer(a.status, a.retry_after.as_ref(), a.body),
                attempt,
            );
        }
        1 => {
            // tonic's prost decoder, and its status for a message that does
            // not decode.
            let answer = ExportTraceServiceResponse::decode(rest)
                .map_err(|e| Status::internal(e.to_string()));
            outcome(grpc_answer(answer), attempt);
        }
        2 => {
            let Some(map) = trailers(rest, mode & 4 != 0) else {
                return;
            };
            if let Some(status) = Status::from_header_map(&map) {
                outcome(grpc_answer(Err(status)), attempt);
            }
        }
        _ => {
            let Some(a) = http_answer::split(rest) else {
                return;
            };
            let path = AGL_PATHS[(mode as usize >> 2) & 3];
            let text = String::from_utf8_lossy(a.body);
            match store_answer(path, a.status, &text) {
                Ok(Ok(v)) => {
                    assert!(a.status.is_success());
                    let _ = created_ids(&v);
                }
                Ok(Err(reason)) | Err(Failure::Retry(reason)) => {
                    assert!(!a.status.is_success());
                    assert!(
                        reason.chars().count() <= path.len() + REASON_MAX,
                        "{reason:?}"
                    );
                }
                Err(Failure::Fatal(e)) => panic!("an answer cannot fail the mapping file: {e}"),
            }
        }
    }
});
