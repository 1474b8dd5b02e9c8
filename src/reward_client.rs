//! `oclagl reward`: a client of the sidecar's reward endpoint
//! (`POST /v1/rollouts/<id>/reward`), on the running sidecar or on an
//! in-process one over the local store.

use std::time::Duration;

use crate::local::{LocalSidecar, LocalStore};
use crate::reward::{validate, InvalidReward, Reward, RewardBody, Rewarded, PRIMARY};
use crate::serve::{running_http, ServeError};
use crate::store::StoreError;
use crate::util::percent::percent_encode;

/// Why `oclagl reward` failed.
#[derive(Debug, thiserror::Error)]
pub enum RewardError {
    /// The rewards given are not valid (no value, a name twice, not finite…).
    #[error(transparent)]
    Invalid(#[from] InvalidReward),
    /// Neither the store nor the sidecar knows the rollout.
    #[error("rollout {id} not found in {place}")]
    NotFound {
        /// The rollout.
        id: String,
        /// Where it was looked for.
        place: String,
    },
    /// No sidecar answers at the endpoint.
    #[error("cannot reach the sidecar at {url} ({reason}): is `oclagl serve` running there? set OTEL_EXPORTER_OTLP_ENDPOINT")]
    Unreachable {
        /// The endpoint.
        url: String,
        /// The connection error.
        reason: String,
    },
    /// The sidecar answered with an error.
    #[error("the sidecar at {url} refused the reward ({status}): {message}")]
    Refused {
        /// The endpoint.
        url: String,
        /// The HTTP status.
        status: u16,
        /// The sidecar's message.
        message: String,
    },
    /// The in-process sidecar over the local store could not start.
    #[error("cannot open the local store")]
    Local(#[from] ServeError),
}

/// Parses `oclagl reward` values: each `VALUE` or `NAME=VALUE`. An unnamed
/// first value is named `first_name` (or `primary`, AGL's name for a scalar
/// reward); later values must be named.
pub fn parse_rewards(
    values: &[String],
    first_name: Option<&str>,
) -> Result<Vec<Reward>, InvalidReward> {
    let mut out = Vec::with_capacity(values.len());
    for (i, v) in values.iter().enumerate() {
        let (name, number) = match v.split_once('=') {
            Some((n, x)) => (n.trim().to_string(), x),
            None if i == 0 => (first_name.unwrap_or(PRIMARY).to_string(), v.as_str()),
            None => {
                return Err(InvalidReward(format!(
                    "{v:?}: name every reward after the first (NAME=VALUE)"
                )))
            }
        };
        let value = number.trim().parse::<f64>().map_err(|_| {
            InvalidReward(format!("{v:?} is not a reward (a number, or NAME=NUMBER)"))
        })?;
        out.push(Reward { name, value });
    }
    validate(&out)?;
    Ok(out)
}

/// `oclagl reward` options.
#[derive(Debug, Clone, clap::Args)]
pub struct RewardArgs {
    /// The rollout to reward (`ro-…`).
    pub rollout_id: String,
    /// Rewards: `VALUE` or `NAME=VALUE`; the first is the primary one.
    #[arg(required = true, value_name = "REWARD", allow_negative_numbers = true)]
    pub rewards: Vec<String>,
    /// Name of the first reward when it is given as a bare number [default: primary].
    #[arg(long, env = "OCLAGL_REWARD_NAME")]
    pub name: Option<String>,
    /// The attempt rewarded [default: the rollout's latest attempt].
    #[arg(long, env = "OCLAGL_REWARD_ATTEMPT")]
    pub attempt: Option<String>,
    /// The running sidecar (its OTLP/HTTP address). Unset: the local store
    /// (--data-dir) in-process, or the sidecar on 127.0.0.1:4318 when
    /// `oclagl serve` holds that store.
    #[arg(long, env = "OCLAGL_REWARD_ENDPOINT")]
    pub endpoint: Option<String>,
    /// The store rewarded in-process when no endpoint is given.
    #[command(flatten)]
    pub local: LocalStore,
}

/// Where `oclagl reward` goes when a sidecar holds the local store.
pub const DEFAULT_ENDPOINT: &str = "http://127.0.0.1:4318";

/// `oclagl reward`: sends the rewards to the sidecar's endpoint.
pub async fn send(args: &RewardArgs) -> Result<Rewarded, RewardError> {
    let rewards = parse_rewards(&args.rewards, args.name.as_deref())?;
    let body = RewardBody {
        rewards: Some(rewards),
        value: None,
        name: None,
        attempt_id: args.attempt.clone(),
    };
    if let Some(endpoint) = args.endpoint.as_deref().filter(|e| !e.trim().is_empty()) {
        return post(endpoint, &args.rollout_id, &body, endpoint).await;
    }
    if !args.local.data_dir.exists() {
        // No store, no rollout: say so before the sidecar creates folders.
        return Err(RewardError::NotFound {
            id: args.rollout_id.clone(),
            place: format!(
                "{}: there is no store there (pass --data-dir, or --endpoint for a running sidecar)",
                args.local.data_dir.display()
            ),
        });
    }
    match LocalSidecar::start(&args.local).await {
        Ok(sidecar) => {
            let place = format!("the store {}", args.local.data_dir.display());
            let result = post(
                &format!("http://{}", sidecar.http),
                &args.rollout_id,
                &body,
                &place,
            )
            .await;
            // Stopping writes the rollout's trace file with the reward.
            let stopped = sidecar.stop().await;
            let rewarded = result?;
            stopped?;
            Ok(rewarded)
        }
        Err(ServeError::Store(StoreError::Locked { .. })) => {
            let running = running_http(&args.local.data_dir)
                .map_or_else(|| DEFAULT_ENDPOINT.to_string(), |a| format!("http://{a}"));
            post(&running, &args.rollout_id, &body, &running).await
        }
        Err(e) => Err(e.into()),
    }
}

async fn post(
    base: &str,
    rollout_id: &str,
    body: &RewardBody,
    place: &str,
) -> Result<Rewarded, RewardError> {
    let url = format!(
        "{}/v1/rollouts/{}/reward",
        base.trim_end_matches('/'),
        percent_encode(rollout_id)
    );
    let unreachable = |e: reqwest::Error| RewardError::Unreachable {
        url: base.to_string(),
        reason: e.to_string(),
    };
    let response = reqwest::Client::new()
        .post(&url)
        .timeout(Duration::from_secs(30))
        .json(body)
        .send()
        .await
        .map_err(unreachable)?;
    let status = response.status();
    let text = response.text().await.map_err(unreachable)?;
    if status.is_success() {
        return serde_json::from_str(&text).map_err(|e| RewardError::Refused {
            url: url.clone(),
            status: status.as_u16(),
            message: format!("unexpected answer ({e}): {text}"),
        });
    }
    let message = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_string))
        .unwrap_or(text);
    if status == reqwest::StatusCode::NOT_FOUND && message.contains(rollout_id) {
        return Err(RewardError::NotFound {
            id: rollout_id.to_string(),
            place: place.to_string(),
        });
    }
    Err(RewardError::Refused {
        url,
        status: status.as_u16(),
        message,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reward::tests::r;

    #[test]
    fn values_parse_with_names_and_the_first_is_primary() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(
            parse_rewards(&s(&["1.0"]), None).unwrap(),
            vec![r("primary", 1.0)]
        );
        assert_eq!(
            parse_rewards(&s(&["1", "brevity=0.5"]), Some("exact_match")).unwrap(),
            vec![r("exact_match", 1.0), r("brevity", 0.5)]
        );
        assert_eq!(
            parse_rewards(&s(&["a=-2"]), None).unwrap(),
            vec![r("a", -2.0)]
        );
        for bad in [
            &["x"][..],
            &["1", "2"],
            &["nan"],
            &["a=1", "a=2"],
            &["=1"],
            &[],
        ] {
            assert!(parse_rewards(&s(bad), None).is_err(), "{bad:?}");
        }
    }
}
