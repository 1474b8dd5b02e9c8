//! Well-known span and attribute names: the ones several parts of oclagl
//! write or read (AGL's ids and reward spans, the GenAI and OpenInference
//! keys export and `oclagl ls` look at, oclagl's own root-span attributes,
//! the LLM proxy's markers).

/// AGL's rollout id (on a span or its resource).
pub const ROLLOUT_ID: &str = "agentlightning.rollout_id";
/// AGL's attempt id.
pub const ATTEMPT_ID: &str = "agentlightning.attempt_id";
/// AGL's order of a span in its attempt.
pub const SPAN_SEQUENCE_ID: &str = "agentlightning.span_sequence_id";

/// AGL's annotation span name (rewards are annotations).
pub const ANNOTATION: &str = "agentlightning.annotation";
/// Prefix of the reward list attributes.
pub const REWARD_PREFIX: &str = "agentlightning.reward";
/// Span names AGL gives reward spans (0.3 and older emitters).
pub const REWARD_SPANS: [&str; 2] = ["agentlightning.annotation", "agentlightning.reward"];

/// Root-span attribute holding the task input (JSON) of a rollout.
pub const TASK_INPUT: &str = "oclagl.task_input";

/// Root-span attribute naming the task a rollout attempts: the attempts of
/// one task (`collect --samples`, or the same prompt collected again) share
/// it.
pub const TASK_ID: &str = "oclagl.task_id";

/// Root-span attribute numbering a rollout among its task's attempts (from 0).
pub const SAMPLE: &str = "oclagl.sample";

/// Root-span attribute naming the session (written by the collector).
pub const SESSION_KEY: &str = "oclagl.session_key";
/// Attributes naming a rollout's session, oclagl's own first.
pub const SESSION_ATTRS: [&str; 3] = [SESSION_KEY, "gen_ai.conversation.id", "session.id"];
/// Attributes naming the model of a call, the one that answered first.
pub const MODEL_ATTRS: [&str; 3] = [
    "gen_ai.response.model",
    "gen_ai.request.model",
    "llm.model_name",
];
/// Attributes counting the prompt tokens of a call.
pub const PROMPT_TOKENS: [&str; 3] = [
    "gen_ai.usage.prompt_tokens",
    "gen_ai.usage.input_tokens",
    "llm.token_count.prompt",
];
/// Attributes counting the completion tokens of a call.
pub const COMPLETION_TOKENS: [&str; 3] = [
    "gen_ai.usage.completion_tokens",
    "gen_ai.usage.output_tokens",
    "llm.token_count.completion",
];

/// The attributes the LLM proxy gives the spans of the calls it records.
pub mod llm_proxy {
    /// Marks a span recorded by the proxy (export prefers these); the value is
    /// the upstream the call went to.
    pub const UPSTREAM: &str = "oclagl.llm_proxy.upstream";
    /// `true` when a body was longer than the recording cap (the recorded body
    /// is then its beginning, and the conversation may be missing).
    pub const TRUNCATED: &str = "oclagl.llm_proxy.truncated";
    /// The request body as recorded (up to the cap): the store's one copy
    /// of what the model received.
    pub const REQUEST_BODY: &str = "oclagl.llm_proxy.request.body";
    /// The response body as recorded (up to the cap): the store's one copy
    /// of what the model answered.
    pub const RESPONSE_BODY: &str = "oclagl.llm_proxy.response.body";
    /// `true` when the answer was a server-sent event stream.
    pub const EVENT_STREAM: &str = "oclagl.llm_proxy.response.event_stream";
    /// Why the bodies could not be read as a conversation.
    pub const UNREADABLE: &str = "oclagl.llm_proxy.unreadable";
}

/// The statuses a trace file gives its rollout (what `--status` filters on).
pub const ROLLOUT_STATUSES: [&str; 3] = ["succeeded", "failed", "running"];
