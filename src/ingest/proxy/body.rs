//! The bodies of a forwarded call: the request on its way upstream, and the
//! answer on its way back (the upstream's, recorded on the side, or one of
//! the proxy's own).

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Response, StatusCode};

use super::recorder::{lock, Recording};
use super::span::{Captured, End};

/// An OpenAI-style error answer from the proxy itself.
pub(super) fn error(status: StatusCode, kind: &str, message: String) -> Response<Answer> {
    let body = serde_json::json!({"error": {"message": message, "type": kind}});
    let mut response = Response::new(Answer {
        from: Source::Proxy(Some(Bytes::from(body.to_string()))),
        recording: None,
    });
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// The request body on its way upstream: what was read to find the model
/// first, then the rest as it arrives, recorded on the side.
pub(super) struct Outgoing {
    pub(super) held: VecDeque<Frame<Bytes>>,
    /// `None` when the whole body is held.
    pub(super) rest: Option<Incoming>,
    /// Where the recorded part goes, and its cap.
    pub(super) record: Option<(Arc<Mutex<Captured>>, usize)>,
}

impl Body for Outgoing {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        if let Some(frame) = self.held.pop_front() {
            return Poll::Ready(Some(Ok(frame)));
        }
        let Some(rest) = &mut self.rest else {
            return Poll::Ready(None);
        };
        let frame = std::task::ready!(Pin::new(rest).poll_frame(cx));
        if let (Some(Ok(frame)), Some((captured, limit))) = (&frame, &self.record) {
            if let Some(data) = frame.data_ref() {
                lock(captured).push(data, *limit);
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.held.is_empty() && self.rest.as_ref().is_none_or(Incoming::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        // What is held was read off the rest's length already.
        let rest = self
            .rest
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Incoming::size_hint);
        let held: u64 = self
            .held
            .iter()
            .filter_map(|f| f.data_ref().map(|d| d.len() as u64))
            .sum();
        let mut hint = SizeHint::new();
        if let Some(upper) = rest.upper() {
            hint.set_upper(upper.saturating_add(held));
        }
        hint.set_lower(rest.lower().saturating_add(held));
        hint
    }
}

/// An answer to the client: the upstream's, recorded on the side, or one of
/// the proxy's own.
pub(super) struct Answer {
    pub(super) from: Source,
    pub(super) recording: Option<Recording>,
}

pub(super) enum Source {
    Upstream(Incoming),
    Proxy(Option<Bytes>),
    /// The upstream's answer broke off: the error, held back one poll.
    Failed(Option<hyper::Error>),
}

impl Body for Answer {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let upstream = match &mut self.from {
            Source::Proxy(bytes) => return Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Source::Failed(error) => return Poll::Ready(error.take().map(Err)),
            Source::Upstream(upstream) => upstream,
        };
        let frame = std::task::ready!(Pin::new(upstream).poll_frame(cx));
        if let Some(rec) = &mut self.recording {
            match &frame {
                Some(Ok(frame)) => {
                    if let Some(data) = frame.data_ref() {
                        rec.response_chunk(data);
                    }
                }
                Some(Err(e)) => rec.ended(End::Upstream(format!("the answer broke off: {e}"))),
                None => rec.ended(End::Complete),
            }
        }
        if matches!(frame, None | Some(Err(_))) {
            // Store the span now rather than when the server lets go.
            self.recording = None;
        }
        if let Some(Err(e)) = frame {
            // hyper drops a connection on a body's error without flushing
            // what it buffered: a last piece read together with the break
            // would never reach the client. Pending lets it flush first.
            self.from = Source::Failed(Some(e));
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        match &self.from {
            Source::Upstream(upstream) => upstream.is_end_stream(),
            Source::Proxy(bytes) => bytes.is_none(),
            Source::Failed(error) => error.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.from {
            Source::Upstream(upstream) => upstream.size_hint(),
            Source::Proxy(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
            Source::Failed(_) => SizeHint::default(),
        }
    }
}
