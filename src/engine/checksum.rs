//! Checksums the way storage reports them, and the agent's comparison rules.
//!
//! - [`Algorithm`]: the algorithms computed locally (ADLER32, MD5, CRC32C), streamed through a
//!   [`Hasher`]; hex output is lower case and zero-padded to the algorithm's width (`%08x` for
//!   the 32-bit ones), as gfal2 prints it.
//! - [`UserChecksum`]: the user's `alg:value` (or algorithm only), algorithm upper-cased,
//!   ADLER32 values left-padded to 8 digits.
//! - [`matches`]: the comparison of §4.2 step 8 (case-insensitive, leading zeros ignored).
//! - [`ChecksumMode`]: the verification mode parsed from `checksum_method` (first letter).

use std::io;

use md5::Digest;
use tokio::io::{AsyncRead, AsyncReadExt};

/// The algorithm used when the user asked for verification without naming one (REST stores
/// `ADLER32` for files without a checksum).
pub const DEFAULT_ALGORITHM: &str = "ADLER32";

/// Read size when hashing a stream: large enough to amortise syscalls, small enough to keep
/// memory per transfer bounded.
const READ_BUFFER: usize = 256 * 1024;

/// An algorithm this process can compute itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Adler32,
    Md5,
    Crc32c,
}

impl Algorithm {
    /// Parse a name, case-insensitively (`adler32`, `MD5`, `crc32c`).
    pub fn parse(name: &str) -> Option<Algorithm> {
        match name.to_ascii_uppercase().as_str() {
            "ADLER32" => Some(Algorithm::Adler32),
            "MD5" => Some(Algorithm::Md5),
            "CRC32C" => Some(Algorithm::Crc32c),
            _ => None,
        }
    }

    /// The upper-case name, as it appears in messages.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Adler32 => "ADLER32",
            Algorithm::Md5 => "MD5",
            Algorithm::Crc32c => "CRC32C",
        }
    }
}

/// An incremental checksum computation.
pub enum Hasher {
    Adler32(adler2::Adler32),
    Md5(Box<md5::Md5>),
    Crc32c(u32),
}

impl Hasher {
    pub fn new(algorithm: Algorithm) -> Hasher {
        match algorithm {
            Algorithm::Adler32 => Hasher::Adler32(adler2::Adler32::new()),
            Algorithm::Md5 => Hasher::Md5(Box::default()),
            Algorithm::Crc32c => Hasher::Crc32c(0),
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Adler32(a) => a.write_slice(data),
            Hasher::Md5(m) => m.update(data),
            Hasher::Crc32c(c) => *c = crc32c::crc32c_append(*c, data),
        }
    }

    /// The checksum as lower-case hex, zero-padded to the algorithm's width.
    pub fn finish(self) -> String {
        match self {
            Hasher::Adler32(a) => format!("{:08x}", a.checksum()),
            Hasher::Md5(m) => m.finalize().iter().map(|b| format!("{b:02x}")).collect(),
            Hasher::Crc32c(c) => format!("{c:08x}"),
        }
    }
}

/// The checksum of everything `reader` yields, read in bounded chunks.
pub async fn of_reader<R: AsyncRead + Unpin>(
    algorithm: Algorithm,
    mut reader: R,
) -> io::Result<String> {
    let mut hasher = Hasher::new(algorithm);
    let mut buf = vec![0u8; READ_BUFFER];
    loop {
        let n = reader.read(&mut buf).await?;
        if n == 0 {
            return Ok(hasher.finish());
        }
        hasher.update(&buf[..n]);
    }
}

/// The checksum of a byte slice (tests, small payloads).
pub fn of_bytes(algorithm: Algorithm, data: &[u8]) -> String {
    let mut hasher = Hasher::new(algorithm);
    hasher.update(data);
    hasher.finish()
}

/// Whether two checksum values are equal under the reference rule: case-insensitive, leading
/// zeros ignored (so `1a2b` equals `00001A2B`).
pub fn matches(a: &str, b: &str) -> bool {
    a.trim_start_matches('0')
        .eq_ignore_ascii_case(b.trim_start_matches('0'))
}

/// A user-supplied checksum: `alg:value`, or the algorithm alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserChecksum {
    /// Upper case (`ADLER32`).
    pub algorithm: String,
    /// The expected value; ADLER32 values are left-padded with zeros to 8 digits.
    pub value: Option<String>,
}

impl UserChecksum {
    /// Parse `alg:value` / `alg`. An empty algorithm falls back to [`DEFAULT_ALGORITHM`]; an
    /// empty value counts as none.
    pub fn parse(text: &str) -> UserChecksum {
        let (alg, value) = match text.split_once(':') {
            Some((a, v)) => (a.trim(), Some(v.trim())),
            None => (text.trim(), None),
        };
        let algorithm = if alg.is_empty() {
            DEFAULT_ALGORITHM.to_string()
        } else {
            alg.to_ascii_uppercase()
        };
        let value = value.filter(|v| !v.is_empty()).map(|v| {
            if algorithm == "ADLER32" && v.len() < 8 {
                format!("{v:0>8}")
            } else {
                v.to_string()
            }
        });
        UserChecksum { algorithm, value }
    }
}

/// What to verify (§4.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ChecksumMode {
    #[default]
    None,
    /// User value against the source.
    Source,
    /// User value against the destination.
    Target,
    /// User value against both ends, and source against destination.
    Both,
}

impl ChecksumMode {
    /// From `checksum_method`: by first letter `t`/`s`/`b` (any case), anything else is none.
    pub fn from_method(method: &str) -> ChecksumMode {
        match method.chars().next().map(|c| c.to_ascii_lowercase()) {
            Some('t') => ChecksumMode::Target,
            Some('s') => ChecksumMode::Source,
            Some('b') => ChecksumMode::Both,
            _ => ChecksumMode::None,
        }
    }

    pub fn includes_source(self) -> bool {
        matches!(self, ChecksumMode::Source | ChecksumMode::Both)
    }

    pub fn includes_target(self) -> bool {
        matches!(self, ChecksumMode::Target | ChecksumMode::Both)
    }

    /// The one-letter form stored by REST and printed in logs.
    pub fn letter(self) -> &'static str {
        match self {
            ChecksumMode::None => "n",
            ChecksumMode::Source => "s",
            ChecksumMode::Target => "t",
            ChecksumMode::Both => "b",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_vectors() {
        // Wikipedia's adler32 example; RFC 1321 md5 of "abc"; crc32c check value of "123456789".
        assert_eq!(of_bytes(Algorithm::Adler32, b"Wikipedia"), "11e60398");
        assert_eq!(of_bytes(Algorithm::Adler32, b""), "00000001");
        assert_eq!(
            of_bytes(Algorithm::Md5, b"abc"),
            "900150983cd24fb0d6963f7d28e17f72"
        );
        assert_eq!(of_bytes(Algorithm::Crc32c, b"123456789"), "e3069283");
        assert_eq!(of_bytes(Algorithm::Crc32c, b""), "00000000");
    }

    #[tokio::test]
    async fn streamed_equals_one_shot() {
        let data: Vec<u8> = (0..(READ_BUFFER * 2 + 17)).map(|i| i as u8).collect();
        for alg in [Algorithm::Adler32, Algorithm::Md5, Algorithm::Crc32c] {
            let streamed = of_reader(alg, &data[..]).await.unwrap();
            assert_eq!(streamed, of_bytes(alg, &data));
        }
    }

    #[test]
    fn comparison_ignores_case_and_leading_zeros() {
        assert!(matches("00001a2b", "1A2B"));
        assert!(matches("0", "00000000"));
        assert!(!matches("1a2b", "1a2c"));
        assert!(!matches("1a2b0", "1a2b"));
    }

    #[test]
    fn user_checksum_parsing() {
        assert_eq!(
            UserChecksum::parse("adler32:1a2b"),
            UserChecksum {
                algorithm: "ADLER32".into(),
                value: Some("00001a2b".into())
            }
        );
        assert_eq!(
            UserChecksum::parse("MD5:abc"),
            UserChecksum {
                algorithm: "MD5".into(),
                value: Some("abc".into())
            }
        );
        assert_eq!(
            UserChecksum::parse("ADLER32"),
            UserChecksum {
                algorithm: "ADLER32".into(),
                value: None
            }
        );
        assert_eq!(UserChecksum::parse("adler32:").value, None);
        assert_eq!(UserChecksum::parse(":42").algorithm, "ADLER32");
        assert_eq!(Algorithm::parse("crc32c"), Some(Algorithm::Crc32c));
        assert_eq!(Algorithm::parse("sha1"), None);
    }

    #[test]
    fn mode_by_first_letter() {
        assert_eq!(ChecksumMode::from_method("target"), ChecksumMode::Target);
        assert_eq!(ChecksumMode::from_method("t"), ChecksumMode::Target);
        assert_eq!(ChecksumMode::from_method("source"), ChecksumMode::Source);
        assert_eq!(ChecksumMode::from_method("both"), ChecksumMode::Both);
        assert_eq!(ChecksumMode::from_method("B"), ChecksumMode::Both);
        assert_eq!(ChecksumMode::from_method("none"), ChecksumMode::None);
        assert_eq!(ChecksumMode::from_method("compare"), ChecksumMode::None);
        assert_eq!(ChecksumMode::from_method(""), ChecksumMode::None);
        assert!(ChecksumMode::Both.includes_source() && ChecksumMode::Both.includes_target());
        assert!(!ChecksumMode::Target.includes_source());
    }
}
