//! Black-box tests of `oclagl reward`, `oclagl ls` and `oclagl show` (and the
//! sidecar's `POST /v1/rollouts/<id>/reward`), on the real binary.

mod support;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use prost::Message;
use serde_json::{json, Value};
use support::rollouts::{self, generate, wait_summarised};
use support::{run_py, trace_files, wait_for_files, Server, BIN};

/// Runs `oclagl <args>` in `dir` with no OTLP endpoint unless `env` sets one.
fn oclagl(dir: &Path, env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.current_dir(dir)
        .args(args)
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .env_remove("NO_COLOR")
        .envs(env.iter().copied());
    cmd.output().expect("run oclagl")
}

fn ok(out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "oclagl failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}

async fn send(server: &Server, i: u64) {
    let status = reqwest::Client::new()
        .post(server.url("/v1/traces"))
        .header("content-type", "application/x-protobuf")
        .body(rollouts::one(i).encode_to_vec())
        .send()
        .await
        .unwrap()
        .status();
    assert!(status.is_success());
}

/// The reward spans of a trace file.
fn reward_spans(doc: &Value) -> Vec<Value> {
    doc["spans"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["name"] == "agentlightning.annotation")
        .cloned()
        .collect()
}

fn file_of<'a>(files: &'a [(String, Value)], id: &str) -> &'a Value {
    &files
        .iter()
        .find(|(_, d)| d["rollout_id"] == id)
        .unwrap_or_else(|| panic!("no file for {id}"))
        .1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rewards_reach_trace_files_agl_export_ls_and_show() {
    let (server, tmp) = Server::start(&[]);
    // Rollout 4 has no reward of its own; 12 neither.
    send(&server, 4).await;
    send(&server, 12).await;
    let (a, b) = (rollouts::rollout_id(4), rollouts::rollout_id(12));
    let traces = server.traces_dir();
    wait_for_files(&traces, "two rollouts", |f| f.len() == 2);
    let endpoint = server.url("");
    let env = [("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str())];

    // The CLI through the running sidecar: several named rewards.
    let out = oclagl(
        tmp.path(),
        &env,
        &["reward", &a, "1.0", "--name", "exact_match", "brevity=0.25"],
    );
    ok(&out);
    assert!(stderr(&out).contains(&format!("rewarded {a} (attempt at-00000001)")));
    // The HTTP endpoint for programs.
    let response = reqwest::Client::new()
        .post(server.url(&format!("/v1/rollouts/{b}/reward")))
        .json(&json!({"value": 0.2}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(
        answer,
        json!({"rollout_id": b, "attempt_id": "at-00000001", "rewards": [{"name": "primary", "value": 0.2}]})
    );

    // Unknown rollouts are errors, not new rollouts.
    let missing = oclagl(tmp.path(), &env, &["reward", "ro-000000000bad", "1"]);
    assert!(!missing.status.success());
    assert!(
        stderr(&missing).contains("rollout ro-000000000bad not found"),
        "{}",
        stderr(&missing)
    );
    let response = reqwest::Client::new()
        .post(server.url("/v1/rollouts/ro-nope/reward"))
        .json(&json!({"value": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    for bad in [
        json!({"value": "high"}),
        json!({"rewards": []}),
        json!({"value": 1, "rewards": [{"name": "a", "value": 1}]}),
    ] {
        let response = reqwest::Client::new()
            .post(server.url(&format!("/v1/rollouts/{a}/reward")))
            .json(&bad)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{bad}");
    }

    let files = wait_for_files(&traces, "the reward spans", |f| {
        f.len() == 2 && f.iter().all(|(_, d)| reward_spans(d).len() == 1)
    });
    let doc_a = file_of(&files, &a);
    let reward = &reward_spans(doc_a)[0];
    let root = doc_a["spans"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["parent_id"].is_null())
        .unwrap();
    assert_eq!(reward["parent_id"], root["span_id"]);
    assert_eq!(reward["trace_id"], root["trace_id"]);
    assert_eq!(reward["attempt_id"], "at-00000001");
    assert_eq!(
        reward["attributes"]["agentlightning.reward.0.name"],
        "exact_match"
    );
    assert_eq!(reward["attributes"]["agentlightning.reward.0.value"], 1.0);
    assert_eq!(
        reward["attributes"]["agentlightning.reward.1.name"],
        "brevity"
    );
    assert_eq!(doc_a["status"], "succeeded", "a reward is not a root span");
    assert!(files
        .iter()
        .all(|(_, d)| d["rollout_id"] != "ro-000000000bad"));

    // AGL 0.3.0 reads the rewards from the trace files.
    let paths: Vec<String> = files
        .iter()
        .map(|(name, _)| traces.join(name).display().to_string())
        .collect();
    let args: Vec<&str> = paths.iter().map(String::as_str).collect();
    let agl: Value = serde_json::from_str(&run_py("check_reward.py", &args)).unwrap();
    assert_eq!(agl[&a]["final"], 1.0);
    assert_eq!(
        agl[&a]["rewards"],
        json!([[["exact_match", 1.0], ["brevity", 0.25]]])
    );
    assert_eq!(agl[&b]["final"], 0.2);
    // Its triplet adapter gives the reward to the rollout's LLM call.
    assert_eq!(agl[&a]["triplet_rewards"], json!([1.0]));
    assert_eq!(agl[&b]["triplet_rewards"], json!([0.2]));

    // export-sft --min-reward keeps the rewarded rollout only.
    let out = oclagl(
        tmp.path(),
        &[],
        &[
            "export-sft",
            "--source",
            "traces",
            "--min-reward",
            "0.5",
            "--out",
            "sft.jsonl",
        ],
    );
    ok(&out);
    let rows = std::fs::read_to_string(tmp.path().join("sft.jsonl")).unwrap();
    assert_eq!(rows.lines().count(), 1, "{rows}");
    assert!(rows.contains("task 4:"), "{rows}");

    // ls shows the primary rewards once the view has saved them.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let listed = loop {
        let out = oclagl(tmp.path(), &[], &["ls", "--data-dir", "data", "--json"]);
        let all: Vec<Value> = serde_json::from_str(&ok(&out)).unwrap();
        if all.len() == 2
            && all
                .iter()
                .all(|s| !s["rewards"].as_array().unwrap().is_empty())
        {
            break all;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "ls never showed the rewards"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(listed[0]["rollout_id"], a);
    assert_eq!(
        listed[0]["rewards"][1],
        json!({"name": "brevity", "value": 0.25})
    );
    let table = ok(&oclagl(
        tmp.path(),
        &[],
        &["ls", "--data-dir", "data", "--min-reward", "0.5"],
    ));
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 2, "{table}");
    assert!(
        lines[1].starts_with(&a) && lines[1].contains("  1  task 4:"),
        "{table}"
    );
    assert!(!table.contains('\x1b'), "no colours off a terminal");

    // show: the tree with the reward under the root; --json is the file.
    let shown = ok(&oclagl(tmp.path(), &[], &["show", &a]));
    assert!(
        shown.contains("rewards  exact_match=1 brevity=0.25"),
        "{shown}"
    );
    assert!(
        shown.contains("└─ agentlightning.annotation  reward exact_match=1 brevity=0.25"),
        "{shown}"
    );
    assert!(shown.contains("├─ gen_ai  model model-a"), "{shown}");
    assert!(shown.contains("1 message in → \"5\""), "{shown}");
    let json_out = ok(&oclagl(tmp.path(), &[], &["show", &a, "--json"]));
    assert_eq!(&serde_json::from_str::<Value>(&json_out).unwrap(), doc_a);
    let nothing = oclagl(tmp.path(), &[], &["show", "ro-000000000bad"]);
    assert!(!nothing.status.success());
    assert!(stderr(&nothing).contains("no trace file for rollout ro-000000000bad"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reward_without_a_sidecar_writes_the_local_store() {
    let (server, tmp) = Server::start(&[]);
    send(&server, 3).await;
    let id = rollouts::rollout_id(3);
    wait_for_files(&server.traces_dir(), "the rollout", |f| f.len() == 1);
    assert!(server.terminate().success());
    let local = ["--data-dir", "data", "--traces-dir", "traces"];
    let mut args = vec!["reward", id.as_str(), "0.75"];
    args.extend(local);
    ok(&oclagl(tmp.path(), &[], &args));
    let files = trace_files(&tmp.path().join("traces"));
    assert_eq!(files.len(), 1);
    let reward = &reward_spans(&files[0].1);
    // Rollout 3 carried its own reward (3/8); the new one comes last.
    assert_eq!(reward.len(), 2);
    assert_eq!(
        reward[1]["attributes"]["agentlightning.reward.0.name"],
        "primary"
    );
    assert_eq!(
        reward[1]["attributes"]["agentlightning.reward.0.value"],
        0.75
    );
    let listed = || -> Vec<Value> {
        let out = oclagl(tmp.path(), &[], &["ls", "--data-dir", "data", "--json"]);
        serde_json::from_str(&ok(&out)).unwrap()
    };
    assert_eq!(listed()[0]["rewards"][0]["value"], 0.75);
    // Summaries lost: the next start rebuilds them from the store.
    std::fs::remove_file(tmp.path().join("data/rollouts.jsonl")).unwrap();
    let mut args = vec!["reward", "ro-000000000bad", "1"];
    args.extend(local);
    let missing = oclagl(tmp.path(), &[], &args);
    assert!(!missing.status.success());
    assert!(
        stderr(&missing).contains("not found in the store data"),
        "{}",
        stderr(&missing)
    );
    assert_eq!(trace_files(&tmp.path().join("traces")).len(), 1);
    let rebuilt = listed();
    assert_eq!(rebuilt.len(), 1);
    assert_eq!(rebuilt[0]["rollout_id"], id.as_str());
    assert_eq!(rebuilt[0]["rewards"][0]["value"], 0.75);
}

/// `ls` over a generated store of 100,000 rollouts: every filter and sort
/// gives exactly the rollouts the generator made for it. (Its speed is
/// measured by `benches/run-inspect.sh`, not here.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ls_lists_a_generated_store_of_100k_rollouts() {
    const N: u64 = 100_000;
    let (server, tmp) = Server::start(&["--fsync", "false", "--quiet", "50ms"]);
    generate(&server, N, 50).await;
    let data = tmp.path().join("data");
    wait_summarised(&data, N as usize, Duration::from_secs(600));
    let ls = |extra: &[&str]| -> Vec<Value> {
        let mut args = vec!["ls", "--data-dir", "data", "--json"];
        args.extend(extra);
        serde_json::from_str(&ok(&oclagl(tmp.path(), &[], &args))).unwrap()
    };
    let ids = |rows: &[Value]| -> Vec<String> {
        rows.iter()
            .map(|r| r["rollout_id"].as_str().unwrap().to_string())
            .collect()
    };
    let expect = |keep: &dyn Fn(u64) -> bool| -> Vec<String> {
        (0..N)
            .filter(|i| keep(*i))
            .map(rollouts::rollout_id)
            .collect()
    };

    let all = ls(&[]);
    assert_eq!(ids(&all), expect(&|_| true), "every rollout, by start time");
    let r = &all[7];
    assert_eq!(r["status"], "succeeded");
    assert_eq!(
        (
            r["spans"].as_u64(),
            r["model_calls"].as_u64(),
            r["tool_calls"].as_u64()
        ),
        (Some(4), Some(1), Some(1))
    );
    assert_eq!(r["rewards"][0]["value"], 7.0 / 8.0);
    assert_eq!(r["session"], "agent:main:s0");
    assert_eq!(r["prompt"], "task 7: what is 7 + 1?");
    assert_eq!(
        r["end"].as_f64().unwrap() - r["start"].as_f64().unwrap(),
        3.0
    );

    assert_eq!(
        ids(&ls(&["--status", "failed"])),
        expect(&|i| rollouts::failed(i))
    );
    let since = (rollouts::BASE_SECS + 90_000).to_string();
    assert_eq!(ids(&ls(&["--since", &since])), expect(&|i| i >= 90_000));
    assert_eq!(
        ids(&ls(&["--session", "agent:main:s3"])),
        expect(&|i| i % 7 == 3)
    );
    assert_eq!(
        ids(&ls(&["--min-reward", "0.75", "--status", "succeeded"])),
        expect(&|i| rollouts::reward(i).is_some_and(|r| r >= 0.75) && !rollouts::failed(i))
    );
    let by_duration = ls(&["--sort", "duration", "-r", "-n", "3"]);
    assert_eq!(
        ids(&by_duration),
        ["ro-00000001869f", "ro-00000001869a", "ro-000000018695"].map(|s| s.to_string())
    );
    assert!(ls(&["--since", "1h"]).is_empty());

    let table = ok(&oclagl(tmp.path(), &[], &["ls", "--data-dir", "data"]));
    assert_eq!(table.lines().count(), N as usize + 1);
    assert!(table
        .lines()
        .nth(1)
        .unwrap()
        .starts_with("ro-000000000000  failed "));
    drop(server);
}
