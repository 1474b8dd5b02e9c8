//! Trace files (`rollout_*.json`, the seed's shape) parsed for export.
//!
//! Only what export needs is decoded: span names, ids, start times and, as
//! raw JSON slices borrowed from the file's bytes, the attributes. Attributes
//! are parsed later and only for the few spans that matter (the chosen
//! conversation span, its children, the root and reward spans), so the bulk
//! of a file (earlier turns, whose prompts repeat the conversation so far) is
//! only scanned once.

use std::borrow::Cow;
use std::fmt;
use std::fs;
use std::io::{self, Read};
use std::marker::PhantomData;
use std::path::{Path, PathBuf};

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

/// A trace file's rollout, borrowing from the file's bytes.
#[derive(Debug, Deserialize)]
pub struct Doc<'a> {
    /// The rollout (`ro-…`), when the file has one.
    #[serde(default, borrow)]
    pub rollout_id: Text<'a>,
    /// `succeeded`, `failed` or `running`, when the file says.
    #[serde(default, borrow)]
    pub status: Text<'a>,
    /// The spans, in file order.
    #[serde(default, borrow, deserialize_with = "span_objects")]
    pub spans: Vec<SpanDoc<'a>>,
}

/// One span of a trace file, as far as export looks at it.
#[derive(Debug, Deserialize)]
pub struct SpanDoc<'a> {
    /// The span's name.
    #[serde(default, borrow)]
    pub name: Text<'a>,
    /// The span's id.
    #[serde(default, borrow)]
    pub span_id: Text<'a>,
    /// The parent's span id; absent for a root span.
    #[serde(default, borrow)]
    pub parent_id: Text<'a>,
    /// Start, in float seconds since the Unix epoch.
    #[serde(default)]
    pub start_time: Seconds,
    /// The attributes object, unparsed until the span is chosen.
    #[serde(default, borrow)]
    pub attributes: Option<&'a RawValue>,
}

/// Why bytes are not a trace file.
#[derive(Debug, thiserror::Error)]
pub enum DocError {
    /// The bytes are not UTF-8.
    #[error("not UTF-8 text")]
    Utf8,
    /// The text is not a JSON object with a list of span objects.
    #[error(transparent)]
    Json(#[from] serde_json::Error),
}

impl<'a> Doc<'a> {
    /// Parses a trace file. Fails on bytes that are not a JSON object with
    /// a list of span objects (a half-written file, say); fields export does
    /// not need may hold anything.
    pub fn parse(bytes: &'a [u8]) -> Result<Doc<'a>, DocError> {
        // One SIMD pass checks the whole file, so the parser need not check
        // each string and raw value it borrows again.
        let text = simdutf8::basic::from_utf8(bytes).map_err(|_| DocError::Utf8)?;
        Ok(serde_json::from_str::<Object<Doc>>(text)?.0)
    }
}

/// A struct that must be a JSON object (derived structs also accept arrays).
struct Object<T>(T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Object<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = Object<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Object<T>, A::Error> {
                T::deserialize(de::value::MapAccessDeserializer::new(map)).map(Object)
            }
        }
        d.deserialize_map(V(PhantomData))
    }
}

fn span_objects<'de: 'a, 'a, D: Deserializer<'de>>(d: D) -> Result<Vec<SpanDoc<'a>>, D::Error> {
    let spans = Vec::<Object<SpanDoc<'a>>>::deserialize(d)?;
    Ok(spans.into_iter().map(|o| o.0).collect())
}

/// A string field that tolerates any other JSON value (read as absent).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Text<'a>(pub Option<Cow<'a, str>>);

impl Text<'_> {
    /// The string, when the field held one.
    pub fn as_deref(&self) -> Option<&str> {
        self.0.as_deref()
    }
}

/// Drains whatever value a visitor was handed but does not want.
fn drain_seq<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<(), A::Error> {
    while seq.next_element::<IgnoredAny>()?.is_some() {}
    Ok(())
}

fn drain_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<(), A::Error> {
    while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
    Ok(())
}

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Text<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Text<'a>, E> {
                Ok(Text(Some(Cow::Borrowed(v))))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Text<'a>, E> {
                Ok(Text(Some(Cow::Owned(v.to_owned()))))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Text<'a>, E> {
                Ok(Text(Some(Cow::Owned(v))))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Text<'a>, E> {
                Ok(Text(None))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Text<'a>, E> {
                Ok(Text(None))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Text<'a>, E> {
                Ok(Text(None))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Text<'a>, E> {
                Ok(Text(None))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Text<'a>, E> {
                Ok(Text(None))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Text<'a>, A::Error> {
                drain_seq(seq).map(|()| Text(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Text<'a>, A::Error> {
                drain_map(map).map(|()| Text(None))
            }
        }
        d.deserialize_any(V(PhantomData))
    }
}

/// A float seconds field that tolerates any other JSON value.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Seconds(pub Option<f64>);

impl<'de> Deserialize<'de> for Seconds {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Seconds;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Seconds, E> {
                Ok(Seconds(Some(v)))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Seconds, E> {
                Ok(Seconds(Some(v as f64)))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Seconds, E> {
                Ok(Seconds(Some(v as f64)))
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Seconds, E> {
                Ok(Seconds(None))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Seconds, E> {
                Ok(Seconds(None))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Seconds, E> {
                Ok(Seconds(None))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Seconds, A::Error> {
                drain_seq(seq).map(|()| Seconds(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Seconds, A::Error> {
                drain_map(map).map(|()| Seconds(None))
            }
        }
        d.deserialize_any(V)
    }
}

/// Calls `f` with every key of a raw JSON object, without decoding values.
pub fn for_each_key(raw: &RawValue, mut f: impl FnMut(&str)) -> Result<(), serde_json::Error> {
    struct Keys<'f, F>(&'f mut F);
    impl<'de, F: FnMut(&str)> Visitor<'de> for Keys<'_, F> {
        type Value = ();
        fn expecting(&self, fm: &mut fmt::Formatter) -> fmt::Result {
            fm.write_str("an attributes object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            while let Some(key) = map.next_key::<Text<'de>>()? {
                if let Some(k) = key.as_deref() {
                    (self.0)(k);
                }
                map.next_value::<IgnoredAny>()?;
            }
            Ok(())
        }
    }
    let mut de = serde_json::Deserializer::from_str(raw.get());
    de.deserialize_map(Keys(&mut f))
}

/// A file name the seed's exporter reads (`rollout_*.json`).
pub fn is_trace_file_name(name: &str) -> bool {
    name.starts_with("rollout_") && name.ends_with(".json")
}

/// The trace files of a folder, in name order (the order rows are written).
pub fn list(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if is_trace_file_name(name) && !entry.file_type()?.is_dir() {
            files.push(entry.path());
        }
    }
    files.sort();
    Ok(files)
}

/// Reads a whole file into `buf` (reused between files).
pub fn read_into(path: &Path, buf: &mut Vec<u8>) -> io::Result<()> {
    buf.clear();
    let mut f = fs::File::open(path)?;
    if let Ok(meta) = f.metadata() {
        buf.reserve(meta.len() as usize);
    }
    f.read_to_end(buf).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_only_what_export_needs_and_tolerates_odd_fields() {
        let bytes = br#"{"rollout_id": "ro-1", "attempt_id": null, "status": "succeeded",
            "task_input": {"x": [1, 2]}, "span_count": 2, "spans": [
            {"name": "gen_ai", "span_id": "a1", "parent_id": null, "start_time": 1.5,
             "attributes": {"gen_ai.prompt.0.role": "user", "k\u00e9y": 1}, "events": []},
            {"name": 7, "span_id": {"odd": true}, "start_time": "soon", "attributes": {}}
        ]}"#;
        let doc = Doc::parse(bytes).unwrap();
        assert_eq!(doc.rollout_id.as_deref(), Some("ro-1"));
        assert_eq!(doc.status.as_deref(), Some("succeeded"));
        assert_eq!(doc.spans.len(), 2);
        assert_eq!(doc.spans[0].name.as_deref(), Some("gen_ai"));
        assert_eq!(doc.spans[0].parent_id.as_deref(), None);
        assert_eq!(doc.spans[0].start_time, Seconds(Some(1.5)));
        assert_eq!(doc.spans[1].name.as_deref(), None);
        assert_eq!(doc.spans[1].start_time, Seconds(None));
        let mut keys = Vec::new();
        for_each_key(doc.spans[0].attributes.unwrap(), |k| {
            keys.push(k.to_string())
        })
        .unwrap();
        assert_eq!(keys, ["gen_ai.prompt.0.role", "kéy"]);
    }

    #[test]
    fn broken_files_are_errors() {
        for bytes in [
            &b"{\"rollout_id\": \"ro-1\", \"spans\": [{\"name\": \"gen"[..],
            b"[1, 2]",
            b"{\"spans\": {\"name\": \"x\"}}",
            b"{\"spans\": [1]}",
            b"{\"spans\": [[\"gen_ai\"]]}",
            b"",
            b"{\"spans\": [], \"x\": \"\xff\"}",
        ] {
            assert!(
                Doc::parse(bytes).is_err(),
                "{}",
                String::from_utf8_lossy(bytes)
            );
        }
        let empty = Doc::parse(b"{}").unwrap();
        assert!(empty.spans.is_empty());
    }

    #[test]
    fn lists_seed_file_names_sorted() {
        let dir = tempfile::tempdir().unwrap();
        for name in [
            "rollout_b_20260101T000000Z.json",
            "rollout_a.json",
            ".rollout_c.json.tmp",
            "notes.json",
        ] {
            fs::write(dir.path().join(name), "{}").unwrap();
        }
        fs::create_dir(dir.path().join("rollout_dir.json")).unwrap();
        let names: Vec<_> = list(dir.path())
            .unwrap()
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().to_string())
            .collect();
        assert_eq!(names, ["rollout_a.json", "rollout_b_20260101T000000Z.json"]);
    }
}
