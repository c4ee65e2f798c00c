//! The strict JSON reader for attacker-controlled JSON (MCP bodies, JWT headers and claims):
//! exactly one JSON value, with no object key repeated at any depth and nesting no deeper than a
//! given bound, built like serde_json's own `Value`.
//!
//! RFC 8259 s4 leaves repeated member names to the implementation and RFC 7515 s5.2 lets a JWS
//! recipient pick the last one; parsers that pick differently then read one document two ways
//! (an authorizer seeing `"sub":"alice"`, an upstream `"sub":"admin"`). Refusing is the only
//! answer every reader agrees with.

use std::cell::Cell;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// Why a text is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StrictJsonError {
    #[error("not valid JSON")]
    Invalid,
    #[error("a key is repeated in a JSON object")]
    DuplicateKey,
    #[error("JSON nested too deeply")]
    TooDeep,
}

/// Parses `text` as exactly one JSON value (whitespace around it allowed), refusing repeated
/// keys and containers nested more than `max_depth` deep.
pub fn parse(text: &str, max_depth: usize) -> Result<Value, StrictJsonError> {
    let reason = Cell::new(None);
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let seed = StrictValue {
        depth: 0,
        max_depth,
        reason: &reason,
    };
    seed.deserialize(&mut deserializer)
        .and_then(|value| deserializer.end().map(|()| value))
        .map_err(|_| reason.take().unwrap_or(StrictJsonError::Invalid))
}

/// Builds a `serde_json::Value` like serde_json's own `Deserialize` impl, but errors on a
/// repeated object key and counts depth. `reason` records why it refused, since a
/// `serde_json::Error` made from a custom message can only be told apart by its text.
///
/// Keys are compared after unescaping, so `"a"` and `"\u0061"` are the same key, as they are
/// to every JSON parser.
#[derive(Clone, Copy)]
struct StrictValue<'r> {
    /// Containers enclosing the value being read.
    depth: usize,
    max_depth: usize,
    reason: &'r Cell<Option<StrictJsonError>>,
}

// === impl StrictValue ===

impl StrictValue<'_> {
    fn refuse<E: de::Error>(self, reason: StrictJsonError) -> E {
        let error = E::custom(reason);
        self.reason.set(Some(reason));
        error
    }

    /// The seed for the members of a container opened at this level.
    fn enter<E: de::Error>(self) -> Result<Self, E> {
        if self.depth >= self.max_depth {
            return Err(self.refuse(StrictJsonError::TooDeep));
        }
        Ok(StrictValue {
            depth: self.depth + 1,
            ..self
        })
    }
}

impl<'de> DeserializeSeed<'de> for StrictValue<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for StrictValue<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        // serde_json never produces a non-finite number; refusing one keeps this total.
        Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| self.refuse(StrictJsonError::Invalid))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let inner = self.enter()?;
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(inner)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let inner = self.enter()?;
        let mut members = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if members.contains_key(&key) {
                return Err(self.refuse(StrictJsonError::DuplicateKey));
            }
            let value = map.next_value_seed(inner)?;
            members.insert(key, value);
        }
        Ok(Value::Object(members))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_of_value_reads_as_serde_json_reads_it() {
        let text = r#" {"t": true, "f": false, "n": null, "neg": -7, "big": 18446744073709551615,
            "x": 0.5, "e": 1e300, "s": "caf\u00e9 \"q\"", "plain": "a", "a": [1, [], {}],
            "o": {"k": [null, "v"]}} "#;
        let expected: Value = serde_json::from_str(text).unwrap();
        assert_eq!(parse(text, 3), Ok(expected));
        assert_eq!(parse("\"only\"", 0), Ok(Value::from("only")));
        assert_eq!(parse("false", 0), Ok(Value::Bool(false)));
        assert_eq!(parse("-1.25", 0), Ok(Value::from(-1.25)));
    }

    #[test]
    fn a_repeated_key_is_refused_at_any_depth_even_when_spelled_differently() {
        for text in [
            r#"{"sub":"alice","sub":"admin"}"#,
            r#"{"sub":"alice","\u0073ub":"admin"}"#,
            r#"{"a":[{"k":1,"k":1}]}"#,
        ] {
            assert_eq!(parse(text, 8), Err(StrictJsonError::DuplicateKey), "{text}");
        }
        assert!(parse(r#"{"a":{"a":1},"b":{"a":1}}"#, 8).is_ok());
    }

    #[test]
    fn nesting_is_refused_one_level_past_the_bound() {
        assert!(parse("[[1]]", 2).is_ok());
        assert_eq!(parse("[[1]]", 1), Err(StrictJsonError::TooDeep));
        assert!(parse(r#"{"a":{"b":1}}"#, 2).is_ok());
        assert_eq!(parse(r#"{"a":{"b":1}}"#, 1), Err(StrictJsonError::TooDeep));
        assert_eq!(parse("[]", 0), Err(StrictJsonError::TooDeep));
        assert_eq!(parse("1", 0), Ok(Value::from(1)));
    }

    #[test]
    fn anything_but_exactly_one_value_is_invalid() {
        for text in ["", " ", "{} {}", "[1,]", "{\"a\" 1}", "nul", "1 x"] {
            assert_eq!(parse(text, 8), Err(StrictJsonError::Invalid), "{text:?}");
        }
    }
}
