//! Rewards through the OTel SDK, for a rollout this process ran
//! (`collect --score`): AGL's annotation span under the rollout's root span.

use opentelemetry::trace::{
    Span as _, SpanContext, SpanKind, Status, TraceContextExt, Tracer as _,
};
use opentelemetry::Context;

use super::Emitter;
use crate::reward::{attributes, Attr, Reward};
use crate::semconv::ANNOTATION;

impl Emitter {
    /// Records rewards for a rollout this emitter ran, as a child of its
    /// root span (`root`, from [`super::Outcome::root`]).
    pub fn reward(
        &self,
        rollout_id: &str,
        attempt_id: &str,
        root: &SpanContext,
        rewards: &[Reward],
    ) {
        let attrs = attributes(rollout_id, attempt_id, rewards)
            .into_iter()
            .map(|(k, v)| match v {
                Attr::Str(s) => opentelemetry::KeyValue::new(k, s),
                Attr::F64(x) => opentelemetry::KeyValue::new(k, x),
            });
        let cx = Context::new().with_remote_span_context(root.clone());
        let mut span = self
            .tracer
            .span_builder(ANNOTATION)
            .with_kind(SpanKind::Internal)
            .with_attributes(attrs)
            .start_with_context(&self.tracer, &cx);
        span.set_status(Status::Ok);
        span.end();
    }
}
