//! Looking at rollouts from the terminal: `oclagl ls` (one line per rollout,
//! from the view's summaries) and `oclagl show` (one rollout's span tree,
//! from its trace file).

pub mod ls;
pub mod show;

use std::io::IsTerminal;

/// Why `oclagl ls` or `oclagl show` failed.
#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    /// No such rollout, or no summaries yet; the message says where it looked
    /// and what to pass.
    #[error("{0}")]
    NotFound(String),
    /// A file or folder cannot be read.
    #[error("cannot read {path}: {reason}")]
    Read {
        /// The file or folder.
        path: String,
        /// The error.
        reason: String,
    },
    /// Writing to stdout failed.
    #[error("cannot write the output")]
    Write(#[from] std::io::Error),
}

/// ANSI colours, only when stdout is a terminal and `NO_COLOR` is unset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Paint {
    /// True when colours are written.
    pub on: bool,
}

impl Paint {
    /// Colours when stdout is a terminal and `NO_COLOR` is unset.
    pub fn for_stdout() -> Paint {
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        Paint {
            on: std::io::stdout().is_terminal() && !no_color,
        }
    }

    fn wrap(self, code: &str, text: &str) -> String {
        if self.on {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }

    /// `text` in red (failures, errors), or as is when colours are off.
    pub fn red(self, text: &str) -> String {
        self.wrap("31", text)
    }

    /// `text` in green (successes, rewards), or as is.
    pub fn green(self, text: &str) -> String {
        self.wrap("32", text)
    }

    /// `text` in yellow (rollouts still running), or as is.
    pub fn yellow(self, text: &str) -> String {
        self.wrap("33", text)
    }

    /// `text` dimmed (details under a span), or as is.
    pub fn dim(self, text: &str) -> String {
        self.wrap("2", text)
    }

    /// `text` in bold (headers, span names), or as is.
    pub fn bold(self, text: &str) -> String {
        self.wrap("1", text)
    }

    /// A rollout status in its colour, padded to `width` first.
    pub fn status(self, status: &str, width: usize) -> String {
        let padded = format!("{status:<width$}");
        match status {
            "succeeded" => self.green(&padded),
            "failed" => self.red(&padded),
            _ => self.yellow(&padded),
        }
    }
}

/// `1.234s`, `2m03s`, `1h02m`.
pub fn duration(secs: f64) -> String {
    if secs < 60.0 {
        format!("{secs:.3}s")
    } else if secs < 3600.0 {
        format!("{}m{:02}s", (secs / 60.0) as u64, (secs % 60.0) as u64)
    } else {
        format!(
            "{}h{:02}m",
            (secs / 3600.0) as u64,
            (secs % 3600.0 / 60.0) as u64
        )
    }
}

/// A reward for people: `1`, `0.5`, `0.333`.
pub fn number(x: f64) -> String {
    let s = format!("{x:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_durations_read_well() {
        assert_eq!(number(1.0), "1");
        assert_eq!(number(0.5), "0.5");
        assert_eq!(number(1.0 / 3.0), "0.333");
        assert_eq!(number(-2.25), "-2.25");
        assert_eq!(duration(1.5), "1.500s");
        assert_eq!(duration(123.0), "2m03s");
        assert_eq!(duration(3720.0), "1h02m");
        let off = Paint { on: false };
        assert_eq!(off.red("x"), "x");
        assert_eq!(Paint { on: true }.red("x"), "\x1b[31mx\x1b[0m");
        assert_eq!(off.status("failed", 9), "failed   ");
    }
}
