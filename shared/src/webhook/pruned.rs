//! A `serde_json::Value` of only the parts of a webhook the fulfilment reads, built in one
//! pass over the bytes.
//!
//! The worker used to build the whole tree of every 2–3 kB body (billing, payment details,
//! custom parameters…) to read a dozen fields: JSON and the tree's map inserts were ~11 %
//! of its CPU. The pruned tree keeps the same shape along the paths [`FULFILMENT`] names
//! and drops the rest (still checking the whole body is well-formed JSON), so the existing
//! `Value` readers run on it unchanged and read exactly what they read before: a path
//! leads to the same value, a missing key is still missing, and a non-object where the
//! shape expects an object reads as `null`, on which every further lookup finds nothing,
//! as it would have on the original value.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// What to keep below a key.
pub(super) enum Shape {
    /// The whole value, whatever it is.
    Whole,
    /// Only these keys of an object.
    Object(&'static [(&'static str, Shape)]),
}

use Shape::{Object, Whole};

/// Every path `fulfilment.rs` reads, in both delivery modes and in payments mode.
pub(super) static FULFILMENT: Shape = Object(&[
    ("notification_type", Whole),
    ("order", Object(&[("id", Whole), ("mode", Whole)])),
    ("user", Object(&[("id", Whole), ("external_id", Whole)])),
    ("items", Whole),
    ("transaction", Object(&[("id", Whole), ("dry_run", Whole)])),
    ("settings", Object(&[("project_id", Whole)])),
    (
        "billing",
        Object(&[
            ("transaction", Object(&[("id", Whole)])),
            ("settings", Object(&[("project_id", Whole)])),
        ]),
    ),
    (
        "purchase",
        Object(&[
            ("virtual_items", Object(&[("items", Whole)])),
            ("virtual_currency", Whole),
        ]),
    ),
]);

/// Every path [`super::summarize`] reads (the edge's summary of any webhook type).
pub(super) static SUMMARY: Shape = Object(&[
    ("notification_type", Whole),
    ("order", Object(&[("id", Whole)])),
    (
        "user",
        Object(&[("id", Whole), ("external_id", Whole), ("public_id", Whole)]),
    ),
    ("transaction", Object(&[("id", Whole)])),
    ("settings", Object(&[("project_id", Whole)])),
    (
        "billing",
        Object(&[
            ("transaction", Object(&[("id", Whole)])),
            ("settings", Object(&[("project_id", Whole)])),
        ]),
    ),
]);

/// Every path an order event reads (`order_events::OrderEvent::from_webhook`).
pub(super) static ORDER_VIEW: Shape = Object(&[
    ("notification_type", Whole),
    (
        "order",
        Object(&[
            ("id", Whole),
            ("amount", Whole),
            ("currency", Whole),
            ("mode", Whole),
        ]),
    ),
    ("user", Object(&[("id", Whole), ("external_id", Whole)])),
    ("items", Whole),
    ("settings", Object(&[("project_id", Whole)])),
    (
        "billing",
        Object(&[("settings", Object(&[("project_id", Whole)]))]),
    ),
]);

/// Only the order id an unverified body claims ([`super::claimed_order_id`]).
pub(super) static CLAIM: Shape = Object(&[("order", Object(&[("id", Whole)]))]);

/// Parses `body` keeping only what `shape` names.
pub(super) fn parse(body: &[u8], shape: &'static Shape) -> serde_json::Result<Value> {
    // The whole body is checked as UTF-8 at once (std's ASCII fast path) instead of string
    // by string: a 3.7 kB webhook is mostly strings, and serde_json's per-string check was
    // a tenth of this reader's time. Equivalent for JSON: a byte outside a string that is
    // not ASCII is a syntax error either way.
    let text = std::str::from_utf8(body).map_err(|e| {
        <serde_json::Error as de::Error>::custom(format!(
            "invalid UTF-8 at byte {}",
            e.valid_up_to()
        ))
    })?;
    let mut de = serde_json::Deserializer::from_str(text);
    let value = Pruned(shape).deserialize(&mut de)?;
    de.end()?;
    Ok(value)
}

struct Pruned(&'static Shape);

impl<'de> DeserializeSeed<'de> for Pruned {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        match self.0 {
            Whole => serde::Deserialize::deserialize(d),
            Object(fields) => d.deserialize_any(Fields(fields)),
        }
    }
}

/// Keeps the listed keys of an object; anything that is not an object reads as `null`.
struct Fields(&'static [(&'static str, Shape)]);

impl<'de> Visitor<'de> for Fields {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut kept = Map::new();
        while let Some(field) = map.next_key_seed(Key(self.0))? {
            match field {
                Some((name, shape)) => {
                    // A repeated key: the last one wins, as in a full `Value`.
                    kept.insert((*name).to_owned(), map.next_value_seed(Pruned(shape))?);
                }
                None => {
                    map.next_value::<Checked>()?;
                }
            }
        }
        Ok(Value::Object(kept))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        while seq.next_element::<Checked>()?.is_some() {}
        Ok(Value::Null)
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
}

/// An object key, matched against the kept names without allocating.
struct Key(&'static [(&'static str, Shape)]);

impl<'de> DeserializeSeed<'de> for Key {
    type Value = Option<&'static (&'static str, Shape)>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key {
    type Value = Option<&'static (&'static str, Shape)>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<Self::Value, E> {
        Ok(self.0.iter().find(|(name, _)| *name == key))
    }
}

/// A value read and dropped, checked exactly as a `Value` would check it. `IgnoredAny` is
/// not enough: serde_json skips it without validating UTF-8 or `\u` surrogates, without
/// the range of numbers (`1e400`) and without the nesting limit, so a body the full tree
/// refuses would be read (found by the `pruned_vs_full` fuzz target).
pub(super) struct Checked;

impl<'de> serde::Deserialize<'de> for Checked {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Checked, D::Error> {
        d.deserialize_any(Checked)
    }
}

impl<'de> Visitor<'de> for Checked {
    type Value = Checked;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Checked, A::Error> {
        while map.next_entry::<Checked, Checked>()?.is_some() {}
        Ok(Checked)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Checked, A::Error> {
        while seq.next_element::<Checked>()?.is_some() {}
        Ok(Checked)
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Checked, E> {
        Ok(Checked)
    }
}
