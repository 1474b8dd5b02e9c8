//! Where the proxy sends a call: the upstreams of `--llm-upstream`, and
//! the one a model's name picks.

use hyper::header::HeaderValue;

/// Where calls go: the default upstream (`prefix` `None`) or the one for
/// models whose name starts with `prefix`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// Model-name prefix this upstream serves; `None` for the default.
    pub prefix: Option<String>,
    /// Base URL; a request for `/v1/<rest>` goes to `<url>/<rest>`.
    pub url: reqwest::Url,
}

impl AsRef<Upstream> for Upstream {
    fn as_ref(&self) -> &Upstream {
        self
    }
}

/// Parses `--llm-upstream`: `https://host/v1` or `<model-prefix>=https://host/v1`.
pub fn parse_upstream(s: &str) -> Result<Upstream, String> {
    let s = s.trim();
    let (prefix, url) = if s.starts_with("http://") || s.starts_with("https://") {
        (None, s)
    } else {
        match s.split_once('=') {
            Some((p, u)) if !p.is_empty() => (Some(p.to_string()), u.trim()),
            _ => {
                return Err(format!(
                "{s:?} is not an upstream (use https://host/v1 or <model-prefix>=https://host/v1)"
            ))
            }
        }
    };
    let url = reqwest::Url::parse(url).map_err(|e| format!("{url:?} is not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(format!("{url} is not an http(s) URL with a host"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!("{url}: an upstream URL takes no query or fragment"));
    }
    Ok(Upstream { prefix, url })
}

/// The upstream as recorded: no user info (it may hold credentials).
pub(super) fn display_url(url: &reqwest::Url) -> String {
    let mut shown = url.clone();
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    shown.as_str().trim_end_matches('/').to_string()
}

/// The `Authorization` the user info of an upstream URL stands for (Basic,
/// percent-decoded), sent when the caller sends none.
pub(super) fn basic_auth(url: &reqwest::Url) -> Option<HeaderValue> {
    use base64::Engine;
    if url.username().is_empty() && url.password().is_none() {
        return None;
    }
    use crate::util::percent::percent_decode;
    let user = percent_decode(url.username())?;
    let password = match url.password() {
        Some(p) => percent_decode(p)?,
        None => String::new(),
    };
    let credentials = format!("{user}:{password}");
    let encoded = base64::engine::general_purpose::STANDARD.encode(credentials);
    let mut value = HeaderValue::try_from(format!("Basic {encoded}")).ok()?;
    value.set_sensitive(true);
    Some(value)
}

/// The LLM proxy's settings (from `serve --llm-*`).
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// Where calls go, in the order given (see [`Upstream`]).
    pub upstreams: Vec<Upstream>,
    /// Bytes of request and response body recorded per call, together.
    pub record_max: usize,
    /// The traces bound to AGL v1 (`None`: the proxy binds none).
    pub bindings: Option<std::sync::Arc<super::binding::Bindings>>,
    /// How long a bound call waits out AGL's pauses (429 with
    /// `X-Agl-Paused: true`) before the 429 reaches the client.
    pub max_pause: std::time::Duration,
}

/// The upstream for a model: the longest matching prefix, else the default
/// (the one without a prefix, or the first one listed). `None` if there are
/// no upstreams.
pub(super) fn pick<'a, T: AsRef<Upstream>>(
    upstreams: &'a [T],
    model: Option<&str>,
) -> Option<&'a T> {
    fn prefix<T: AsRef<Upstream>>(t: &T) -> Option<&str> {
        t.as_ref().prefix.as_deref()
    }
    model
        .and_then(|m| {
            upstreams
                .iter()
                .filter(|t| prefix(t).is_some_and(|p| m.starts_with(p)))
                .max_by_key(|t| prefix(t).map_or(0, str::len))
        })
        .or_else(|| upstreams.iter().find(|t| prefix(t).is_none()))
        .or_else(|| upstreams.first())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstreams_parse_and_route_by_longest_prefix() {
        let plain = parse_upstream("https://api.example.com/v1").unwrap();
        assert_eq!(plain.prefix, None);
        let routed = parse_upstream("gpt-=http://127.0.0.1:9/v1/").unwrap();
        assert_eq!(routed.prefix.as_deref(), Some("gpt-"));
        let longer = parse_upstream("gpt-4o=http://127.0.0.1:8/v1").unwrap();
        for bad in [
            "",
            "api.example.com",
            "=http://x/v1",
            "m=ftp://x",
            "http://x/v1?key=1",
            "m=not a url",
        ] {
            assert!(parse_upstream(bad).is_err(), "{bad:?}");
        }
        let port = |upstreams: &[Upstream], model| pick(upstreams, model).map(|u| u.url.port());
        let all = [routed.clone(), plain, longer.clone()];
        assert_eq!(port(&all, Some("gpt-4o-mini")), Some(Some(8)));
        assert_eq!(port(&all, Some("gpt-3.5")), Some(Some(9)));
        assert_eq!(port(&all, Some("claude")), Some(None));
        assert_eq!(port(&all, None), Some(None));
        assert_eq!(port(&[routed, longer], None), Some(Some(9)));
        assert_eq!(port(&[], None), None);
        let with_user = reqwest::Url::parse("https://us%20er:p%3Aw@h.example/v1/").unwrap();
        assert_eq!(display_url(&with_user), "https://h.example/v1");
        // As curl and reqwest send it: Basic base64("us er:p:w").
        assert_eq!(basic_auth(&with_user).unwrap(), "Basic dXMgZXI6cDp3");
        let no_password = reqwest::Url::parse("https://key@h.example/v1").unwrap();
        assert_eq!(basic_auth(&no_password).unwrap(), "Basic a2V5Og==");
        assert_eq!(basic_auth(&all[1].url), None);
    }
}
