//! Random ids: OTLP trace and span ids, and the hex ids of rollouts.

/// `N` random bytes, never all zero (OTLP's invalid trace or span id).
pub fn random_id<const N: usize>() -> [u8; N] {
    loop {
        let id: [u8; N] = rand::random();
        if id != [0; N] {
            return id;
        }
    }
}

/// `N` random bytes as lowercase hex (`2 * N` characters).
pub fn random_hex<const N: usize>() -> String {
    hex::encode(random_id::<N>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_random_and_never_zero() {
        let a: [u8; 8] = random_id();
        assert_ne!(a, [0; 8]);
        assert_ne!(random_id::<16>(), random_id::<16>());
        let hex = random_hex::<6>();
        assert_eq!(hex.len(), 12);
        assert!(hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
    }
}
