//! Crash and overload tests: acknowledged spans survive `kill -9`, and a
//! flood is pushed back with 429 while memory stays bounded.

mod support;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prost::Message;
use support::{kv, request, span, span_ids, wait_for_files, Server};

/// One request of `n` spans in a fresh trace; returns the body and span ids.
fn unique_request(
    client: u64,
    seq: u64,
    n: u64,
    pad: usize,
    named: bool,
) -> (Vec<u8>, Vec<String>) {
    let mut trace = [0u8; 16];
    trace[..8].copy_from_slice(&client.to_be_bytes());
    // The low bytes hold the client too: a trace-derived rollout id is the
    // trace id's last 12 hex digits, and each request is a rollout of its own.
    trace[8..].copy_from_slice(&((client << 40) | (seq + 1)).to_be_bytes());
    let rollout = format!("ro-{client:04x}{seq:08x}");
    let mut ids = Vec::new();
    let spans = (0..n)
        .map(|i| {
            let id = (client << 48) | (seq << 16) | (i + 1);
            ids.push(format!("{id:016x}"));
            let mut attrs = vec![kv("payload", &"x".repeat(pad))];
            if named && i == 0 {
                attrs.push(kv("agentlightning.rollout_id", &rollout));
            }
            let parent = (i > 0).then_some((client << 48) | (seq << 16) | 1);
            span(trace, id, parent, "work", attrs)
        })
        .collect();
    (
        request(vec![kv("service.name", "load")], spans).encode_to_vec(),
        ids,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_span_survives_kill_9() {
    let (server, tmp) = Server::start(&[]);
    let url = server.url("/v1/traces");
    let acked = Arc::new(Mutex::new(HashSet::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for c in 0..16u64 {
        let (url, acked, stop) = (url.clone(), acked.clone(), stop.clone());
        clients.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut seq = 0;
            while !stop.load(Ordering::Relaxed) {
                let (body, ids) = unique_request(c, seq, 20, 64, seq % 2 == 0);
                seq += 1;
                let sent = http
                    .post(&url)
                    .header("content-type", "application/x-protobuf")
                    .body(body)
                    .send()
                    .await;
                match sent {
                    Ok(r) if r.status() == 200 => acked.lock().unwrap().extend(ids),
                    Ok(r) => panic!("unexpected status {}", r.status()),
                    Err(_) => break, // the server is gone
                }
            }
        }));
    }
    // Kill once enough is acknowledged, not after a fixed time: the other
    // tests of this file (the flood) share the machine and slow this one.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while acked.lock().unwrap().len() < 2000 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.kill();
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() > 1000,
        "too little load to mean anything: {}",
        acked.len()
    );

    let server = Server::start_in(tmp.path(), &[]);
    assert!(server.log().contains("store opened"));
    let files = wait_for_files(&server.traces_dir(), "every acknowledged span", |f| {
        acked.is_subset(&span_ids(f))
    });
    // Nothing was half-read: every file is whole and every span id unique.
    let total: usize = files
        .iter()
        .map(|f| f.1["span_count"].as_u64().unwrap() as usize)
        .sum();
    assert_eq!(total, span_ids(&files).len());
    eprintln!(
        "{} acknowledged spans all recovered ({} stored)",
        acked.len(),
        total
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_is_throttled_and_memory_stays_bounded() {
    let (server, _tmp) = Server::start(&[
        "--max-body",
        "1MiB",
        "--max-inflight",
        "4MiB",
        "--queue-wait",
        "20ms",
        "--quiet",
        "100ms",
    ]);
    let url = server.url("/v1/traces");
    let (ok, throttled, offered) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let acked = Arc::new(Mutex::new(Vec::new()));
    // The flood is measured in bytes, not seconds: on a loaded machine the
    // clients offer less per second, and the check below needs an offer
    // several times larger than any memory bound the sidecar may use.
    // 800 MiB is more than three times the 256 MiB bound checked below.
    const FLOOD: u64 = 800 << 20;
    let mut clients = Vec::new();
    for c in 0..64u64 {
        let (url, ok, throttled, offered, acked) = (
            url.clone(),
            ok.clone(),
            throttled.clone(),
            offered.clone(),
            acked.clone(),
        );
        clients.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut seq = 0;
            while offered.load(Ordering::Relaxed) < FLOOD {
                // About 900 KiB per request.
                let (body, ids) = unique_request(c, seq, 100, 9000, false);
                // Each request is a trace of its own, so a rollout of its
                // own, named by the trace id's last 12 hex digits.
                let rollout = format!("ro-{:012x}", ((c << 40) | (seq + 1)) & 0xffff_ffff_ffff);
                seq += 1;
                offered.fetch_add(body.len() as u64, Ordering::Relaxed);
                let resp = http
                    .post(&url)
                    .header("content-type", "application/x-protobuf")
                    .body(body)
                    .send()
                    .await
                    .expect("server reachable");
                match resp.status().as_u16() {
                    200 => {
                        ok.fetch_add(1, Ordering::Relaxed);
                        acked.lock().unwrap().push((rollout, ids));
                    }
                    429 | 503 => {
                        assert!(resp.headers().contains_key("retry-after"));
                        throttled.fetch_add(1, Ordering::Relaxed);
                    }
                    other => panic!("unexpected status {other}"),
                }
            }
        }));
    }
    for c in clients {
        c.await.unwrap();
    }
    let mut server = server;
    server.assert_alive();
    let peak_mib = server.peak_rss_kib() / 1024;
    let offered_mib = offered.load(Ordering::Relaxed) >> 20;
    let (ok, throttled) = (
        ok.load(Ordering::Relaxed),
        throttled.load(Ordering::Relaxed),
    );
    eprintln!(
        "offered {offered_mib} MiB: {ok} accepted, {throttled} throttled; peak RSS {peak_mib} MiB"
    );
    assert!(
        throttled > 0,
        "a 4 MiB budget under 64 clients must throttle"
    );
    assert!(ok > 0, "some requests must get through");
    // The constant is the allocator's (mimalloc keeps per-thread pages for
    // reuse) plus one read buffer per connection; what must not happen is
    // growth with the offered load, checked below.
    assert!(
        peak_mib < 256,
        "peak RSS {peak_mib} MiB is not bounded by the 4 MiB budget"
    );
    assert!(
        offered_mib > 3 * peak_mib,
        "the flood must be larger than the memory it may use"
    );
    // And what was accepted is all there: first every accepted rollout's
    // file (by name, cheap), then every accepted span in them (one read of
    // a few hundred MB of trace files).
    let acked = std::mem::take(&mut *acked.lock().unwrap());
    let dir = server.traces_dir();
    let names = || -> Vec<String> {
        std::fs::read_dir(&dir)
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let missing = loop {
        let names = names();
        let missing: Vec<&String> = acked
            .iter()
            .map(|(rollout, _)| rollout)
            .filter(|r| {
                !names
                    .iter()
                    .any(|n| n.starts_with(&format!("rollout_{r}_")))
            })
            .collect();
        if missing.is_empty() || std::time::Instant::now() > deadline {
            break missing;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        missing.is_empty(),
        "accepted rollouts without a trace file: {missing:?}"
    );
    let acked: HashSet<String> = acked.into_iter().flat_map(|(_, ids)| ids).collect();
    wait_for_files(&dir, "accepted spans", |f| acked.is_subset(&span_ids(f)));
}

/// A trace file that cannot be written at shutdown (a full disk, say) is left
/// to the next start: the server stops at once instead of retrying until its
/// shutdown timeout, says so in one line, and the next start writes the file
/// with every acknowledged span.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_files_that_fail_at_shutdown_are_written_at_the_next_start() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let server = Server::start_in(tmp.path(), &["--quiet", "1h", "--shutdown-timeout", "1h"]);
    // The traces folder becomes a file: every write into it fails.
    let traces = server.traces_dir();
    std::fs::remove_dir(&traces).expect("empty traces folder");
    std::fs::write(&traces, b"not a folder").expect("blocker");
    let http = reqwest::Client::new();
    let mut acked = HashSet::new();
    for seq in 0..3 {
        let (body, ids) = unique_request(7, seq, 4, 16, true);
        let answer = http
            .post(server.url("/v1/traces"))
            .header("content-type", "application/x-protobuf")
            .body(body)
            .send()
            .await
            .expect("export");
        assert_eq!(answer.status(), 200);
        acked.extend(ids);
    }
    let log = server.log.clone();
    // With an hour of shutdown timeout, a retrying view would never stop
    // (`terminate` gives up after 30 s).
    server.terminate();
    let log = log.lock().unwrap().clone();
    let failures = log.matches("cannot write trace files").count();
    assert_eq!(failures, 1, "one line for the failed batch:\n{log}");
    assert!(
        log.contains("rewritten from the store at the next start"),
        "{log}"
    );

    std::fs::remove_file(&traces).expect("remove blocker");
    let server = Server::start_in(tmp.path(), &[]);
    let files = wait_for_files(&server.traces_dir(), "the three rollouts", |f| {
        f.len() == 3 && acked.is_subset(&span_ids(f))
    });
    assert_eq!(span_ids(&files), acked);
}
