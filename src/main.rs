//! The `oclagl` command: parses arguments and runs the library's commands.

use anyhow::Context;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

/// Decoding OTLP allocates many small strings and vectors from several
/// threads at once; mimalloc does that with far less contention than glibc's
/// allocator (see benches/run-ingest.sh).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "oclagl",
    version,
    about = "Turn OpenClaw agent runs into Agent Lightning rollouts and training data"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the sidecar: OTLP receivers, durable store and AGL trace files.
    Serve(oclagl::serve::ServeArgs),
    /// Run every prompt of a file through the gateway, one rollout each.
    Collect(oclagl::collect::CollectArgs),
    /// Run one task through the gateway as a rollout and print the reply.
    Run(oclagl::collect::RunArgs),
    /// Serve web UI chat for the fork gateway (gateway.agl.bridgeUrl), one rollout per message.
    Bridge(oclagl::bridge::BridgeArgs),
    /// Import OpenClaw's recorded runs (trajectory bundles, legacy files, or --sessions) as rollouts.
    Import(oclagl::import::ImportArgs),
    /// Build an SFT dataset (JSONL) from trace files or the store.
    ExportSft(oclagl::export::ExportArgs),
    /// Reward a rollout (an AGL reward span): `oclagl reward ro-… 1.0 --name exact_match`.
    Reward(oclagl::reward_client::RewardArgs),
    /// List rollouts: status, timing, span/model/tool counts, reward, prompt.
    Ls(oclagl::inspect::ls::LsArgs),
    /// Show one rollout's span tree with timings, model and tool calls, rewards.
    Show(oclagl::inspect::show::ShowArgs),
}

impl Cli {
    /// Parses the command line and the environment, reading the older
    /// names of variables whose twin is unset (`oclagl::args::FALLBACK_ENV`);
    /// exits with clap's message on an error.
    fn from_env() -> Cli {
        let matches = oclagl::args::with_fallback_env(Cli::command()).get_matches();
        Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.format(&mut Cli::command()).exit())
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

fn main() {
    let code = match real_main() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("oclagl: {e:#}");
            2
        }
    };
    exit(code)
}

/// Ends the process without the C library's exit handlers. Every command
/// has made its output durable before it returns; what the handlers would
/// still do is the allocator's cleanup, which hands each free page back to
/// the system one `madvise` at a time (about a hundred calls after a
/// collect), just before the system takes the whole address space back.
fn exit(code: i32) -> ! {
    use std::io::Write;
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    // SAFETY: _exit ends the process at once; nothing runs after it.
    unsafe { libc::_exit(code) }
}

/// Transparent huge pages pay off for the long-running sidecar, not for the
/// commands that drive the gateway: the allocator asks for them, and every
/// 2 MiB page a thread first touches is then zeroed whole. Measured with
/// `benches/collect.rs` at concurrency 1, 100 prompts: 1.45 ms of CPU per
/// rollout without them, 1.62-1.78 ms with.
fn without_huge_pages() {
    // SAFETY: prctl with PR_SET_THP_DISABLE takes plain integers and only
    // sets a flag of this process.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}

fn real_main() -> anyhow::Result<i32> {
    let cli = Cli::from_env();
    if matches!(
        cli.command,
        Command::Collect(_) | Command::Run(_) | Command::Bridge(_)
    ) {
        without_huge_pages();
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("OCLAGL_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    // The command runs as a task, on the workers, rather than on this thread:
    // its wake-ups (a rollout answered, a permit back) then land on a thread
    // that is usually awake already.
    let outcome = runtime.block_on(runtime.spawn(run(cli.command)));
    // A command returns once what it wrote is durable; the runtime's idle
    // threads need not be waited for.
    runtime.shutdown_background();
    match outcome {
        Ok(result) => result,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => Err(anyhow::anyhow!("the command was cancelled: {e}")),
    }
}

/// A command whose standard output was closed (`oclagl show … | head`)
/// ends quietly with 0, as other command-line tools do; other errors get
/// `context`.
fn quiet_if_stdout_closed(e: oclagl::inspect::InspectError, context: &str) -> anyhow::Result<i32> {
    match &e {
        oclagl::inspect::InspectError::Write(io) if io.kind() == std::io::ErrorKind::BrokenPipe => {
            Ok(0)
        }
        _ => Err(anyhow::Error::new(e).context(context.to_string())),
    }
}

/// A command's summary: its line on stderr, and with `json` the whole of
/// it on stdout.
fn report(line: &str, json: bool, summary: &impl serde::Serialize) -> anyhow::Result<()> {
    eprintln!("{line}");
    if json {
        println!("{}", serde_json::to_string_pretty(summary)?);
    }
    Ok(())
}

async fn run(command: Command) -> anyhow::Result<i32> {
    match command {
        Command::Serve(args) => oclagl::serve::serve(args, shutdown_signal(), |_| {})
            .await
            .context("oclagl serve failed")
            .map(|()| 0),
        Command::Collect(args) => {
            let json = args.json;
            let summary = oclagl::collect::collect(args, shutdown_signal()).await?;
            report(&summary.line(), json, &summary)?;
            Ok(if summary.interrupted {
                130
            } else {
                i32::from(summary.failed + summary.score_errors > 0)
            })
        }
        Command::Import(args) => {
            let json = args.json;
            let summary = oclagl::import::run(args, shutdown_signal()).await?;
            for line in &summary.skipped {
                eprintln!("oclagl import: skipped {line}");
            }
            report(&summary.line(), json, &summary)?;
            Ok(if summary.interrupted {
                130
            } else {
                i32::from(!summary.skipped.is_empty())
            })
        }
        Command::ExportSft(args) => Ok(oclagl::export::run_cli(args, shutdown_signal()).await?),
        Command::Bridge(args) => oclagl::bridge::run(args, shutdown_signal())
            .await
            .context("oclagl bridge failed")
            .map(|()| 0),
        Command::Reward(args) => {
            let done = oclagl::reward_client::send(&args)
                .await
                .context("oclagl reward failed")?;
            let rewards: Vec<String> = done
                .rewards
                .iter()
                .map(|r| format!("{}={}", r.name, r.value))
                .collect();
            eprintln!(
                "rewarded {} (attempt {}): {}",
                done.rollout_id,
                done.attempt_id,
                rewards.join(" ")
            );
            Ok(0)
        }
        Command::Ls(args) => match oclagl::inspect::ls::run(&args) {
            Ok(0) if !args.output.json => {
                eprintln!("no rollouts match");
                Ok(0)
            }
            Ok(_) => Ok(0),
            Err(e) => quiet_if_stdout_closed(e, "oclagl ls failed"),
        },
        Command::Show(args) => match oclagl::inspect::show::run(&args) {
            Ok(()) => Ok(0),
            Err(e) => quiet_if_stdout_closed(e, "oclagl show failed"),
        },
        Command::Run(args) => {
            let json = args.json;
            let (outcome, unrecorded) = match oclagl::collect::run(args, shutdown_signal()).await {
                Ok(outcome) => (outcome, None),
                Err(e @ oclagl::collect::CollectError::Unrecorded { .. }) => {
                    let line = e.to_string();
                    match e {
                        oclagl::collect::CollectError::Unrecorded { outcome, .. } => {
                            (*outcome, Some(line))
                        }
                        other => return Err(other.into()),
                    }
                }
                Err(e) => return Err(e.into()),
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&outcome)?);
            } else if let Some(reply) = &outcome.reply {
                println!("{reply}");
            }
            if let Some(line) = unrecorded {
                eprintln!("oclagl: {line}");
                return Ok(2);
            }
            match &outcome.error {
                None => {
                    eprintln!("rollout {} succeeded", outcome.rollout_id);
                    Ok(0)
                }
                Some(e) => {
                    eprintln!("rollout {} failed: {e}", outcome.rollout_id);
                    Ok(1)
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A flag of a command: the command, its long name and its variable.
    struct Flag {
        command: String,
        long: String,
        env: Option<String>,
    }

    impl std::fmt::Display for Flag {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "`oclagl {} --{}`", self.command, self.long)
        }
    }

    /// Every non-positional argument of every command but `--help`.
    fn flags() -> Vec<Flag> {
        let mut cli = Cli::command();
        cli.build();
        cli.get_subcommands()
            .flat_map(|sub| {
                sub.get_arguments()
                    .filter(|a| {
                        !a.is_positional() && !["help", "version"].contains(&a.get_id().as_str())
                    })
                    .map(|a| Flag {
                        command: sub.get_name().to_string(),
                        long: a.get_long().unwrap_or(a.get_id().as_str()).to_string(),
                        env: a.get_env().map(|e| e.to_string_lossy().into_owned()),
                    })
            })
            .collect()
    }

    fn screaming(name: &str) -> String {
        name.to_ascii_uppercase().replace('-', "_")
    }

    #[test]
    fn every_flag_has_an_oclagl_environment_twin() {
        let missing: Vec<String> = flags()
            .iter()
            .filter(|f| !f.env.as_deref().is_some_and(|e| e.starts_with("OCLAGL_")))
            .map(|f| format!("{f} ({})", f.env.as_deref().unwrap_or("no env")))
            .collect();
        assert!(
            missing.is_empty(),
            "flags without an OCLAGL_… environment twin: {}",
            missing.join(", ")
        );
    }

    /// The rule of `oclagl::args`: `OCLAGL_<FLAG>` for serve's flags and
    /// those several commands share, `OCLAGL_<COMMAND>_<FLAG>` for the rest;
    /// one variable is one flag.
    #[test]
    fn environment_twins_follow_the_naming_rule() {
        let flags = flags();
        let mut broken = Vec::new();
        for f in &flags {
            let Some(env) = &f.env else { continue };
            let shared = format!("OCLAGL_{}", screaming(&f.long));
            let command = f.command.split('-').next().unwrap_or_default();
            let own = format!("OCLAGL_{}_{}", screaming(command), screaming(&f.long));
            let readers = flags.iter().filter(|g| g.env.as_ref() == Some(env));
            if *env == shared {
                if f.command != "serve" && readers.clone().count() < 2 {
                    broken.push(format!("{f} reads {env}, a shared name, alone: {own}"));
                }
            } else if *env != own {
                broken.push(format!("{f} reads {env}, not {own} or {shared}"));
            }
            if let Some(other) = readers.into_iter().find(|g| g.long != f.long) {
                broken.push(format!("{f} and {other} both read {env}"));
            }
        }
        assert!(broken.is_empty(), "{}", broken.join("\n"));
    }
}
