//! Weft step `hash`: `{"data": "abc", "algorithm": "crc32"}` → `{"algorithm": "crc32", "digest": "352441c2"}`.
//!
//! The digest is lowercase hex of the UTF-8 bytes of `data`, big-endian for the integer hashes.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use weft_plugin_sdk::{Context, Step, StepError};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Algorithm {
    /// SHA-256 (64 hex digits).
    #[default]
    Sha256,
    /// CRC-32/ISO-HDLC, as in zlib and PNG (8 hex digits).
    Crc32,
    /// 64-bit FNV-1a (16 hex digits); fast, not cryptographic.
    Fnv1a,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Input {
    /// The text to hash (its UTF-8 bytes).
    pub data: String,
    /// Defaults to `sha256`.
    #[serde(default)]
    pub algorithm: Option<Algorithm>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct Output {
    pub algorithm: Algorithm,
    /// Lowercase hex.
    pub digest: String,
}

pub struct Hash;

impl Step for Hash {
    type Input = Input;
    type Output = Output;
    const NAME: &'static str = "hash";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str = "Hashes `data` with SHA-256 (default), CRC-32 or FNV-1a.";

    fn run(_: &Context, input: Input) -> Result<Output, StepError> {
        let algorithm = input.algorithm.unwrap_or_default();
        Ok(Output {
            algorithm,
            digest: digest(algorithm, input.data.as_bytes()),
        })
    }
}

weft_plugin_sdk::export_step!(Hash);

/// The lowercase hex digest of `data`.
pub fn digest(algorithm: Algorithm, data: &[u8]) -> String {
    match algorithm {
        Algorithm::Sha256 => hex::encode(Sha256::digest(data)),
        Algorithm::Crc32 => format!("{:08x}", crc32fast::hash(data)),
        Algorithm::Fnv1a => format!("{:016x}", fnv1a_64(data)),
    }
}

/// 64-bit FNV-1a.
pub fn fnv1a_64(data: &[u8]) -> u64 {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    data.iter().fold(OFFSET_BASIS, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(PRIME)
    })
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};
    use weft_plugin_sdk::step::run_json;

    use super::*;

    fn run(input: Value) -> Result<Value, StepError> {
        let ctx = Context::new("run", "step", 1);
        run_json::<Hash>(&ctx, &input.to_string()).map(|out| serde_json::from_str(&out).unwrap())
    }

    #[test]
    fn known_digests() {
        // Published test vectors.
        assert_eq!(
            digest(Algorithm::Sha256, b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(digest(Algorithm::Crc32, b"123456789"), "cbf43926");
        assert_eq!(digest(Algorithm::Fnv1a, b""), "cbf29ce484222325");
        assert_eq!(digest(Algorithm::Fnv1a, b"a"), "af63dc4c8601ec8c");
        assert_eq!(digest(Algorithm::Fnv1a, b"foobar"), "85944171f73967e8");
    }

    #[test]
    fn defaults_to_sha256() {
        assert_eq!(
            run(json!({"data": ""})).unwrap(),
            json!({
                "algorithm": "sha256",
                "digest": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
            })
        );
    }

    #[test]
    fn names_the_algorithm_used() {
        assert_eq!(
            run(json!({"data": "123456789", "algorithm": "crc32"})).unwrap(),
            json!({"algorithm": "crc32", "digest": "cbf43926"})
        );
    }

    #[test]
    fn rejects_unknown_algorithms_and_non_strings() {
        for input in [
            json!({"data": "x", "algorithm": "md5"}),
            json!({"data": 1}),
            json!({"algorithm": "crc32"}),
        ] {
            let err = run(input).unwrap_err();
            assert_eq!((err.code.as_str(), err.retryable), ("invalid_input", false));
        }
    }
}
