//! Small helpers every stage uses: files replaced whole, random ids, the
//! clock, percent-decoding. They import nothing of the crate.

pub mod clock;
pub mod fs;
pub mod ids;
pub mod percent;
