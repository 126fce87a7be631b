//! Versioned encoding of stored rows: one version byte, then the bincode (v2, standard config)
//! encoding of the row struct. A row type bumps its version when its layout changes and keeps
//! decoding the old versions through [`Record::decode_old`], so a newer ftsd reads any older
//! database. bincode is used only here.

use serde::{Serialize, de::DeserializeOwned};

/// Why stored bytes could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("empty value")]
    Empty,
    #[error("{row} version {version} is not known to this ftsd")]
    UnknownVersion { row: &'static str, version: u8 },
    #[error("{row}: {message}")]
    Malformed { row: &'static str, message: String },
}

/// A row type stored through the codec.
pub trait Record: Serialize + DeserializeOwned {
    /// Name used in error messages.
    const NAME: &'static str;
    /// Current layout version, written in front of every encoded value.
    const VERSION: u8;

    /// Decode a value written with an older `version`. Rows that never changed have none.
    fn decode_old(version: u8, _body: &[u8]) -> Result<Self, CodecError> {
        Err(CodecError::UnknownVersion {
            row: Self::NAME,
            version,
        })
    }
}

fn config() -> bincode::config::Configuration {
    bincode::config::standard()
}

pub fn encode<R: Record>(row: &R) -> Vec<u8> {
    let mut out = vec![R::VERSION];
    // Encoding plain structs into a Vec has no failure mode: bincode's serde encoder only
    // fails on writer errors (a Vec never refuses bytes) or on unsized sequences, which no
    // stored row contains (every collection is a Vec or a map with a known length).
    if let Err(e) = bincode::serde::encode_into_std_write(row, &mut out, config()) {
        unreachable!("encoding {} into memory failed: {e}", R::NAME);
    }
    out
}

pub fn decode<R: Record>(bytes: &[u8]) -> Result<R, CodecError> {
    let (&version, body) = bytes.split_first().ok_or(CodecError::Empty)?;
    if version != R::VERSION {
        return R::decode_old(version, body);
    }
    decode_body(body)
}

/// Decode a body of the current or an older struct (for `decode_old` implementations).
pub fn decode_body<T: DeserializeOwned + Record>(body: &[u8]) -> Result<T, CodecError> {
    let (row, used) =
        bincode::serde::decode_from_slice(body, config()).map_err(|e| CodecError::Malformed {
            row: T::NAME,
            message: e.to_string(),
        })?;
    if used != body.len() {
        return Err(CodecError::Malformed {
            row: T::NAME,
            message: format!("{} trailing bytes", body.len() - used),
        });
    }
    Ok(row)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct V1 {
        a: u32,
    }
    impl Record for V1 {
        const NAME: &'static str = "test";
        const VERSION: u8 = 1;
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct V2 {
        a: u32,
        b: String,
    }
    impl Record for V2 {
        const NAME: &'static str = "test";
        const VERSION: u8 = 2;
        fn decode_old(version: u8, body: &[u8]) -> Result<Self, CodecError> {
            match version {
                1 => {
                    let old: V1 = decode_body(body)?;
                    Ok(V2 {
                        a: old.a,
                        b: String::new(),
                    })
                }
                _ => Err(CodecError::UnknownVersion {
                    row: Self::NAME,
                    version,
                }),
            }
        }
    }

    #[test]
    fn round_trip_and_upgrade_from_an_older_version() {
        let v2 = V2 {
            a: 7,
            b: "x".into(),
        };
        assert_eq!(decode::<V2>(&encode(&v2)).unwrap(), v2);
        let old = encode(&V1 { a: 9 });
        assert_eq!(
            decode::<V2>(&old).unwrap(),
            V2 {
                a: 9,
                b: String::new()
            }
        );
        let mut future = encode(&v2);
        future[0] = 3;
        assert!(matches!(
            decode::<V2>(&future),
            Err(CodecError::UnknownVersion { version: 3, .. })
        ));
        assert!(decode::<V2>(&[]).is_err());
        assert!(decode::<V1>(&[1, 0xff, 0xff, 0xff, 0xff, 0xff]).is_err());
    }
}
