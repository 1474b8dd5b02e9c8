//! How the LLM proxy reaches an upstream: hyper-util's pooled HTTP/1.1
//! client over TCP (`TCP_NODELAY`, keep-alive probes), TLS for https
//! (rustls, the platform's roots and `SSL_CERT_FILE`), and, when the
//! environment names a proxy for the upstream (`HTTPS_PROXY`, `HTTP_PROXY`,
//! `ALL_PROXY`, less `NO_PROXY`), through it: a `CONNECT` tunnel for an
//! https upstream, requests in absolute form for an http one. This is what
//! the proxy's earlier client (reqwest) did; the way to each upstream is
//! decided once, when the proxy starts.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::header::HeaderValue;
use hyper::http::uri::Scheme;
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper::Uri;
use hyper_util::client::legacy::connect::proxy::Tunnel;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::client::legacy::Client;
use hyper_util::client::proxy::matcher::Matcher;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::pki_types::ServerName;
use tower_service::Service;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Connecting<T> = Pin<Box<dyn Future<Output = Result<T, BoxError>> + Send>>;

/// A byte stream hyper can speak HTTP over.
trait Io: Read + Write + Send + Unpin + 'static {}
impl<T: Read + Write + Send + Unpin + 'static> Io for T {}

/// A connection to an upstream, or to the proxy in front of it.
pub struct Conn {
    io: Box<dyn Io>,
    /// To a forward proxy: requests go in absolute form.
    proxied: bool,
}

impl Connection for Conn {
    fn connected(&self) -> Connected {
        Connected::new().proxy(self.proxied)
    }
}

impl Read for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl Write for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Opens a stream to a URI: TCP, then TLS when its scheme is https.
#[derive(Clone)]
struct Opener {
    tcp: HttpConnector,
    tls: tokio_rustls::TlsConnector,
}

impl Service<Uri> for Opener {
    type Response = Box<dyn Io>;
    type Error = BoxError;
    type Future = Connecting<Box<dyn Io>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        let mut tcp = self.tcp.clone();
        let tls = self.tls.clone();
        Box::pin(async move {
            let stream = tcp.call(dst.clone()).await?;
            if dst.scheme() == Some(&Scheme::HTTPS) {
                tls_over(&tls, &dst, stream.into_inner()).await
            } else {
                Ok(Box::new(stream) as Box<dyn Io>)
            }
        })
    }
}

/// A TLS session with `dst`'s host over `io`.
async fn tls_over<T>(
    tls: &tokio_rustls::TlsConnector,
    dst: &Uri,
    io: T,
) -> Result<Box<dyn Io>, BoxError>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let host = dst.host().ok_or("the URL has no host")?;
    // An IPv6 literal is bracketed in a URI, not in a server name.
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let name = ServerName::try_from(host.to_string())?;
    let stream = tls.connect(name, io).await?;
    Ok(Box::new(TokioIo::new(stream)))
}

/// The way to one upstream.
#[derive(Clone, Debug)]
enum Via {
    Direct,
    /// An http upstream through a forward proxy.
    Forward(Uri),
    /// An https upstream through a `CONNECT` tunnel, with the proxy's
    /// credentials if it has any.
    Tunnel(Uri, Option<HeaderValue>),
}

/// The connector of one upstream's client.
#[derive(Clone)]
pub struct Connector {
    open: Opener,
    via: Via,
}

impl Service<Uri> for Connector {
    type Response = Conn;
    type Error = BoxError;
    type Future = Connecting<Conn>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        let (mut open, via) = (self.open.clone(), self.via.clone());
        Box::pin(async move {
            Ok(match via {
                Via::Direct => Conn {
                    io: open.call(dst).await?,
                    proxied: false,
                },
                Via::Forward(proxy) => Conn {
                    io: open.call(proxy).await?,
                    proxied: true,
                },
                Via::Tunnel(proxy, auth) => {
                    let tls = open.tls.clone();
                    let mut tunnel = Tunnel::new(proxy, open);
                    if let Some(auth) = auth {
                        tunnel = tunnel.with_auth(auth);
                    }
                    let io = tunnel.call(dst.clone()).await?;
                    Conn {
                        io: tls_over(&tls, &dst, TokioIo::new(io)).await?,
                        proxied: false,
                    }
                }
            })
        })
    }
}

/// The client of one upstream, with what its requests need added.
pub struct Route<B> {
    pub client: Client<Connector, B>,
    /// `Proxy-Authorization` for the forward proxy of an http upstream.
    pub proxy_auth: Option<HeaderValue>,
}

/// Shared by every upstream's client: the TLS setup (built once).
pub struct Clients {
    tls: tokio_rustls::TlsConnector,
    proxies: Matcher,
}

impl Clients {
    /// With the proxies the environment names.
    pub fn from_env() -> Result<Clients, String> {
        Clients::new(Matcher::from_env())
    }

    fn new(proxies: Matcher) -> Result<Clients, String> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let verifier = rustls_platform_verifier::Verifier::new(provider.clone())
            .map_err(|e| format!("TLS roots: {e}"))?;
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS: {e}"))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Clients {
            tls: tokio_rustls::TlsConnector::from(Arc::new(config)),
            proxies,
        })
    }

    /// The way to the upstream at `base`, and the `Proxy-Authorization`
    /// its requests carry.
    fn via(&self, base: &Uri) -> Result<(Via, Option<HeaderValue>), String> {
        let Some(proxy) = self.proxies.intercept(base) else {
            return Ok((Via::Direct, None));
        };
        let uri = proxy.uri().clone();
        if !matches!(uri.scheme_str(), Some("http" | "https")) {
            return Err(format!(
                "the environment's proxy for {base} is {}: only http:// and https:// proxies are supported",
                uri.scheme_str().unwrap_or("without a scheme")
            ));
        }
        let auth = proxy.basic_auth().cloned();
        Ok(if base.scheme() == Some(&Scheme::HTTPS) {
            (Via::Tunnel(uri, auth), None)
        } else {
            (Via::Forward(uri), auth)
        })
    }

    /// The client for the upstream at `base` (its scheme and authority
    /// decide the way there).
    pub fn route<B>(&self, base: &Uri) -> Result<Route<B>, String>
    where
        B: http_body::Body + Send,
        B::Data: Send,
    {
        let mut tcp = HttpConnector::new();
        tcp.enforce_http(false);
        tcp.set_nodelay(true);
        tcp.set_connect_timeout(Some(Duration::from_secs(30)));
        tcp.set_keepalive(Some(Duration::from_secs(15)));
        tcp.set_keepalive_interval(Some(Duration::from_secs(15)));
        tcp.set_keepalive_retries(Some(3));
        tcp.set_tcp_user_timeout(Some(Duration::from_secs(30)));
        let open = Opener {
            tcp,
            tls: self.tls.clone(),
        };
        let (via, proxy_auth) = self.via(base)?;
        let client = Client::builder(TokioExecutor::new())
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .build(Connector { open, via });
        Ok(Route { client, proxy_auth })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_upstream_goes_through_the_proxy_the_environment_names_for_it() {
        let clients = |all: &str| {
            let proxies = Matcher::builder()
                .all(all)
                .no("direct.example, 10.0.0.0/8")
                .build();
            Clients::new(proxies).unwrap()
        };
        let uri = |s: &str| s.parse::<Uri>().unwrap();
        let at_proxy = |p: &Uri| p.host() == Some("proxy.example") && p.port_u16() == Some(3128);
        let with = clients("http://u:p@proxy.example:3128");
        let basic = "Basic dTpw";
        match with.via(&uri("https://api.example/v1")).unwrap() {
            (Via::Tunnel(p, Some(auth)), None) => assert!(at_proxy(&p) && auth == basic),
            other => panic!("{other:?}"),
        }
        match with.via(&uri("http://vllm.example:8000/v1")).unwrap() {
            (Via::Forward(p), Some(auth)) => assert!(at_proxy(&p) && auth == basic),
            other => panic!("{other:?}"),
        }
        for direct in ["https://direct.example/v1", "http://10.1.2.3:8000/v1"] {
            assert!(matches!(
                with.via(&uri(direct)).unwrap(),
                (Via::Direct, None)
            ));
        }
        match clients("http://proxy.example:3128").via(&uri("https://api.example/v1")) {
            Ok((Via::Tunnel(_, None), None)) => {}
            other => panic!("{other:?}"),
        }
        let socks = clients("socks5://proxy.example:1080").via(&uri("https://api.example/v1"));
        assert!(socks.unwrap_err().contains("socks5"));
        assert!(matches!(
            Clients::new(Matcher::builder().build())
                .unwrap()
                .via(&uri("https://api.example/v1")),
            Ok((Via::Direct, None))
        ));
    }
}
