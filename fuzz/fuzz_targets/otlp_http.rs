//! The OTLP/HTTP decode path of `POST /v1/traces` (`ingest::http::decode_traces`:
//! content type, content encoding, gzip, protobuf or OTLP/JSON), then the
//! validation and summary every stored request goes through.
//!
//! The first input byte picks the headers; the rest is the body. With bit 4
//! set and `Content-Encoding: gzip`, the target gzips the body itself, so the
//! decoders behind gzip see valid streams as well as broken ones.
#![no_main]

use std::io::Write;

use bytes::Bytes;
use http::header::{CONTENT_ENCODING, CONTENT_TYPE};
use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use oclagl::agl::index::summarize;
use oclagl::ingest::http::decode_traces;
use oclagl::ingest::retain_valid_spans;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;

const TYPES: [&str; 4] = [
    "application/x-protobuf",
    "application/json",
    "Application/JSON; charset=utf-8",
    "text/plain",
];
const ENCODINGS: [Option<&str>; 4] = [None, Some("gzip"), Some("identity"), Some("br")];
/// Small, so that gzip bombs reach the limit quickly.
const LIMIT: usize = 1 << 20;

fn gzip(body: &[u8]) -> Bytes {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(body).expect("writing to a Vec");
    Bytes::from(enc.finish().expect("writing to a Vec"))
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, body)) = data.split_first() else {
        return;
    };
    let mut headers = HeaderMap::new();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static(TYPES[mode as usize & 3]),
    );
    let encoding = ENCODINGS[(mode as usize >> 2) & 3];
    if let Some(e) = encoding {
        headers.insert(CONTENT_ENCODING, HeaderValue::from_static(e));
    }
    let body = if mode & 0x10 != 0 && encoding == Some("gzip") {
        gzip(body)
    } else {
        Bytes::copy_from_slice(body)
    };
    let Ok(mut request) = decode_traces(&headers, body, LIMIT) else {
        return;
    };
    // What is stored is the protobuf encoding: it must decode to the same
    // request (compared as bytes: NaN attribute values are not equal to
    // themselves).
    let bytes = request.encode_to_vec();
    let again = ExportTraceServiceRequest::decode(&bytes[..]).expect("own encoding decodes");
    assert_eq!(again.encode_to_vec(), bytes);
    let (kept, _) = retain_valid_spans(&mut request);
    let summary = summarize(&request);
    assert!(summary.keys.len() <= kept);
});
