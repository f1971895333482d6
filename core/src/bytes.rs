//! Serde for `Vec<u8>` fields as one byte string: `#[serde(with = "nines_core::bytes")]`.
//!
//! In postcard (commands, responses, snapshots) a byte string is a length and the bytes, the same
//! encoding as a sequence of u8, so using it changes no stored or replicated format; but it is
//! copied in one go, where a plain `Vec<u8>` is decoded byte by byte (a visible share of the
//! leader's CPU at 15,000 writes/s). Self-describing formats (JSON) still read a sequence.

use std::fmt;

use serde::{de, Deserializer, Serializer};

/// Serialize `data` as bytes.
pub fn serialize<S: Serializer>(data: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_bytes(data)
}

/// Deserialize bytes (or, from self-describing formats, a sequence of u8).
pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
    deserializer.deserialize_byte_buf(BytesVisitor)
}

/// Accepts every way a format may hand over bytes.
struct BytesVisitor;

impl<'de> de::Visitor<'de> for BytesVisitor {
    type Value = Vec<u8>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("bytes")
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
        Ok(v.to_vec())
    }

    fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
        Ok(v)
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64 * 1024));
        while let Some(b) = seq.next_element()? {
            out.push(b);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct WithBytes {
        #[serde(with = "super")]
        data: Vec<u8>,
        n: u64,
    }

    #[test]
    fn postcard_encodes_like_a_byte_vector() {
        let value = WithBytes {
            data: vec![0, 1, 2, 255],
            n: 300,
        };
        let plain = (vec![0u8, 1, 2, 255], 300u64);
        let bytes = postcard::to_allocvec(&value).expect("serializes");
        assert_eq!(bytes, postcard::to_allocvec(&plain).expect("serializes"));
        let back: WithBytes = postcard::from_bytes(&bytes).expect("decodes");
        assert_eq!(back, value);
    }

    #[test]
    fn json_reads_a_sequence() {
        let back: WithBytes = serde_json::from_str(r#"{"data":[7,8],"n":1}"#).expect("decodes");
        assert_eq!(
            back,
            WithBytes {
                data: vec![7, 8],
                n: 1
            }
        );
    }
}
