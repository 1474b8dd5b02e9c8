//! What recording one model call may cost in memory: the LLM proxy keeps at
//! most `--llm-record-max` bytes of a call's bodies, and reading them into a
//! span (reassembling a stream, parsing JSON, building attributes) must stay
//! within a small multiple of that, whatever the upstream answered.
//!
//! A counting allocator measures the peak heap of `Call::record` on hostile
//! answers and on an honest one of the same size. It is its own test binary
//! (one test, run alone) so that nothing else allocates meanwhile.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use oclagl::conversation::openai::{Api, PARSE_BUDGET_FACTOR};
use oclagl::ingest::proxy::span::{Call, Captured, End};
use oclagl::semconv::llm_proxy::UNREADABLE;

struct Counting;

static NOW: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = NOW.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        NOW.fetch_sub(layout.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// The default `--llm-record-max`.
const RECORD_MAX: usize = 4 << 20;

/// A streamed chat call whose bodies are what the proxy captured: at most
/// `RECORD_MAX` together, the answer cut there as the proxy cuts it.
fn call(request: &str, answer: &[u8]) -> Call {
    let room = RECORD_MAX - request.len();
    Call {
        status: Some(200),
        event_stream: true,
        request: Captured {
            bytes: request.as_bytes().to_vec(),
            truncated: false,
        },
        response: Captured {
            bytes: answer[..answer.len().min(room)].to_vec(),
            truncated: answer.len() > room,
        },
        end: End::Complete,
        ..Call::begin(Api::Chat, [1; 16], [2; 8], 1)
    }
}

/// As many whole events as fit under the cap, and `[DONE]`.
fn events(event: &str) -> Vec<u8> {
    let one = format!("data: {event}\n\n");
    let mut all = one.repeat((RECORD_MAX - 4096) / one.len());
    all.push_str("data: [DONE]\n\n");
    all.into_bytes()
}

/// Peak heap above what was live before, while recording `call`, and
/// whether the span says its conversation could not be read.
fn peak_of(call: &Call) -> (usize, Option<String>) {
    let before = NOW.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    let (export, unreadable) = call.record(RECORD_MAX * PARSE_BUDGET_FACTOR);
    let attrs = &export.resource_spans[0].scope_spans[0].spans[0].attributes;
    assert_eq!(
        attrs.iter().any(|kv| kv.key == UNREADABLE),
        unreadable.is_some(),
        "the span says what the recorder was told"
    );
    drop(export);
    (PEAK.load(Ordering::Relaxed) - before, unreadable)
}

#[test]
fn recording_a_call_takes_a_small_multiple_of_the_recording_cap() {
    let request = r#"{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
    let small = |v: &str| format!(r#"{{"choices":[{{"index":0,"delta":{v}}}]}}"#);
    let cases: Vec<(&str, Vec<u8>, bool)> = vec![
        (
            "honest: a long answer in small text chunks",
            events(&small(r#"{"content":"token "}"#)),
            true,
        ),
        (
            "honest: one tool call whose arguments come in small pieces",
            events(&small(
                r#"{"tool_calls":[{"index":0,"id":"call_1","function":{"name":"write","arguments":"abcdefgh"}}]}"#,
            )),
            true,
        ),
        (
            "the fuzz finding: a tool-call index no answer can hold",
            events(&small(
                r#"{"tool_calls":[{"index":8888888888881,"function":{"arguments":"x"}}]}"#,
            )),
            false,
        ),
        (
            "every tool-call index a real answer may use, each in its own event",
            (0..1024)
                .map(|i| {
                    format!(
                        "data: {}\n\n",
                        small(&format!(
                            r#"{{"tool_calls":[{{"index":{i},"id":"c{i}","function":{{"name":"f","arguments":"{{}}"}}}}]}}"#
                        ))
                    )
                })
                .collect::<String>()
                .into_bytes(),
            true,
        ),
        (
            "one event of the whole cap, all small values",
            format!("data: {{\"choices\":[{}0]}}\n\n", "0,".repeat(RECORD_MAX / 2)).into_bytes(),
            false,
        ),
        (
            "events of many small values each",
            events(&format!(
                r#"{{"x":[{}0],"choices":[{{"index":0,"delta":{{"content":"a"}}}}]}}"#,
                "0,".repeat(20_000)
            )),
            true,
        ),
        (
            "events that grow token ids",
            events(&small(r#"{"content":"a"},"token_ids":[1,2,3,4,5,6,7,8,9,10,11,12]"#)),
            true,
        ),
        (
            "a stream that never says [DONE] and breaks off mid-event",
            {
                let mut b = events(&small(r#"{"content":"token "}"#));
                b.truncate(b.len() - b"data: [DONE]\n\n".len());
                b.extend_from_slice(b"data: {\"choices\":[{\"ind");
                b
            },
            false,
        ),
    ];
    for (what, answer, readable) in cases {
        let call = call(request, &answer);
        drop(answer);
        let (peak, unreadable) = peak_of(&call);
        eprintln!(
            "{what}: peak {:.1} MiB ({:.2} x the cap), {}",
            peak as f64 / (1 << 20) as f64,
            peak as f64 / RECORD_MAX as f64,
            unreadable.as_deref().unwrap_or("readable")
        );
        assert_eq!(unreadable.is_none(), readable, "{what}: {unreadable:?}");
        assert!(
            peak <= 8 * RECORD_MAX,
            "{what}: recording took {peak} bytes, more than 8 x the {RECORD_MAX}-byte cap"
        );
    }
}
