//! Train/validation split by session.
//!
//! A row's side is a function of its session key (or, without one, its
//! rollout id) and the seed only, so every rollout of a session lands on the
//! same side, and re-exporting after more rollouts arrive never moves an old
//! session across: nothing leaks from validation into training.

use crate::agl::index::fnv1a;

/// Which file a row goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// `train.jsonl`.
    Train,
    /// `val.jsonl`.
    Val,
}

/// Puts each group (session) on one side, by a hash of the seed and the group
/// alone.
#[derive(Debug, Clone, Copy)]
pub struct Splitter {
    /// Share of groups that go to training, in (0, 1).
    pub train_fraction: f64,
    /// Another seed gives another split of the same groups.
    pub seed: u64,
}

/// SplitMix64's finalizer: spreads FNV's bits over the whole word.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl Splitter {
    /// The side of `group`'s rows; the same for the same seed and group, in
    /// every export.
    pub fn side(&self, group: &str) -> Side {
        let mut bytes = Vec::with_capacity(8 + group.len());
        bytes.extend_from_slice(&self.seed.to_le_bytes());
        bytes.extend_from_slice(group.as_bytes());
        let unit = (mix(fnv1a(&bytes)) >> 11) as f64 / (1u64 << 53) as f64;
        if unit < self.train_fraction {
            Side::Train
        } else {
            Side::Val
        }
    }
}

/// `--split`: a fraction strictly between 0 and 1.
pub fn parse_fraction(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(f) if f > 0.0 && f < 1.0 => Ok(f),
        _ => Err(format!(
            "{s:?} is not a training fraction between 0 and 1 (e.g. 0.9 keeps 10% of sessions for validation)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sides_follow_the_fraction_and_the_seed() {
        let s = Splitter {
            train_fraction: 0.8,
            seed: 7,
        };
        let groups: Vec<String> = (0..10_000).map(|i| format!("agent:main:{i}")).collect();
        let train = groups.iter().filter(|g| s.side(g) == Side::Train).count();
        assert!((7_700..8_300).contains(&train), "{train}");
        // Stable for a given seed, different under another.
        assert!(groups.iter().all(|g| s.side(g) == s.side(g)));
        let other = Splitter { seed: 8, ..s };
        let moved = groups.iter().filter(|g| s.side(g) != other.side(g)).count();
        assert!(moved > 1_000, "{moved}");
    }

    #[test]
    fn fractions() {
        assert_eq!(parse_fraction("0.9"), Ok(0.9));
        for bad in ["0", "1", "1.5", "-0.1", "nine", "NaN"] {
            assert!(parse_fraction(bad).is_err(), "{bad}");
        }
    }
}
