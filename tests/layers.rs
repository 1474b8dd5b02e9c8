//! The library's layers hold: every module of `src/` imports only modules of
//! the layers below its own, as the list in `src/lib.rs` ("# Layers") orders
//! them. Every `crate::<module>` path counts, in a `use` line or inline
//! (`crate::util::percent::percent_decode(…)`, `crate::{a, b}` groups), and
//! so does a `super::` chain that climbs to the crate root; comments and
//! string literals do not.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

/// The layers, bottom first: each a list of top-level modules.
struct Layers {
    /// Module → (layer index from the bottom, the layer's line as written).
    of: HashMap<String, (usize, String)>,
}

impl Layers {
    /// Reads the ```text block under "# Layers" in the crate's doc comment:
    /// one layer a line, top first, module names separated by spaces, `#`
    /// starting a remark.
    fn parse(lib_rs: &str) -> Layers {
        let doc: Vec<&str> = lib_rs
            .lines()
            .filter_map(|l| l.strip_prefix("//!"))
            .map(|l| l.strip_prefix(' ').unwrap_or(l))
            .collect();
        let heading = doc
            .iter()
            .position(|l| l.trim() == "# Layers")
            .expect("src/lib.rs has no \"# Layers\" section in its doc comment");
        let open = heading
            + doc[heading..]
                .iter()
                .position(|l| l.trim() == "```text")
                .expect("the \"# Layers\" section has no ```text block");
        let lines: Vec<&str> = doc[open + 1..]
            .iter()
            .take_while(|l| l.trim() != "```")
            .map(|l| l.split('#').next().unwrap_or("").trim())
            .filter(|l| !l.is_empty())
            .collect();
        assert!(!lines.is_empty(), "the layer list in src/lib.rs is empty");
        let mut of = HashMap::new();
        for (from_top, line) in lines.iter().enumerate() {
            let level = lines.len() - 1 - from_top;
            for module in line.split_whitespace() {
                let earlier = of.insert(module.to_string(), (level, line.to_string()));
                assert!(
                    earlier.is_none(),
                    "{module} stands twice in the layer list of src/lib.rs"
                );
            }
        }
        Layers { of }
    }
}

/// `src` with comments and string and character literals blanked out, line
/// breaks kept (so line numbers still hold).
fn code_only(src: &str) -> String {
    let c: Vec<char> = src.chars().collect();
    let mut out = String::with_capacity(src.len());
    let blank = |out: &mut String, ch: char| out.push(if ch == '\n' { '\n' } else { ' ' });
    let ident = |ch: char| ch.is_alphanumeric() || ch == '_';
    let mut i = 0;
    while i < c.len() {
        let prev_ident = i > 0 && ident(c[i - 1]);
        if c[i] == '/' && c.get(i + 1) == Some(&'/') {
            while i < c.len() && c[i] != '\n' {
                blank(&mut out, c[i]);
                i += 1;
            }
        } else if c[i] == '/' && c.get(i + 1) == Some(&'*') {
            let mut depth = 0;
            while i < c.len() {
                if c[i] == '/' && c.get(i + 1) == Some(&'*') {
                    depth += 1;
                    out.push_str("  ");
                    i += 2;
                } else if c[i] == '*' && c.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    out.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    blank(&mut out, c[i]);
                    i += 1;
                }
            }
        } else if !prev_ident && (c[i] == 'r' || (c[i] == 'b' && c.get(i + 1) == Some(&'r'))) && {
            let start = if c[i] == 'b' { i + 2 } else { i + 1 };
            let hashes = c[start..].iter().take_while(|&&h| h == '#').count();
            c.get(start + hashes) == Some(&'"')
        } {
            // A raw string: r"…", r#"…"#, br"…"; it ends at a quote followed
            // by as many hashes as it began with.
            let start = if c[i] == 'b' { i + 2 } else { i + 1 };
            let hashes = c[start..].iter().take_while(|&&h| h == '#').count();
            let mut end = start + hashes + 1;
            while end < c.len() {
                let closing = c[end] == '"'
                    && c[end + 1..]
                        .iter()
                        .take(hashes)
                        .filter(|&&h| h == '#')
                        .count()
                        == hashes;
                end += 1;
                if closing {
                    end += hashes;
                    break;
                }
            }
            for &ch in &c[i..end.min(c.len())] {
                blank(&mut out, ch);
            }
            i = end;
        } else if c[i] == '"'
            || (c[i] == '\''
                && (c.get(i + 1) == Some(&'\\') || (i + 2 < c.len() && c[i + 2] == '\'')))
        {
            // A string, or a character literal ('x', '\n', '\u{1F600}'; not
            // a lifetime): up to the same quote, escapes skipped.
            let quote = c[i];
            blank(&mut out, c[i]);
            i += 1;
            while i < c.len() && c[i] != quote {
                if c[i] == '\\' && i + 1 < c.len() {
                    blank(&mut out, c[i]);
                    i += 1;
                }
                blank(&mut out, c[i]);
                i += 1;
            }
            if i < c.len() {
                blank(&mut out, c[i]);
                i += 1;
            }
        } else {
            out.push(c[i]);
            i += 1;
        }
    }
    out
}

/// A token of code: an identifier, `::`, or one other character.
#[derive(Debug, Clone, PartialEq)]
struct Token {
    text: String,
    line: usize,
}

fn tokens(code: &str) -> Vec<Token> {
    let c: Vec<char> = code.chars().collect();
    let mut out = Vec::new();
    let (mut i, mut line) = (0, 1);
    while i < c.len() {
        if c[i] == '\n' {
            line += 1;
            i += 1;
        } else if c[i].is_whitespace() {
            i += 1;
        } else if c[i].is_alphabetic() || c[i] == '_' {
            let start = i;
            while i < c.len() && (c[i].is_alphanumeric() || c[i] == '_') {
                i += 1;
            }
            out.push(Token {
                text: c[start..i].iter().collect(),
                line,
            });
        } else if c[i] == ':' && c.get(i + 1) == Some(&':') {
            out.push(Token {
                text: "::".into(),
                line,
            });
            i += 2;
        } else {
            out.push(Token {
                text: c[i].to_string(),
                line,
            });
            i += 1;
        }
    }
    out
}

/// One reference from a file to a top-level module of the crate.
#[derive(Debug, Clone, PartialEq)]
struct Reference {
    line: usize,
    /// The top-level module named.
    module: String,
    /// The path as written, up to that module and a step beyond.
    text: String,
}

/// The top-level modules that `src` (the file of module `path`, e.g.
/// `["agl", "view"]`) names: `crate::m…`, `crate::{m…, …}`, and `super::`
/// chains that climb to the crate root.
fn references(src: &str, path: &[String]) -> Vec<Reference> {
    let t = tokens(&code_only(src));
    let is = |i: usize, s: &str| t.get(i).is_some_and(|x| x.text == s);
    let ident = |i: usize| {
        t.get(i).is_some_and(|x| {
            x.text
                .chars()
                .next()
                .is_some_and(|c| c.is_alphabetic() || c == '_')
        })
    };
    // Inline `mod name { … }` blocks deepen the module path.
    let mut inline: Vec<(String, usize)> = Vec::new();
    let mut depth = 0usize;
    let mut out = Vec::new();
    let mut i = 0;
    while i < t.len() {
        match t[i].text.as_str() {
            "{" => {
                if i >= 2 && is(i - 2, "mod") && ident(i - 1) {
                    inline.push((t[i - 1].text.clone(), depth));
                }
                depth += 1;
            }
            "}" => {
                depth = depth.saturating_sub(1);
                if inline.last().is_some_and(|(_, d)| *d == depth) {
                    inline.pop();
                }
            }
            _ => {}
        }
        let starts_path = i == 0 || !is(i - 1, "::");
        // Where the path reaches the crate root: the index of the token
        // after `crate::` or after the last `super::` that climbs to it.
        let mut at_root = None;
        if starts_path && is(i, "crate") && is(i + 1, "::") {
            at_root = Some(i + 2);
        } else if starts_path && is(i, "super") && is(i + 1, "::") {
            let mut supers = 0;
            let mut j = i;
            while is(j, "super") && is(j + 1, "::") {
                supers += 1;
                j += 2;
            }
            if supers == path.len() + inline.len() {
                at_root = Some(j);
            }
        }
        if let Some(root) = at_root {
            let written: Vec<&str> = t[i..root].iter().map(|x| x.text.as_str()).collect();
            let written = written.concat();
            if is(root, "{") {
                // A group: the first name of each entry at its top level.
                let (mut k, mut level, mut expect) = (root + 1, 1, true);
                while k < t.len() && level > 0 {
                    match t[k].text.as_str() {
                        "{" => level += 1,
                        "}" => level -= 1,
                        "," if level == 1 => expect = true,
                        name if expect && level == 1 && ident(k) => {
                            if name != "self" {
                                out.push(Reference {
                                    line: t[k].line,
                                    module: name.to_string(),
                                    text: format!("{written}{{{name}, …}}"),
                                });
                            }
                            expect = false;
                        }
                        _ => {}
                    }
                    k += 1;
                }
            } else if ident(root) {
                let mut text = format!("{written}{}", t[root].text);
                if is(root + 1, "::") && ident(root + 2) {
                    text = format!("{text}::{}", t[root + 2].text);
                }
                out.push(Reference {
                    line: t[root].line,
                    module: t[root].text.clone(),
                    text,
                });
            }
        }
        i += 1;
    }
    out
}

/// The module path of a file under `src/`: `agl/view.rs` → `[agl, view]`,
/// `agl/mod.rs` → `[agl]`, `serve.rs` → `[serve]`.
fn module_path(relative: &Path) -> Vec<String> {
    let mut parts: Vec<String> = relative
        .iter()
        .map(|p| p.to_string_lossy().to_string())
        .collect();
    let last = parts.pop().unwrap_or_default();
    let stem = last.trim_end_matches(".rs");
    if stem != "mod" {
        parts.push(stem.to_string());
    }
    parts
}

/// The breaks of the layering in one file, one message each.
fn breaks(layers: &Layers, file: &str, src: &str, path: &[String]) -> Vec<String> {
    let Some(own) = path.first() else {
        return Vec::new();
    };
    let Some((own_level, own_line)) = layers.of.get(own) else {
        return vec![format!(
            "{file}: the module {own} has no layer: add it to the layer list in src/lib.rs"
        )];
    };
    let mut out = Vec::new();
    for r in references(src, path) {
        if &r.module == own {
            continue;
        }
        match layers.of.get(&r.module) {
            None => out.push(format!(
                "{file}:{}: `{}`: {} is no module of the layer list in src/lib.rs",
                r.line, r.text, r.module
            )),
            Some((level, line)) if level >= own_level => out.push(format!(
                "{file}:{}: `{}`: {own} (layer \"{own_line}\") imports {} (layer \"{line}\"), \
                 which is {}: a module imports only modules of the layers below its own \
                 (the list is in src/lib.rs)",
                r.line,
                r.text,
                r.module,
                if level == own_level {
                    "of the same layer"
                } else {
                    "above it"
                },
            )),
            Some(_) => {}
        }
    }
    out
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).expect("read src/") {
        let path = entry.expect("read src/").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn layers() -> Layers {
    Layers::parse(&fs::read_to_string(src_dir().join("lib.rs")).expect("read src/lib.rs"))
}

#[test]
fn every_import_points_down_the_layers() {
    let layers = layers();
    let src = src_dir();
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let mut found = Vec::new();
    for file in &files {
        let relative = file.strip_prefix(&src).expect("under src/");
        // The crate roots: lib.rs only declares the modules, and main.rs is
        // the binary, a crate of its own on top of the library.
        if relative == Path::new("lib.rs") || relative == Path::new("main.rs") {
            continue;
        }
        let text = fs::read_to_string(file).expect("read a source file");
        let shown = format!("src/{}", relative.display());
        found.extend(breaks(&layers, &shown, &text, &module_path(relative)));
    }
    assert!(
        found.is_empty(),
        "{} import(s) break the layers:\n{}",
        found.len(),
        found.join("\n")
    );
}

#[test]
fn every_module_has_a_layer_and_every_layer_names_modules() {
    let lib = fs::read_to_string(src_dir().join("lib.rs")).expect("read src/lib.rs");
    let layers = Layers::parse(&lib);
    let declared: Vec<String> = tokens(&code_only(&lib))
        .windows(2)
        .filter(|w| w[0].text == "mod")
        .map(|w| w[1].text.clone())
        .collect();
    for module in &declared {
        assert!(
            layers.of.contains_key(module),
            "the module {module} has no layer: add it to the layer list in src/lib.rs"
        );
    }
    for module in layers.of.keys() {
        assert!(
            declared.contains(module),
            "the layer list in src/lib.rs names {module}, which src/lib.rs does not declare"
        );
    }
}

/// The check itself: it finds upward imports however they are written, and
/// nothing in comments or strings.
#[test]
fn the_check_catches_upward_imports_and_only_them() {
    let layers = Layers::parse(
        "//! # Layers\n//!\n//! ```text\n//! top            # commands\n//! mid other\n//! low\n//! ```\n",
    );
    let path = |p: &str| module_path(Path::new(p));
    let check = |file: &str, src: &str| breaks(&layers, file, src, &path(file));

    let clean = r##"
        use crate::low::x;
        use super::sibling;
        // use crate::top::x;
        /* crate::top::y /* nested */ crate::top::z */
        const S: &str = "crate::top::x";
        const R: &str = r#"crate::top::"x""#;
        const C: char = '"';
        fn f<'a>(x: &'a str) -> char { let _ = crate::low::g(); 'x' }
        mod tests { use super::super::sibling; }
    "##;
    assert_eq!(check("mid/a.rs", clean), Vec::<String>::new());

    for (file, src, what) in [
        ("mid/a.rs", "use crate::top::Thing;", "crate::top::Thing"),
        (
            "mid/a.rs",
            "fn f() { crate::top::run(1) }",
            "crate::top::run",
        ),
        (
            "mid/a.rs",
            "use crate::{low::x, top::y};",
            "crate::{top, …}",
        ),
        ("mid/a.rs", "use crate::other::z;", "crate::other::z"),
        (
            "mid/a.rs",
            "use super::super::top::z;",
            "super::super::top::z",
        ),
        (
            "mid/a.rs",
            "mod tests { fn t() { super::super::super::top::z(); } }",
            "super::super::super::top::z",
        ),
    ] {
        let found = check(file, src);
        assert_eq!(found.len(), 1, "{src}: {found:?}");
        assert!(
            found[0].starts_with(&format!("{file}:1: `{what}`: mid ")),
            "{src}: {found:?}"
        );
        assert!(
            found[0].contains("a module imports only modules of the layers below its own"),
            "{found:?}"
        );
    }
    // super::super:: that stays inside the module is no escape.
    assert!(check("mid/a/b.rs", "use super::super::x;").is_empty());
    let unknown = check("mid/a.rs", "use crate::nowhere::x;");
    assert!(
        unknown[0].contains("no module of the layer list"),
        "{unknown:?}"
    );
    let unlisted = check("stray.rs", "use crate::low::x;");
    assert!(unlisted[0].contains("has no layer"), "{unlisted:?}");
}
