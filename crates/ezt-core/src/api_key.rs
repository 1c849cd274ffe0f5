//! API keys: `ezt_live_` + 32 base62 random characters + a 6-character base62 CRC32 checksum.
//!
//! Like GitHub's tokens, the prefix makes a leaked key recognisable and the checksum lets a
//! scanner reject look-alikes offline. Only the SHA-256 digest is stored; keys are random enough
//! (≈190 bits) that a slow KDF adds nothing.

use rand::Rng;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Every key starts with this.
pub const PREFIX: &str = "ezt_live_";
const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const RANDOM_LEN: usize = 32;
const CHECKSUM_LEN: usize = 6;

fn base62_fixed(mut v: u64, len: usize) -> String {
    let mut out = vec![b'0'; len];
    for slot in out.iter_mut().rev() {
        *slot = BASE62[(v % 62) as usize];
        v /= 62;
    }
    String::from_utf8(out).expect("ascii")
}

/// A fresh random key (shown once to its owner, never stored).
pub fn generate<R: Rng + ?Sized>(rng: &mut R) -> String {
    let random: String = (0..RANDOM_LEN)
        .map(|_| BASE62[rng.gen_range(0..62)] as char)
        .collect();
    let sum = crc32fast::hash(random.as_bytes());
    format!(
        "{PREFIX}{random}{}",
        base62_fixed(u64::from(sum), CHECKSUM_LEN)
    )
}

/// True when `key` has the right shape and checksum (cheap, offline, before any lookup).
pub fn looks_valid(key: &str) -> bool {
    let Some(rest) = key.strip_prefix(PREFIX) else {
        return false;
    };
    if rest.len() != RANDOM_LEN + CHECKSUM_LEN || !rest.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return false;
    }
    let (random, sum) = rest.split_at(RANDOM_LEN);
    base62_fixed(u64::from(crc32fast::hash(random.as_bytes())), CHECKSUM_LEN) == sum
}

/// The stored form of a key: its SHA-256 digest.
pub fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// The non-secret part kept for display: prefix plus the first 4 random characters.
pub fn display_prefix(key: &str) -> String {
    key.chars().take(PREFIX.len() + 4).collect()
}

/// Compares two digests in constant time.
pub fn digests_match(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.ct_eq(b).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn generated_keys_validate_and_tampered_do_not() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let k = generate(&mut rng);
        assert!(k.starts_with(PREFIX) && k.len() == PREFIX.len() + 38, "{k}");
        assert!(looks_valid(&k), "{k}");
        let mut t = k.clone().into_bytes();
        let i = PREFIX.len() + 3;
        t[i] = if t[i] == b'a' { b'b' } else { b'a' };
        assert!(
            !looks_valid(std::str::from_utf8(&t).unwrap()),
            "checksum catches a changed char"
        );
        assert!(!looks_valid("ezt_live_short"));
        assert!(digests_match(&digest(&k), &digest(&k)));
        assert!(!digests_match(&digest(&k), &digest("other")));
    }
}
