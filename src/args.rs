//! The command line's conventions, and parsers for values shared by
//! several commands.
//!
//! # Environment twins
//!
//! Every flag of every command can also be set from the environment
//! (positional arguments cannot: they are what one invocation is about).
//! The variable is `OCLAGL_` and the long flag in SCREAMING_SNAKE_CASE,
//! prefixed with the command's first word unless the flag is shared:
//!
//! - `OCLAGL_<FLAG>` for the sidecar's settings (`oclagl serve`, which
//!   deployments configure this way) and for the flags several commands
//!   share with one meaning: the store and trace folders, and the gateway
//!   connection (`--gateway-url`, `--timeout`, `--retries`…). One variable
//!   then sets the flag for every command: `OCLAGL_DATA_DIR`.
//! - `OCLAGL_<COMMAND>_<FLAG>` for every other flag, which belongs to one
//!   command: `export-sft --out` reads `OCLAGL_EXPORT_OUT`, `ls --json`
//!   `OCLAGL_LS_JSON`, `bridge --max-body` `OCLAGL_BRIDGE_MAX_BODY`. So no
//!   variable means one thing to one command and another to the next.
//!
//! Where a flag's variable used to have another name (the seed's
//! `GATEWAY_BASE_URL`, OpenTelemetry's `OTEL_EXPORTER_OTLP_ENDPOINT`…),
//! that name is still read when the twin is unset: [`FALLBACK_ENV`],
//! applied by [`with_fallback_env`]. Secrets are declared with
//! `hide_env_values`, so `--help` never prints them. `tests` in `main.rs`
//! walk every command and fail on a flag that breaks these rules.
//!
//! # Help sections
//!
//! Related flags live in a flattened `clap::Args` struct with its own
//! `next_help_heading`, so `--help` reads in sections; a group several
//! commands share is defined once (the gateway connection in
//! [`crate::collect::GatewayArgs`], the local store in
//! [`crate::local::LocalStore`]).

use std::ffi::OsStr;
use std::time::Duration;

use clap::{Arg, Command};

/// Older names of some twins, read when the twin itself is unset:
/// `(twin, older name)`. The seed's variables keep working, and so does
/// the standard `OTEL_EXPORTER_OTLP_ENDPOINT` for `oclagl reward`.
pub const FALLBACK_ENV: &[(&str, &str)] = &[
    ("OCLAGL_GATEWAY_URL", "GATEWAY_BASE_URL"),
    ("OCLAGL_INTERNAL_SECRET", "INTERNAL_SECRET"),
    ("OCLAGL_TOKEN", "OPENCLAW_GATEWAY_TOKEN"),
    ("OCLAGL_SESSION_KEY", "SESSION_KEY"),
    ("OCLAGL_AGENT", "OPENCLAW_AGENT_ID"),
    ("OCLAGL_OPENCLAW_BIN", "OPENCLAW_BIN"),
    ("OCLAGL_COLLECT_CONCURRENCY", "MAX_CONCURRENT"),
    ("OCLAGL_SCORE", "OCLAGL_COLLECT_SCORE"),
    ("OCLAGL_SCORE_CMD", "OCLAGL_COLLECT_SCORE_CMD"),
    ("OCLAGL_RUN_AGL_BASE_URL", "AGL_OPENAI_BASE_URL"),
    ("OCLAGL_RUN_AGL_EVENT_URL", "AGL_EVENT_URL"),
    ("OCLAGL_RUN_AGL_KEY", "AGL_KEY"),
    (
        "OCLAGL_BRIDGE_ALLOW_GATEWAY",
        "OCLAGL_BRIDGE_ALLOW_GATEWAYS",
    ),
    ("OCLAGL_REWARD_ATTEMPT", "OCLAGL_ATTEMPT_ID"),
    ("OCLAGL_REWARD_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"),
];

/// `cmd` and its subcommands with [`FALLBACK_ENV`] applied: a flag whose
/// twin is unset reads the older name instead, and its help names both.
/// Call it on the command before parsing.
pub fn with_fallback_env(cmd: Command) -> Command {
    with_fallbacks(cmd, &|name| std::env::var_os(name).is_some())
}

fn with_fallbacks(cmd: Command, is_set: &dyn Fn(&str) -> bool) -> Command {
    cmd.mut_args(|arg| fallback(arg, is_set))
        .mut_subcommands(|sub| with_fallbacks(sub, is_set))
}

fn fallback(arg: Arg, is_set: &dyn Fn(&str) -> bool) -> Arg {
    let Some(&(twin, older)) = arg.get_env().and_then(|env| {
        FALLBACK_ENV
            .iter()
            .find(|(twin, _)| env == OsStr::new(twin))
    }) else {
        return arg;
    };
    let note = |help: &clap::builder::StyledStr| format!("{help} [fallback env: {older}]");
    let short = arg.get_help().map(note);
    let long = arg.get_long_help().map(note);
    let mut arg = arg;
    if let Some(help) = short {
        arg = arg.help(help);
    }
    if let Some(help) = long {
        arg = arg.long_help(help);
    }
    if !is_set(twin) && is_set(older) {
        arg = arg.env(older);
    }
    arg
}

/// `500ms`, `2s`, `1.5s`, `10m`, `1h`, `2d`; a bare number means seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (try 500ms, 2s, 10m, 1h)"))?;
    let scale = match unit.trim() {
        "ms" => 0.001,
        "" | "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        "d" => 86_400.0,
        other => {
            return Err(format!(
                "unknown duration unit {other:?} (use ms, s, m, h or d)"
            ))
        }
    };
    let secs = value * scale;
    if !(0.0..=1e9).contains(&secs) {
        return Err(format!("{s:?} is out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// `16MiB`, `512KiB`, `1GiB`, `1000000` (bytes); `MB`/`KB`/`GB` are decimal.
pub fn parse_size(s: &str) -> Result<usize, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let value: usize = number
        .parse()
        .map_err(|_| format!("{s:?} is not a size (try 16MiB)"))?;
    let scale: usize = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kib" | "k" => 1 << 10,
        "mib" | "m" => 1 << 20,
        "gib" | "g" => 1 << 30,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        other => return Err(format!("unknown size unit {other:?} (use KiB, MiB or GiB)")),
    };
    value
        .checked_mul(scale)
        .ok_or_else(|| format!("{s:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd() -> Command {
        Command::new("oclagl").subcommand(
            Command::new("collect").arg(
                Arg::new("url")
                    .long("gateway-url")
                    .env("OCLAGL_GATEWAY_URL")
                    .help("Gateway base URL"),
            ),
        )
    }

    fn url_env(cmd: &Command) -> (String, String) {
        let sub = cmd.find_subcommand("collect").unwrap();
        let arg = sub.get_arguments().find(|a| a.get_id() == "url").unwrap();
        (
            arg.get_env().unwrap().to_string_lossy().into_owned(),
            arg.get_help().unwrap().to_string(),
        )
    }

    #[test]
    fn older_names_are_read_only_when_the_twin_is_unset() {
        let older_only = with_fallbacks(cmd(), &|name| name == "GATEWAY_BASE_URL");
        let (env, help) = url_env(&older_only);
        assert_eq!(env, "GATEWAY_BASE_URL");
        assert_eq!(help, "Gateway base URL [fallback env: GATEWAY_BASE_URL]");
        let both = with_fallbacks(cmd(), &|_| true);
        assert_eq!(url_env(&both).0, "OCLAGL_GATEWAY_URL");
        let neither = with_fallbacks(cmd(), &|_| false);
        assert_eq!(url_env(&neither).0, "OCLAGL_GATEWAY_URL");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("3 weeks").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("16MiB"), Ok(16 << 20));
        assert_eq!(parse_size("10kb"), Ok(10_000));
        assert_eq!(parse_size("42"), Ok(42));
        assert!(parse_size("99999999999999999999GiB").is_err());
        assert!(parse_size("-1").is_err());
    }
}
