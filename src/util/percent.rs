//! Percent-encoding of URL parts.

/// `%XX` escapes decoded; `None` if one is malformed or the result is not
/// UTF-8.
pub fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Escapes `s` for a URL path segment: every byte but ASCII letters,
/// digits and `-_.~` becomes `%XX`.
pub fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_segments_escape_and_decode_back() {
        assert_eq!(percent_encode("ro-1/..?"), "ro-1%2F..%3F");
        assert_eq!(percent_decode("ro-1%2F..%3F").as_deref(), Some("ro-1/..?"));
        assert_eq!(percent_decode("a%2"), None);
    }
}
