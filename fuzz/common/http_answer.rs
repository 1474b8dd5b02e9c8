//! How the answer targets read an HTTP answer from their input, shared by
//! the targets (`split`) and the seed writer (`join`): the status (2 bytes,
//! big-endian, counted from 100 and wrapped at 999), the length of the
//! `Retry-After` value (255: no such header), the value, then the body.
// Each includer uses one half.
#![allow(dead_code)]

use http::{HeaderValue, StatusCode};

pub struct HttpAnswer<'a> {
    pub status: StatusCode,
    pub retry_after: Option<HeaderValue>,
    pub body: &'a [u8],
}

pub fn split(data: &[u8]) -> Option<HttpAnswer<'_>> {
    let (&[hi, lo, n], rest) = data.split_first_chunk::<3>()?;
    let status = StatusCode::from_u16(100 + u16::from_be_bytes([hi, lo]) % 900).ok()?;
    let (retry_after, body) = match n {
        255 => (None, rest),
        n => {
            let (value, body) = rest.split_at_checked(n as usize)?;
            // A value no HTTP parser would pass on is no header at all.
            (HeaderValue::from_bytes(value).ok(), body)
        }
    };
    Some(HttpAnswer {
        status,
        retry_after,
        body,
    })
}

pub fn join(status: u16, retry_after: Option<&str>, body: &[u8]) -> Vec<u8> {
    let mut out = (status - 100).to_be_bytes().to_vec();
    match retry_after {
        Some(v) => {
            out.push(u8::try_from(v.len()).expect("a short Retry-After"));
            out.extend_from_slice(v.as_bytes());
        }
        None => out.push(255),
    }
    out.extend_from_slice(body);
    out
}
