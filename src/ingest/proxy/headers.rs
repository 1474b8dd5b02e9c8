//! The headers of a forwarded call: what belongs to one connection and is
//! dropped, what the upstream gets, and the caller's `traceparent`.

use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Removes the headers that belong to one connection, not to the message
/// (RFC 9110 7.6.1), including those the `Connection` header names.
pub(super) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::try_from(n.trim()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        header::CONNECTION,
        HeaderName::from_static("keep-alive"),
        HeaderName::from_static("proxy-connection"),
        header::PROXY_AUTHENTICATE,
        header::PROXY_AUTHORIZATION,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
    ] {
        headers.remove(name);
    }
}

/// The caller's headers as the upstream gets them: end-to-end only, without
/// `Host` (the upstream's is set) and `Accept-Encoding` (answers must stay
/// readable to be recorded), with the upstream URL's credentials when the
/// caller sends no `Authorization`, and the credentials of the proxy in
/// between, if any.
pub(super) fn to_upstream(
    headers: &mut HeaderMap,
    authorization: Option<&HeaderValue>,
    proxy_authorization: Option<&HeaderValue>,
) {
    strip_hop_by_hop(headers);
    headers.remove(header::HOST);
    headers.remove(header::ACCEPT_ENCODING);
    if let Some(basic) = authorization {
        if !headers.contains_key(header::AUTHORIZATION) {
            headers.insert(header::AUTHORIZATION, basic.clone());
        }
    }
    if let Some(auth) = proxy_authorization {
        headers.insert(header::PROXY_AUTHORIZATION, auth.clone());
    }
}

/// The caller's span from a W3C `traceparent`: (trace id, span id).
pub(super) fn traceparent(headers: &HeaderMap) -> Option<([u8; 16], [u8; 8])> {
    let value = headers.get("traceparent")?.to_str().ok()?.trim();
    let mut parts = value.split('-');
    let version = parts.next()?;
    let (mut trace, mut span, mut byte) = ([0; 16], [0; 8], [0; 1]);
    hex::decode_to_slice(parts.next()?, &mut trace).ok()?;
    hex::decode_to_slice(parts.next()?, &mut span).ok()?;
    let flags = parts.next()?;
    let version_ok = version != "ff" && hex::decode_to_slice(version, &mut byte).is_ok();
    if !version_ok || flags.len() != 2 || (version == "00" && parts.next().is_some()) {
        return None;
    }
    (trace != [0; 16] && span != [0; 8]).then_some((trace, span))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_is_checked() {
        let with = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert("traceparent", HeaderValue::from_str(v).unwrap());
            traceparent(&h)
        };
        let ok = with("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01").unwrap();
        assert_eq!(hex::encode(ok.0), "0af7651916cd43dd8448eb211c80319c");
        assert_eq!(hex::encode(ok.1), "b7ad6b7169203331");
        for bad in [
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
            "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra",
            "00-0af7651916cd43dd-b7ad6b7169203331-01",
            "garbage",
        ] {
            assert_eq!(with(bad), None, "{bad}");
        }
        // A later version may add fields.
        assert!(with("01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-xyz").is_some());
        assert_eq!(traceparent(&HeaderMap::new()), None);
    }

    #[test]
    fn hop_by_hop_headers_are_dropped() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-private"),
        );
        h.insert("x-private", HeaderValue::from_static("1"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer k"));
        h.insert(header::ACCEPT_ENCODING, HeaderValue::from_static("gzip"));
        h.insert(header::HOST, HeaderValue::from_static("127.0.0.1:4000"));
        h.insert(
            header::PROXY_AUTHORIZATION,
            HeaderValue::from_static("Basic caller"),
        );
        let mut answer = h.clone();
        strip_hop_by_hop(&mut answer);
        let names = |h: &HeaderMap| {
            let mut names: Vec<_> = h.keys().map(|k| k.to_string()).collect();
            names.sort();
            names
        };
        assert_eq!(names(&answer), ["accept-encoding", "authorization", "host"]);

        let basic = HeaderValue::from_static("Basic dTpw");
        let ours = HeaderValue::from_static("Basic cHJveHk6cA==");
        let mut request = h.clone();
        to_upstream(&mut request, Some(&basic), Some(&ours));
        assert_eq!(names(&request), ["authorization", "proxy-authorization"]);
        assert_eq!(
            request[header::AUTHORIZATION],
            "Bearer k",
            "the caller's key wins"
        );
        assert_eq!(request[header::PROXY_AUTHORIZATION], ours);
        h.remove(header::AUTHORIZATION);
        to_upstream(&mut h, Some(&basic), None);
        assert_eq!(h[header::AUTHORIZATION], basic);
        assert!(!h.contains_key(header::PROXY_AUTHORIZATION));
    }
}
