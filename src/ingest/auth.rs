//! Who may talk to the sidecar: bearer tokens on every receiver and
//! endpoint (but `/health`, which probes need), and optional TLS.
//!
//! Tokens are compared in constant time, several may be valid at once (for
//! rotation), and a refusal says nothing about why: HTTP 401 with an empty
//! body, gRPC `UNAUTHENTICATED` with a fixed message.

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::gateway::Secret;

/// Why the receivers' TLS settings could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// A certificate or key file could not be read.
    #[error("cannot read {path}: {error}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        error: io::Error,
    },
    /// A file is not the PEM it should be.
    #[error("{path}: {reason}")]
    Pem {
        /// The file.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// rustls refused the certificate and key.
    #[error("TLS settings: {0}")]
    Tls(String),
}

/// The accepted tokens; none means no authentication.
#[derive(Clone, Default, Debug)]
pub struct Tokens(Arc<Vec<Secret>>);

impl Tokens {
    /// Accepts these tokens; empty ones are ignored, and none means no
    /// authentication.
    pub fn new(tokens: Vec<Secret>) -> Tokens {
        Tokens(Arc::new(
            tokens.into_iter().filter(|t| !t.is_empty()).collect(),
        ))
    }

    /// True when requests must carry a token.
    pub fn required(&self) -> bool {
        !self.0.is_empty()
    }

    /// Does an `Authorization` value carry one of the tokens? Every token is
    /// compared, so the time does not tell which one (or none) matched.
    pub fn allows(&self, authorization: Option<&[u8]>) -> bool {
        if !self.required() {
            return true;
        }
        let presented = authorization
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(|v| {
                let (scheme, token) = v.trim().split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
            })
            .unwrap_or("");
        self.0.iter().fold(false, |ok, t| t.matches(presented) | ok)
    }
}

/// axum middleware: 401 without a valid bearer token, except on `/health`.
pub async fn require_http(State(tokens): State<Tokens>, req: Request, next: Next) -> Response {
    let authorization = req
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| v.as_bytes());
    if req.uri().path() == "/health" || tokens.allows(authorization) {
        next.run(req).await
    } else {
        (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
        )
            .into_response()
    }
}

/// tonic interceptor: `UNAUTHENTICATED` without a valid `authorization`
/// metadata entry (`Bearer <token>`).
pub fn grpc_interceptor(
    tokens: Tokens,
) -> impl FnMut(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> + Clone {
    move |req: tonic::Request<()>| {
        let value = req.metadata().get("authorization").map(|v| v.as_bytes());
        if tokens.allows(value) {
            Ok(req)
        } else {
            Err(tonic::Status::unauthenticated("unauthenticated"))
        }
    }
}

/// A server certificate and key, loaded from PEM files.
#[derive(Clone)]
pub struct Tls {
    /// The rustls configuration the HTTP receivers serve with.
    pub config: Arc<rustls::ServerConfig>,
    /// The certificate chain's PEM, for the gRPC receiver.
    pub cert_pem: Vec<u8>,
    /// The private key's PEM, for the gRPC receiver.
    pub key_pem: Vec<u8>,
}

impl Tls {
    /// Loads and checks a PEM certificate chain and its private key.
    pub fn load(cert: &Path, key: &Path) -> Result<Tls, AuthError> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let read = |p: &Path| {
            std::fs::read(p).map_err(|source| AuthError::Read {
                path: p.display().to_string(),
                error: source,
            })
        };
        let pem_err = |p: &Path, reason: String| AuthError::Pem {
            path: p.display().to_string(),
            reason,
        };
        let (cert_pem, key_pem) = (read(cert)?, read(key)?);
        let certs = CertificateDer::pem_slice_iter(&cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| pem_err(cert, format!("not a PEM certificate chain: {e}")))?;
        if certs.is_empty() {
            return Err(pem_err(cert, "no certificate in the file".into()));
        }
        let private = PrivateKeyDer::from_pem_slice(&key_pem)
            .map_err(|e| pem_err(key, format!("not a PEM private key: {e}")))?;
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| AuthError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, private)
        .map_err(|e| AuthError::Tls(e.to_string()))?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Tls {
            config: Arc::new(config),
            cert_pem,
            key_pem,
        })
    }
}

/// A TCP listener that hands out TLS streams. Handshakes run concurrently
/// (each limited to 10 s), so a client that stalls its handshake holds up
/// nobody else.
pub struct TlsListener {
    rx: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    /// Accepts TLS connections on `tcp` with `tls`'s certificate.
    pub fn new(tcp: TcpListener, tls: &Tls) -> io::Result<TlsListener> {
        let local = tcp.local_addr()?;
        let acceptor = TlsAcceptor::from(tls.config.clone());
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    a = tcp.accept() => a,
                    // The listener was dropped: stop accepting.
                    _ = tx.closed() => break,
                };
                let (stream, peer) = match accepted {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::debug!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                // Answers are small writes after the request: Nagle would
                // hold them for the client's delayed ACK (~40 ms).
                let _ = stream.set_nodelay(true);
                let (acceptor, done) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    let handshake =
                        tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream));
                    match handshake.await {
                        Ok(Ok(tls)) => {
                            let _ = done.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(TlsListener { rx, local })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(x) => x,
            // The accept task ends only with the listener; wait forever.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_listed_token_is_accepted_and_nothing_else() {
        let tokens = Tokens::new(vec![Secret::new("old-token"), Secret::new("new-token")]);
        assert!(tokens.allows(Some(b"Bearer new-token")));
        assert!(tokens.allows(Some(b"bearer old-token")));
        for bad in [
            &b"Bearer wrong"[..],
            b"new-token",
            b"Basic new-token",
            b"Bearer ",
            b"",
            b"Bearer new-token2",
            b"\xff\xfe",
        ] {
            assert!(!tokens.allows(Some(bad)), "{bad:?}");
        }
        assert!(!tokens.allows(None));
        let open = Tokens::new(vec![Secret::new("")]);
        assert!(!open.required());
        assert!(open.allows(None));
    }
}
