//! `oclagl run` as Agent Lightning v1's harness.
//!
//! AGL's controller starts one harness per rollout with the rollout's
//! per-rollout model URL (`AGL_OPENAI_BASE_URL`), its event URL
//! (`AGL_EVENT_URL`) and the key (`AGL_KEY`) in the environment. Given
//! them, `oclagl run` checks that AGL knows the rollout and takes the key,
//! binds the run's trace at the sidecar whose LLM proxy the gateway calls
//! (`PUT /v1/agl/bindings/<trace id>`), so every model call of the run goes
//! to AGL, runs the task, posts its primary reward as a v1 `reward` event,
//! and drops the binding.

use std::time::Duration;

use serde_json::json;

use super::CollectError;
use crate::gateway::Secret;
use crate::local::LocalStore;
use crate::reward::Reward;
use crate::serve::running_http;

/// `oclagl run` as Agent Lightning v1's harness: where the rollout's model
/// calls and reward go, and the sidecar that routes them.
#[derive(Debug, Clone, Default, clap::Args)]
#[command(next_help_heading = "Agent Lightning v1 (harness)")]
pub struct AglArgs {
    /// The rollout's AGL v1 model URL (…/proxy/rollout/<id>/attempt/<a>/mode/<m>/openai/v1):
    /// set, every model call of the run goes there through the sidecar's
    /// LLM proxy. AGL's controller sets AGL_OPENAI_BASE_URL.
    #[arg(long, env = "OCLAGL_RUN_AGL_BASE_URL")]
    pub agl_base_url: Option<String>,
    /// Where the run's reward goes, as a v1 `reward` event. AGL's controller
    /// sets AGL_EVENT_URL.
    #[arg(long, env = "OCLAGL_RUN_AGL_EVENT_URL")]
    pub agl_event_url: Option<String>,
    /// The AGL server's key. AGL's controller sets AGL_KEY.
    #[arg(long, env = "OCLAGL_RUN_AGL_KEY", hide_env_values = true)]
    pub agl_key: Option<String>,
    /// The HTTP address of the `oclagl serve --llm-proxy` the gateway's
    /// model calls pass, where the run is bound [default: the sidecar
    /// holding --data-dir].
    #[arg(long, env = "OCLAGL_RUN_SIDECAR")]
    pub sidecar: Option<String>,
    /// That sidecar's --auth-token, when it has one.
    #[arg(long, env = "OCLAGL_AUTH_TOKEN", hide_env_values = true)]
    pub auth_token: Option<String>,
}

/// A run bound to an AGL v1 rollout.
pub struct Harness {
    base_url: String,
    event_url: Option<String>,
    /// `<server>/api/rollouts/<id>`, when the base URL has AGL's shape.
    rollout_url: Option<String>,
    key: Secret,
    sidecar: String,
    token: Secret,
    http: reqwest::Client,
}

fn nonempty(v: &Option<String>) -> Option<String> {
    v.as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

fn config(message: String) -> CollectError {
    CollectError::Config(message)
}

/// `<server>/api/rollouts/<id>` from `<server>/proxy/rollout/<id>/…`.
fn rollout_url(base_url: &str) -> Option<String> {
    let (server, rest) = base_url.split_once("/proxy/rollout/")?;
    let id = rest.split('/').next().filter(|id| !id.is_empty())?;
    Some(format!("{server}/api/rollouts/{id}"))
}

impl Harness {
    /// The harness `args` ask for: `None` without `--agl-base-url`.
    pub fn new(args: &AglArgs, local: &LocalStore) -> Result<Option<Harness>, CollectError> {
        let Some(base_url) = nonempty(&args.agl_base_url) else {
            if nonempty(&args.agl_event_url).is_some() {
                return Err(config(
                    "AGL_EVENT_URL is set without AGL_OPENAI_BASE_URL: set both (AGL's controller does), or neither".into(),
                ));
            }
            return Ok(None);
        };
        let base_url = crate::ingest::proxy::binding::parse_base_url(&base_url)
            .map_err(|e| config(format!("AGL_OPENAI_BASE_URL: {e}")))?;
        let sidecar = match nonempty(&args.sidecar) {
            Some(s) => s.trim_end_matches('/').to_string(),
            None => running_http(&local.data_dir)
                .map(|a| format!("http://{a}"))
                .ok_or_else(|| {
                    config(format!(
                        "the AGL harness binds the rollout at the `oclagl serve --llm-proxy` the gateway's model calls pass, and no sidecar holds {}: set --sidecar (OCLAGL_RUN_SIDECAR) to its HTTP address, or --data-dir to its data folder",
                        local.data_dir.display()
                    ))
                })?,
        };
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| config(format!("cannot set up the HTTP client: {e}")))?;
        let token = nonempty(&args.auth_token)
            .map(|t| t.split(',').next().unwrap_or_default().trim().to_string())
            .unwrap_or_default();
        Ok(Some(Harness {
            rollout_url: rollout_url(&base_url),
            base_url,
            event_url: nonempty(&args.agl_event_url),
            key: Secret::new(nonempty(&args.agl_key).unwrap_or_default()),
            sidecar,
            token: Secret::new(token),
            http,
        }))
    }

    fn to_agl(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match self.key.is_empty() {
            true => request,
            false => request.bearer_auth(self.key.expose()),
        }
    }

    /// Checks that AGL knows the rollout and takes the key, so a wrong
    /// `AGL_KEY` or rollout is one clear line before the gateway runs.
    pub async fn check(&self) -> Result<(), CollectError> {
        let Some(url) = &self.rollout_url else {
            return Ok(());
        };
        let answer = self
            .to_agl(self.http.get(url))
            .send()
            .await
            .map_err(|e| CollectError::Agl(format!("cannot reach AGL at {url}: {e}")))?;
        match answer.status().as_u16() {
            200..=299 => Ok(()),
            401 | 403 => Err(CollectError::Agl(format!(
                "AGL refused the key ({}) at {url}: check AGL_KEY (--agl-key)",
                answer.status()
            ))),
            404 => Err(CollectError::Agl(format!(
                "AGL does not know the rollout of AGL_OPENAI_BASE_URL ({url} answered 404): was it deleted, or the AGL server restarted?"
            ))),
            _ => Err(CollectError::Agl(format!(
                "AGL answered {} at {url}",
                answer.status()
            ))),
        }
    }

    fn to_sidecar(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match self.token.is_empty() {
            true => request,
            false => request.bearer_auth(self.token.expose()),
        }
    }

    fn binding_url(&self, trace: [u8; 16]) -> String {
        format!("{}/v1/agl/bindings/{}", self.sidecar, hex::encode(trace))
    }

    /// Binds `trace` to the rollout at the sidecar.
    pub async fn bind(&self, trace: [u8; 16]) -> Result<(), String> {
        let body = json!({"base_url": self.base_url, "key": self.key.expose()});
        let url = self.binding_url(trace);
        let answer = self
            .to_sidecar(self.http.put(&url).json(&body))
            .send()
            .await
            .map_err(|e| {
                format!(
                    "cannot bind the rollout to AGL at the sidecar {} ({e}): is `oclagl serve --llm-proxy` running there? set --sidecar",
                    self.sidecar
                )
            })?;
        let status = answer.status();
        if status.is_success() {
            return Ok(());
        }
        let text = answer.text().await.unwrap_or_default();
        let hint = match status.as_u16() {
            401 => ": check --auth-token (OCLAGL_AUTH_TOKEN)",
            _ => "",
        };
        Err(format!(
            "the sidecar {} refused to bind the rollout ({status}){hint} {text}",
            self.sidecar
        ))
    }

    /// After the run: drops the binding (a failure is only logged: a
    /// binding left behind routes nothing but this trace), and posts the
    /// primary reward, if any, as a v1 `reward` event.
    pub async fn finish(
        &self,
        trace: Option<[u8; 16]>,
        rewards: &[Reward],
    ) -> Result<(), CollectError> {
        if let Some(trace) = trace {
            let unbound = self
                .to_sidecar(self.http.delete(self.binding_url(trace)))
                .send()
                .await;
            if let Err(e) = unbound.and_then(reqwest::Response::error_for_status) {
                tracing::warn!(error = %e, "cannot drop the rollout's AGL binding");
            }
        }
        let (Some(reward), Some(url)) = (rewards.first(), &self.event_url) else {
            return Ok(());
        };
        let event = json!({"event_type": "reward",
            "data": {"value": reward.value, "source": "oclagl", "reason": reward.name}});
        let failed = |why: String| {
            CollectError::Agl(format!("cannot post the reward to AGL at {url}: {why}"))
        };
        let answer = self
            .to_agl(self.http.post(url).json(&event))
            .send()
            .await
            .map_err(|e| failed(e.to_string()))?;
        let status = answer.status();
        if !status.is_success() {
            let text = answer.text().await.unwrap_or_default();
            return Err(failed(format!("{status} {text}")));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rollout_is_found_from_its_model_url() {
        assert_eq!(
            rollout_url("http://agl:8080/proxy/rollout/r-1/attempt/0/mode/train/openai/v1")
                .as_deref(),
            Some("http://agl:8080/api/rollouts/r-1")
        );
        assert_eq!(rollout_url("http://vllm:8000/v1"), None);
        let local = LocalStore {
            data_dir: "/nonexistent-oclagl".into(),
            traces_dir: "/nonexistent-oclagl/traces".into(),
        };
        let none = Harness::new(&AglArgs::default(), &local).unwrap();
        assert!(none.is_none());
        let only_events = AglArgs {
            agl_event_url: Some("http://agl/api/rollouts/r/attempt/0/events".into()),
            ..AglArgs::default()
        };
        assert!(Harness::new(&only_events, &local).is_err());
        let no_sidecar = AglArgs {
            agl_base_url: Some("http://agl/proxy/rollout/r/attempt/0/mode/train/openai/v1".into()),
            ..AglArgs::default()
        };
        let err = Harness::new(&no_sidecar, &local).err().unwrap().to_string();
        assert!(err.contains("--sidecar"), "{err}");
    }
}
