//! JSON from the outside world, read strictly and described in people's words.
//!
//! - [`CheckedJson`] walks any value without building it, refusing what a `Value` could not
//!   hold (numbers out of range, lone surrogates) and **duplicate keys** at any depth: two
//!   parsers that keep different copies of a key (first wins, last wins) must never see
//!   different requests in one body.
//! - [`parse_object`] reads a request body that must be one JSON object.
//! - [`syntax_detail`] turns serde's syntax errors into "not valid JSON at line L column C".

use std::borrow::Cow;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// Any JSON value, read and dropped, with duplicate keys refused. Checking each payload this
/// way is a hot path of ingest, so nothing is allocated for keys without escapes.
pub struct CheckedJson;

impl<'de> Deserialize<'de> for CheckedJson {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(CheckedJsonVisitor)
    }
}

struct CheckedJsonVisitor;

/// An object key, borrowed from the input unless it had escapes.
struct Key<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object key")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v)))
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

impl<'de> Visitor<'de> for CheckedJsonVisitor {
    type Value = CheckedJson;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<CheckedJson, E> {
        Ok(CheckedJson)
    }

    fn visit_i64<E>(self, _: i64) -> Result<CheckedJson, E> {
        Ok(CheckedJson)
    }

    fn visit_u64<E>(self, _: u64) -> Result<CheckedJson, E> {
        Ok(CheckedJson)
    }

    fn visit_f64<E>(self, _: f64) -> Result<CheckedJson, E> {
        Ok(CheckedJson)
    }

    fn visit_str<E>(self, _: &str) -> Result<CheckedJson, E> {
        Ok(CheckedJson)
    }

    fn visit_unit<E>(self) -> Result<CheckedJson, E> {
        Ok(CheckedJson)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<CheckedJson, A::Error> {
        while seq.next_element::<CheckedJson>()?.is_some() {}
        Ok(CheckedJson)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<CheckedJson, A::Error> {
        // Objects in telemetry are small: a linear scan beats hashing for them.
        let mut seen: Vec<Key<'de>> = Vec::new();
        while let Some(key) = map.next_key::<Key<'de>>()? {
            if seen.iter().any(|k| k.0 == key.0) {
                return Err(de::Error::custom(format_args!(
                    "duplicate key `{}`",
                    key.0.escape_debug()
                )));
            }
            map.next_value::<CheckedJson>()?;
            seen.push(key);
        }
        Ok(CheckedJson)
    }
}

/// Why a body is not one acceptable JSON object.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ObjectError {
    /// Nothing but whitespace.
    #[error("the body is empty; send a JSON object")]
    Empty,
    /// Valid JSON, but not an object.
    #[error("the body must be a JSON object")]
    NotAnObject,
    /// Not JSON, or JSON that may not be accepted (duplicate keys).
    #[error("{0}")]
    Invalid(String),
}

/// Parses a body that must be one JSON object, refusing duplicate keys at any depth.
pub fn parse_object(bytes: &[u8]) -> Result<Map<String, Value>, ObjectError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ObjectError::Empty);
    }
    let describe = |e: serde_json::Error| ObjectError::Invalid(body_error(&e));
    serde_json::from_slice::<CheckedJson>(bytes).map_err(describe)?;
    match serde_json::from_slice::<Value>(bytes).map_err(describe)? {
        Value::Object(map) => Ok(map),
        _ => Err(ObjectError::NotAnObject),
    }
}

/// A sentence about a body serde could not read: where it stops being JSON, or what is wrong
/// with it (`duplicate key `a` at line 1 column 12`).
pub fn body_error(e: &serde_json::Error) -> String {
    syntax_detail(e, None).unwrap_or_else(|| format!("the body is not acceptable JSON: {e}"))
}

/// "body is not valid JSON at line L column C" for a syntax or end-of-input error (`line`
/// replaces serde's line when the text is one line of a larger body, as in NDJSON); `None`
/// for errors about a value's type or content, which the caller describes by field.
pub fn syntax_detail(e: &serde_json::Error, line: Option<usize>) -> Option<String> {
    use serde_json::error::Category;
    let why = match e.classify() {
        Category::Syntax => "",
        Category::Eof => " (it ends before the value does)",
        Category::Data | Category::Io => return None,
    };
    Some(format!(
        "body is not valid JSON at line {} column {}{why}",
        line.unwrap_or(e.line()),
        e.column()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str) -> Result<(), String> {
        serde_json::from_str::<CheckedJson>(text)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn duplicate_keys_are_refused_at_any_depth_and_escapes_do_not_hide_them() {
        assert!(check(r#"{"a":1,"b":{"a":2},"c":[{"a":1},{"a":2}]}"#).is_ok());
        assert!(
            check(r#"{"a":1,"a":2}"#)
                .unwrap_err()
                .contains("duplicate key `a`")
        );
        assert!(
            check(r#"{"p":{"x":[{"k":1,"k":1}]}}"#)
                .unwrap_err()
                .contains("`k`")
        );
        assert!(
            check(r#"{"\u0061":1,"a":2}"#)
                .unwrap_err()
                .contains("duplicate key `a`")
        );
        assert!(check("1e400").is_err());
        assert!(check(r#""\ud800""#).is_err());
    }

    #[test]
    fn objects_are_parsed_strictly_and_errors_say_where() {
        assert_eq!(parse_object(b"  "), Err(ObjectError::Empty));
        assert_eq!(parse_object(b"[1]"), Err(ObjectError::NotAnObject));
        let ObjectError::Invalid(dup) =
            parse_object(br#"{"update_type":"a","update_type":"b"}"#).unwrap_err()
        else {
            panic!("duplicate keys are invalid");
        };
        assert!(dup.contains("duplicate key `update_type`"), "{dup}");
        let ObjectError::Invalid(syntax) = parse_object(b"{nope").unwrap_err() else {
            panic!("not JSON");
        };
        assert_eq!(syntax, "body is not valid JSON at line 1 column 2");
        let ObjectError::Invalid(eof) = parse_object(b"{\"a\":").unwrap_err() else {
            panic!("cut short");
        };
        assert!(eof.ends_with("(it ends before the value does)"), "{eof}");
        assert_eq!(parse_object(br#"{"a":1}"#).unwrap()["a"], 1);
    }
}
