//! Where forwarded spans go: one `--forward` value per destination.
//!
//! A value is a URL, optionally followed by `;key=value` options:
//!
//! ```text
//! grpc://jaeger:4317
//! http://tempo:4318;headers=X-Scope-OrgID=team-a;compression=gzip;timeout=5s
//! agl+http://127.0.0.1:4747;name=agl
//! ```
//!
//! - `grpc://host:port`: OTLP/gRPC (`TraceService/Export`, plaintext HTTP/2).
//! - `http://` or `https://`: OTLP/HTTP with protobuf bodies; a URL without a
//!   path gets `/v1/traces`, one with a path is used as it is.
//! - `agl+http://host:port`: an Agent Lightning store (`agl store`), which
//!   needs rollouts registered before their spans (see `forward::agl`).
//!
//! Options: `headers` (`OTEL_EXPORTER_OTLP_HEADERS` style, `k=v,k2=v2`, values
//! percent-encoded), `timeout` (per request, default 10s), `compression`
//! (`gzip` or `none`), `max-backlog` (undelivered bytes kept for this
//! destination, default 1GiB), `name` (names the delivery cursor on disk;
//! default from the URL) and, for AGL stores, `hold` (see `forward::agl`).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::args::{parse_duration, parse_size};
use crate::util::percent::percent_decode;

/// How spans travel to a destination, from its URL's scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// OTLP/gRPC (`grpc://`).
    Grpc,
    /// OTLP/HTTP with protobuf bodies (`http://`, `https://`).
    HttpProtobuf,
    /// An Agent Lightning store's REST API (`agl+http://`): whole rollouts,
    /// once their trace file is written.
    AglStore,
}

/// A `--forward` destination, parsed from its URL and `;options`.
#[derive(Clone, PartialEq, Eq)]
pub struct Destination {
    /// Names the destination on `/metrics` and its delivery cursor on disk.
    pub name: String,
    /// How spans are sent.
    pub protocol: Protocol,
    /// For gRPC and AGL stores the base URL (`http://host:port`); for
    /// OTLP/HTTP the full traces URL.
    pub url: String,
    /// Extra request headers (`;headers=`), often credentials.
    pub headers: Vec<(String, String)>,
    /// How long one send may take (`;timeout=`).
    pub timeout: Duration,
    /// Compress bodies with gzip (`;compression=gzip`).
    pub gzip: bool,
    /// Bytes of log the destination may fall behind before the oldest are
    /// dropped (`;max-backlog=`).
    pub max_backlog: u64,
    /// AGL stores only: how long a trace-derived rollout is left alone
    /// before it is sent (a named rollout may still claim it).
    pub hold: Duration,
}

/// Header values may carry credentials: never print them.
impl fmt::Debug for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.headers.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("Destination")
            .field("name", &self.name)
            .field("protocol", &self.protocol)
            .field("url", &self.url)
            .field("headers", &names)
            .field("timeout", &self.timeout)
            .field("gzip", &self.gzip)
            .field("max_backlog", &self.max_backlog)
            .field("hold", &self.hold)
            .finish()
    }
}

impl FromStr for Destination {
    type Err = String;

    fn from_str(s: &str) -> Result<Destination, String> {
        let mut parts = s.trim().split(';');
        let url = parts.next().unwrap_or_default().trim();
        let (scheme, rest) = url.split_once("://").ok_or_else(|| {
            format!("{url:?} is not a URL (try grpc://host:4317 or http://host:4318)")
        })?;
        let (authority, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        if authority.is_empty() || authority.contains(['@', ' ', '?', '#']) {
            return Err(format!("{url:?}: expected scheme://host:port"));
        }
        let (protocol, url) = match scheme.to_ascii_lowercase().as_str() {
            "grpc" if path.is_empty() || path == "/" => {
                (Protocol::Grpc, format!("http://{authority}"))
            }
            "agl+http" if path.is_empty() || path == "/" => {
                (Protocol::AglStore, format!("http://{authority}"))
            }
            "grpc" | "agl+http" => {
                return Err(format!("{url:?}: a {scheme} destination takes no path"))
            }
            "http" | "https" if path.is_empty() || path == "/" => (
                Protocol::HttpProtobuf,
                format!("{scheme}://{authority}/v1/traces"),
            ),
            "http" | "https" => (Protocol::HttpProtobuf, url.to_string()),
            other => {
                return Err(format!(
                    "{url:?}: unknown scheme {other:?} (use grpc, http, https or agl+http)"
                ))
            }
        };
        let mut dest = Destination {
            name: default_name(scheme, authority),
            protocol,
            url,
            headers: Vec::new(),
            timeout: Duration::from_secs(10),
            gzip: false,
            max_backlog: 1 << 30,
            hold: Duration::from_secs(60),
        };
        for option in parts {
            let option = option.trim();
            if option.is_empty() {
                continue;
            }
            let (key, value) = option
                .split_once('=')
                .ok_or_else(|| format!("option {option:?} is not key=value"))?;
            match key.trim() {
                "headers" => dest.headers = parse_headers(value)?,
                "timeout" => dest.timeout = parse_duration(value)?,
                "compression" => {
                    dest.gzip = match value.trim() {
                        "gzip" => true,
                        "none" | "" => false,
                        other => return Err(format!("compression {other:?}: use gzip or none")),
                    }
                }
                "max-backlog" => dest.max_backlog = parse_size(value)? as u64,
                "hold" if dest.protocol == Protocol::AglStore => {
                    dest.hold = parse_duration(value)?
                }
                "name" => {
                    let name = value.trim();
                    if name.is_empty()
                        || !name
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
                    {
                        return Err(format!("name {name:?}: use letters, digits, - and _"));
                    }
                    dest.name = name.to_string();
                }
                other => return Err(format!(
                    "unknown option {other:?} (headers, timeout, compression, max-backlog, name; hold for agl+http)"
                )),
            }
        }
        if dest.timeout.is_zero() {
            return Err("timeout must be more than 0".into());
        }
        Ok(dest)
    }
}

fn default_name(scheme: &str, authority: &str) -> String {
    let raw = format!("{scheme}-{authority}");
    raw.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect()
}

/// `k=v,k2=v2` with percent-encoded values, as in `OTEL_EXPORTER_OTLP_HEADERS`.
pub fn parse_headers(s: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for pair in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = pair
            .split_once('=')
            .ok_or_else(|| "headers: expected k=v pairs separated by commas".to_string())?;
        let key = k.trim().to_ascii_lowercase();
        if key.is_empty()
            || !key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b))
        {
            return Err(format!("headers: {:?} is not a header name", k.trim()));
        }
        let value = percent_decode(v.trim())
            .ok_or_else(|| format!("headers: the value of {key} is badly percent-encoded"))?;
        if value.bytes().any(|b| b < 0x20 && b != b'\t') {
            return Err(format!(
                "headers: the value of {key} has control characters"
            ));
        }
        out.push((key, value));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_options_parse() {
        let d: Destination = "grpc://jaeger:4317".parse().unwrap();
        assert_eq!(d.protocol, Protocol::Grpc);
        assert_eq!(d.url, "http://jaeger:4317");
        assert_eq!(d.name, "grpc-jaeger-4317");
        assert_eq!(d.timeout, Duration::from_secs(10));

        let d: Destination =
            "http://tempo:4318;headers=X-Scope-OrgID=a%20b,authorization=Bearer%20t;compression=gzip;timeout=5s;max-backlog=10MiB;name=tempo"
                .parse()
                .unwrap();
        assert_eq!(d.protocol, Protocol::HttpProtobuf);
        assert_eq!(d.url, "http://tempo:4318/v1/traces");
        assert_eq!(
            d.headers,
            vec![
                ("x-scope-orgid".into(), "a b".into()),
                ("authorization".into(), "Bearer t".into())
            ]
        );
        assert!(d.gzip);
        assert_eq!(d.timeout, Duration::from_secs(5));
        assert_eq!(d.max_backlog, 10 << 20);
        assert_eq!(d.name, "tempo");
        assert!(
            !format!("{d:?}").contains("Bearer"),
            "Debug hides header values"
        );

        let d: Destination = "https://h/otlp/v1/traces".parse().unwrap();
        assert_eq!(d.url, "https://h/otlp/v1/traces");
        let d: Destination = "agl+http://127.0.0.1:4747".parse().unwrap();
        assert_eq!(
            (d.protocol, d.url.as_str()),
            (Protocol::AglStore, "http://127.0.0.1:4747")
        );
        let d: Destination = "agl+http://h:1;hold=2s".parse().unwrap();
        assert_eq!(d.hold, Duration::from_secs(2));
    }

    #[test]
    fn bad_values_are_refused_with_a_reason() {
        for bad in [
            "",
            "jaeger:4317",
            "ftp://h:1",
            "grpc://h:1/path",
            "http://",
            "http://u@h:1",
            "http://h:1;timeout=0s",
            "http://h:1;timeout=soon",
            "http://h:1;compression=zstd",
            "http://h:1;color=red",
            "http://h:1;nokey",
            "http://h:1;headers=a",
            "http://h:1;headers=a b=c",
            "http://h:1;headers=a=%zz",
            "http://h:1;headers=a=%0a",
            "http://h:1;name=../x",
            "http://h:1;max-backlog=lots",
            "http://h:1;hold=5s",
        ] {
            let err = bad.parse::<Destination>().unwrap_err();
            assert!(!err.is_empty(), "{bad}");
        }
    }
}
