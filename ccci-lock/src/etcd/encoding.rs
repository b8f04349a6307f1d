//! How etcd's gateway writes the fields of its JSON: keys and values in
//! base64 ([`B64`]), int64 values as JSON strings ([`Int`], which also
//! reads a number), fields at their zero value left out; and the reading
//! that forgives what the gateway leaves out or writes in another shape
//! ([`decode`], and the `lenient` field readers the messages use).
//!
//! Reading never refuses valid JSON for its shape: an unknown field is
//! ignored, and a field of an unexpected type reads as its zero value, as a
//! missing one does, so that an answer is judged by what it says (no lease
//! id, no key) and not refused as a whole.

use base64::Engine;
use serde::de::{DeserializeOwned, IgnoredAny};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A value the gateway may send in an unexpected shape: read as `T`, or as
/// `T`'s default.
#[derive(Deserialize)]
#[serde(untagged)]
enum Lenient<T> {
    Is(T),
    Other(IgnoredAny),
}

impl<T: Default> Lenient<T> {
    fn or_default(self) -> T {
        match self {
            Lenient::Is(v) => v,
            Lenient::Other(_) => T::default(),
        }
    }
}

/// A field read as its type, or as its default when it has another shape.
pub(super) fn lenient<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Lenient::<T>::deserialize(d)?.or_default())
}

/// A list field: not a list reads as empty, an item of another shape as
/// the item's default.
pub(super) fn lenient_items<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    let items = Lenient::<Vec<Lenient<T>>>::deserialize(d)?.or_default();
    Ok(items.into_iter().map(Lenient::or_default).collect())
}

/// A field whose presence counts, whatever its value (even `null`).
pub(super) fn present<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Some(lenient(d)?))
}

/// Reads an answer of the gateway. Only text that is not JSON is an error;
/// JSON of another shape than `T` reads as `T`'s default. The answer is
/// read straight into `T` (fields that `T` does not name are skipped, not
/// kept); only when that fails is it read again, to tell the two apart.
pub fn decode<T: DeserializeOwned + Default>(text: &[u8]) -> Result<T, serde_json::Error> {
    match serde_json::from_slice::<T>(text) {
        Ok(answer) => Ok(answer),
        Err(_) => serde_json::from_slice::<IgnoredAny>(text).map(|_| T::default()),
    }
}

/// An int64 field: written as a JSON string; read from a string or a
/// number, and as 0 when missing or malformed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Int(pub i64);

impl Serialize for Int {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0.to_string())
    }
}

impl<'de> Deserialize<'de> for Int {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Int, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            Number(i64),
            Other(IgnoredAny),
        }
        Ok(Int(match Raw::deserialize(d)? {
            Raw::Text(s) => s.parse().unwrap_or(0),
            Raw::Number(n) => n,
            Raw::Other(_) => 0,
        }))
    }
}

/// Bytes, as the gateway carries keys and values: base64. Read as empty
/// when missing or malformed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct B64(pub Vec<u8>);

impl B64 {
    /// The bytes of `bytes`.
    pub fn of(bytes: impl AsRef<[u8]>) -> B64 {
        B64(bytes.as_ref().to_vec())
    }
}

impl Serialize for B64 {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&b64(&self.0))
    }
}

impl<'de> Deserialize<'de> for B64 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<B64, D::Error> {
        let text: Option<String> = lenient(d)?;
        Ok(B64(text
            .and_then(|s| base64::engine::general_purpose::STANDARD.decode(s).ok())
            .unwrap_or_default()))
    }
}

/// Base64, as the gateway carries keys and values.
pub fn b64(bytes: impl AsRef<[u8]>) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The end of the range of every key that starts with `prefix`.
pub fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_encodings() {
        assert_eq!(decode::<Int>(b"\"42\"").unwrap(), Int(42));
        assert_eq!(decode::<Int>(b"7").unwrap(), Int(7));
        assert_eq!(decode::<Int>(b"null").unwrap(), Int(0));
        let key = serde_json::to_string(&B64::of("/ccci/x")).unwrap();
        assert_eq!(decode::<B64>(key.as_bytes()).unwrap().0, b"/ccci/x");
        assert_eq!(prefix_end("/a/"), b"/a0");
        assert_eq!(prefix_end("a\u{7f}"), b"a\x80");
    }
}
