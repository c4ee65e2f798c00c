//! The strict JSON reader: exactly one JSON value, with no object key repeated at any depth and
//! nesting no deeper than [`MAX_DEPTH`], built like serde_json's own `Value`.

use std::cell::Cell;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

use super::{MAX_DEPTH, McpError};

/// Parses `text` as exactly one JSON value (whitespace around it allowed), refusing repeated
/// keys and nesting beyond [`MAX_DEPTH`].
pub(super) fn parse_json(text: &str) -> Result<Value, McpError> {
    let reason = Cell::new(None);
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let seed = StrictValue {
        depth: 0,
        reason: &reason,
    };
    seed.deserialize(&mut deserializer)
        .and_then(|value| deserializer.end().map(|()| value))
        .map_err(|_| reason.take().unwrap_or(McpError::InvalidJson))
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
    reason: &'r Cell<Option<McpError>>,
}

// === impl StrictValue ===

impl StrictValue<'_> {
    fn refuse<E: de::Error>(self, reason: McpError) -> E {
        let error = E::custom(&reason);
        self.reason.set(Some(reason));
        error
    }

    /// The seed for the members of a container opened at this level.
    fn enter<E: de::Error>(self) -> Result<Self, E> {
        if self.depth >= MAX_DEPTH {
            return Err(self.refuse(McpError::TooDeep));
        }
        Ok(StrictValue {
            depth: self.depth + 1,
            reason: self.reason,
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
            .ok_or_else(|| self.refuse(McpError::InvalidJson))
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
                return Err(self.refuse(McpError::DuplicateKey));
            }
            let value = map.next_value_seed(inner)?;
            members.insert(key, value);
        }
        Ok(Value::Object(members))
    }
}
