//! Small helpers every stage uses: files replaced whole, random ids, the
//! clock, percent-decoding, counted nouns. They import nothing of the crate.

pub mod clock;
pub mod fs;
pub mod ids;
pub mod percent;
pub mod progress;

/// `n` and the noun, singular for one: `1 row`, `0 rows`, `2 rows`.
pub fn count(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// The message of an error and of each of its causes, `: `-separated
/// (reqwest's and hyper's top messages leave the cause out).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}

/// The wait a `Retry-After` header's value asks for, in seconds (whole or
/// fractional); `None` for anything else (an HTTP date, a negative number).
pub fn retry_after(value: &str) -> Option<std::time::Duration> {
    let seconds = value.trim().parse::<f64>().ok()?;
    std::time::Duration::try_from_secs_f64(seconds).ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn retry_after_reads_seconds_only() {
        use std::time::Duration;
        assert_eq!(super::retry_after(" 3 "), Some(Duration::from_secs(3)));
        assert_eq!(super::retry_after("0.5"), Some(Duration::from_millis(500)));
        assert_eq!(super::retry_after("-1"), None);
        assert_eq!(super::retry_after("NaN"), None);
        assert_eq!(super::retry_after("1e300"), None);
        assert_eq!(super::retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
    }

    #[test]
    fn one_is_singular_and_every_other_count_plural() {
        assert_eq!(super::count(1, "row", "rows"), "1 row");
        assert_eq!(super::count(0, "row", "rows"), "0 rows");
        assert_eq!(super::count(2, "message", "messages"), "2 messages");
    }
}
