//! Which rollouts become rows: reward, status, time, session and model
//! filters, all decided before a conversation is converted; and `--dedupe`.

use std::collections::HashSet;
use std::hash::{DefaultHasher, Hasher};

use super::parse_reward;
use super::read::Rollout;
use super::stats::Dropped;
use crate::semconv::ROLLOUT_STATUSES;

/// The filters of one export (empty lists and `None` let everything pass),
/// also `export-sft`'s flags.
#[derive(Debug, Clone, Default, PartialEq, clap::Args, serde::Serialize, serde::Deserialize)]
#[command(next_help_heading = "Filters")]
pub struct Filter {
    /// Keep rollouts whose primary reward is at least this (AGL reward
    /// spans); rollouts without a reward are dropped.
    #[arg(long, env = "OCLAGL_EXPORT_MIN_REWARD", value_name = "REWARD", value_parser = parse_reward)]
    pub min_reward: Option<f64>,
    /// Keep rollouts with these statuses (succeeded, failed, running).
    #[arg(
        long,
        env = "OCLAGL_EXPORT_STATUS",
        value_delimiter = ',',
        value_name = "STATUS",
        value_parser = clap::builder::PossibleValuesParser::new(ROLLOUT_STATUSES)
    )]
    pub status: Vec<String>,
    /// Also export rollouts whose root span never arrived (status
    /// `running`: their spans were not all exported, or they are still
    /// going); by default they are dropped, as `--stats` counts. Naming
    /// `running` in --status keeps them too.
    #[arg(long, env = "OCLAGL_EXPORT_INCLUDE_INCOMPLETE")]
    pub include_incomplete: bool,
    /// Keep rollouts that started at or after this time (2026-02-12,
    /// 2026-02-12T16:07:13Z or Unix seconds).
    #[arg(long, env = "OCLAGL_EXPORT_SINCE", value_name = "TIME", value_parser = parse_time)]
    pub since: Option<f64>,
    /// Keep rollouts that started before this time.
    #[arg(long, env = "OCLAGL_EXPORT_UNTIL", value_name = "TIME", value_parser = parse_time)]
    pub until: Option<f64>,
    /// Keep rollouts of these sessions (session key; repeatable). A key
    /// also selects the sessions named after it, one per rollout
    /// (`<key>:ro-…`, what collect and run give each rollout).
    #[arg(long = "session", env = "OCLAGL_EXPORT_SESSION", value_name = "KEY")]
    pub sessions: Vec<String>,
    /// Keep rollouts whose exported call used one of these models.
    #[arg(long = "model", env = "OCLAGL_EXPORT_MODEL", value_name = "MODEL")]
    pub models: Vec<String>,
}

fn listed(allowed: &[String], value: Option<&str>) -> bool {
    allowed.is_empty() || value.is_some_and(|v| allowed.iter().any(|a| a == v))
}

impl Filter {
    /// Why `r` does not pass, if it does not. Rollouts lacking what a filter
    /// looks at (no reward, no time, no model…) do not pass it.
    pub fn reject(&self, r: &Rollout) -> Option<Dropped> {
        if !self.include_incomplete
            && r.incomplete()
            && !self
                .status
                .iter()
                .any(|s| Some(s.as_str()) == r.status.as_deref())
        {
            return Some(Dropped::Incomplete);
        }
        if !listed(&self.status, r.status.as_deref()) {
            return Some(Dropped::Status);
        }
        if self.since.is_some() || self.until.is_some() {
            let Some(t) = r.start_time else {
                return Some(Dropped::Time);
            };
            if self.since.is_some_and(|s| t < s) || self.until.is_some_and(|u| t >= u) {
                return Some(Dropped::Time);
            }
        }
        let of_session = |key: &String| {
            r.session.as_deref().is_some_and(|s| {
                s.strip_prefix(key.as_str())
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with(":ro-"))
            })
        };
        if !self.sessions.is_empty() && !self.sessions.iter().any(of_session) {
            return Some(Dropped::Session);
        }
        if !listed(&self.models, r.model.as_deref()) {
            return Some(Dropped::Model);
        }
        if let Some(min) = self.min_reward {
            match r.reward {
                None => return Some(Dropped::NoReward),
                Some(x) if x.is_nan() || x < min => return Some(Dropped::LowReward),
                Some(_) => {}
            }
        }
        None
    }
}

/// `--dedupe`: remembers a 128-bit fingerprint of each row written.
#[derive(Debug, Default)]
pub struct Dedupe {
    seen: HashSet<u128>,
}

impl Dedupe {
    /// Is this the first time `row` is seen?
    pub fn first(&mut self, row: &[u8]) -> bool {
        let half = |salt: u8| {
            let mut h = DefaultHasher::new();
            h.write_u8(salt);
            h.write(row);
            h.finish()
        };
        self.seen
            .insert((u128::from(half(0)) << 64) | u128::from(half(1)))
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn number<T: std::str::FromStr>(s: &str, len: usize) -> Option<T> {
    (s.len() == len && s.bytes().all(|b| b.is_ascii_digit()))
        .then(|| s.parse().ok())
        .flatten()
}

/// `--since`/`--until`: `2026-02-12`, `2026-02-12T16:07:13Z` (RFC 3339, any
/// offset, seconds and fraction optional; no offset means UTC), or Unix
/// seconds. Returns Unix seconds.
pub fn parse_time(s: &str) -> Result<f64, String> {
    let s = s.trim();
    let bad =
        || format!("{s:?} is not a time (try 2026-02-12, 2026-02-12T16:07:13Z or Unix seconds)");
    if !s.contains('-') {
        return s
            .parse::<f64>()
            .ok()
            .filter(|t| t.is_finite())
            .ok_or_else(bad);
    }
    let (date, time) = match s.split_once(['T', 't', ' ']) {
        Some((d, t)) => (d, Some(t)),
        None => (s, None),
    };
    let mut parts = date.split('-');
    let (Some(y), Some(m), Some(d), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad());
    };
    let (y, m, d): (i64, u32, u32) = (
        number(y, 4).ok_or_else(bad)?,
        number(m, 2).ok_or_else(bad)?,
        number(d, 2).ok_or_else(bad)?,
    );
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return Err(bad());
    }
    let mut secs = days_from_civil(y, m, d) as f64 * 86_400.0;
    if let Some(time) = time {
        let (clock, offset) = if let Some(c) = time.strip_suffix(['Z', 'z']) {
            (c, 0.0)
        } else if let Some(i) = time.rfind(['+', '-']) {
            let (c, o) = time.split_at(i);
            let sign = if o.starts_with('-') { -1.0 } else { 1.0 };
            let (oh, om) = o[1..].split_once(':').ok_or_else(bad)?;
            let (oh, om): (u32, u32) = (
                number(oh, 2).ok_or_else(bad)?,
                number(om, 2).ok_or_else(bad)?,
            );
            (c, sign * f64::from(oh * 3600 + om * 60))
        } else {
            (time, 0.0)
        };
        let mut hms = clock.split(':');
        let h: u32 = hms.next().and_then(|h| number(h, 2)).ok_or_else(bad)?;
        let mi: u32 = hms.next().and_then(|m| number(m, 2)).ok_or_else(bad)?;
        let sec: f64 = match hms.next() {
            None => 0.0,
            Some(x) => x
                .parse()
                .ok()
                .filter(|v| (0.0..61.0).contains(v))
                .ok_or_else(bad)?,
        };
        if hms.next().is_some() || h > 23 || mi > 59 {
            return Err(bad());
        }
        secs += f64::from(h * 3600 + mi * 60) + sec - offset;
    }
    Ok(secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rollout() -> Rollout {
        Rollout {
            id: "ro-1".into(),
            status: Some("succeeded".into()),
            start_time: Some(1_770_912_433.0),
            session: Some("agent:main:main".into()),
            model: Some("m-1".into()),
            reward: Some(0.5),
            ..Rollout::default()
        }
    }

    #[test]
    fn incomplete_rollouts_are_dropped_unless_asked_for() {
        let running = Rollout {
            status: Some("running".into()),
            ..rollout()
        };
        assert_eq!(
            Filter::default().reject(&running),
            Some(Dropped::Incomplete)
        );
        let asked = Filter {
            include_incomplete: true,
            ..Default::default()
        };
        assert_eq!(asked.reject(&running), None);
        let named = Filter {
            status: vec!["running".into()],
            ..Default::default()
        };
        assert_eq!(named.reject(&running), None);
        // A file that says no status is not taken for an incomplete one.
        let unsaid = Rollout {
            status: None,
            ..rollout()
        };
        assert_eq!(Filter::default().reject(&unsaid), None);
    }

    #[test]
    fn each_filter_rejects_with_its_reason() {
        let r = rollout();
        assert_eq!(Filter::default().reject(&r), None);
        let cases = [
            (
                Filter {
                    status: vec!["failed".into()],
                    ..Default::default()
                },
                Dropped::Status,
            ),
            (
                Filter {
                    since: Some(1_770_912_434.0),
                    ..Default::default()
                },
                Dropped::Time,
            ),
            (
                Filter {
                    until: Some(1_770_912_433.0),
                    ..Default::default()
                },
                Dropped::Time,
            ),
            (
                Filter {
                    sessions: vec!["other".into()],
                    ..Default::default()
                },
                Dropped::Session,
            ),
            (
                Filter {
                    models: vec!["m-2".into()],
                    ..Default::default()
                },
                Dropped::Model,
            ),
            (
                Filter {
                    min_reward: Some(0.6),
                    ..Default::default()
                },
                Dropped::LowReward,
            ),
        ];
        for (filter, why) in cases {
            assert_eq!(filter.reject(&r), Some(why), "{filter:?}");
        }
        let passing = Filter {
            min_reward: Some(0.5),
            status: vec!["failed".into(), "succeeded".into()],
            since: Some(1_770_912_433.0),
            until: Some(1_770_912_434.0),
            sessions: vec!["agent:main:main".into()],
            models: vec!["m-1".into()],
            include_incomplete: false,
        };
        assert_eq!(passing.reject(&r), None);
        // A session key selects the per-rollout sessions named after it,
        // not other sessions that merely start the same way.
        for (session, kept) in [
            ("agent:main:main:ro-0123456789ab", true),
            ("agent:main:mainline", false),
            ("agent:main:main:other", false),
        ] {
            let r = Rollout {
                session: Some(session.into()),
                ..rollout()
            };
            assert_eq!(passing.reject(&r).is_none(), kept, "{session}");
        }
        let unrewarded = Rollout {
            reward: None,
            ..rollout()
        };
        assert_eq!(passing.reject(&unrewarded), Some(Dropped::NoReward));
        let timeless = Rollout {
            start_time: None,
            ..rollout()
        };
        assert_eq!(passing.reject(&timeless), Some(Dropped::Time));
    }

    #[test]
    fn dedupe_remembers_rows() {
        let mut d = Dedupe::default();
        assert!(d.first(b"{\"messages\":[]}"));
        assert!(d.first(b"{\"messages\":[1]}"));
        assert!(!d.first(b"{\"messages\":[]}"));
    }

    #[test]
    fn times() {
        assert_eq!(parse_time("1970-01-01"), Ok(0.0));
        assert_eq!(parse_time("2026-02-12T16:07:13Z"), Ok(1_770_912_433.0));
        assert_eq!(parse_time("2026-02-12T17:07:13+01:00"), Ok(1_770_912_433.0));
        assert_eq!(parse_time("2026-02-12T16:07"), Ok(1_770_912_420.0));
        assert_eq!(parse_time("2026-02-12T16:07:13.5Z"), Ok(1_770_912_433.5));
        assert_eq!(parse_time("2000-02-29"), Ok(951_782_400.0));
        assert_eq!(parse_time("1770912433"), Ok(1_770_912_433.0));
        for bad in [
            "yesterday",
            "2026-13-01",
            "2026-2-1",
            "2026-02-12T25:00",
            "2026-02-12T10:00+0100",
            "",
        ] {
            assert!(parse_time(bad).is_err(), "{bad}");
        }
    }
}
