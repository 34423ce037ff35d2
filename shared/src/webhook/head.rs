//! A lenient, typed read of only the fields the edge needs, straight from the bytes.
//!
//! Building a whole `serde_json::Value` tree for a 2 kB webhook costs ~14 µs and dozens of
//! allocations; this reader skips everything else (still checking the JSON is well-formed)
//! and allocates only the few ids it keeps. It is lenient like the `Value` path: a field
//! of an unexpected type reads as absent instead of failing the whole body.

use std::{fmt, marker::PhantomData};

use serde::{
    Deserialize, Deserializer,
    de::{self, IgnoredAny, MapAccess, SeqAccess, Visitor, value::MapAccessDeserializer},
};

/// A string or an integer (as text); anything else reads as `None`.
#[derive(Debug, Default)]
pub(super) struct Scalar {
    pub text: Option<String>,
    /// Whether it was a JSON string (the notification type must be one).
    pub was_string: bool,
}

impl Scalar {
    /// Non-empty text.
    pub fn id(&self) -> Option<String> {
        self.text.clone().filter(|s| !s.is_empty())
    }
}

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Scalar;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Scalar, E> {
                Ok(Scalar {
                    text: Some(s.to_owned()),
                    was_string: true,
                })
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<Scalar, E> {
                Ok(Scalar {
                    text: Some(n.to_string()),
                    was_string: false,
                })
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<Scalar, E> {
                Ok(Scalar {
                    text: Some(n.to_string()),
                    was_string: false,
                })
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Scalar, E> {
                Ok(Scalar::default())
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Scalar, E> {
                Ok(Scalar::default())
            }
            fn visit_unit<E: de::Error>(self) -> Result<Scalar, E> {
                Ok(Scalar::default())
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Scalar, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Scalar::default())
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Scalar, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Scalar::default())
            }
        }
        d.deserialize_any(V)
    }
}

/// An object read as `T`, or anything else (null, a string…) read as `T::default()`.
#[derive(Debug, Default)]
pub(super) struct Lenient<T>(pub T);

impl<'de, T: Deserialize<'de> + Default> Deserialize<'de> for Lenient<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de> + Default> Visitor<'de> for V<T> {
            type Value = Lenient<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Lenient<T>, A::Error> {
                T::deserialize(MapAccessDeserializer::new(map)).map(Lenient)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Lenient<T>, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Lenient(T::default()))
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Lenient<T>, E> {
                Ok(Lenient(T::default()))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Lenient<T>, E> {
                Ok(Lenient(T::default()))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Lenient<T>, E> {
                Ok(Lenient(T::default()))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Lenient<T>, E> {
                Ok(Lenient(T::default()))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Lenient<T>, E> {
                Ok(Lenient(T::default()))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Lenient<T>, E> {
                Ok(Lenient(T::default()))
            }
        }
        d.deserialize_any(V(PhantomData))
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct WithId {
    pub id: Scalar,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct User {
    pub id: Scalar,
    pub external_id: Scalar,
    pub public_id: Scalar,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct Settings {
    pub project_id: Scalar,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct Billing {
    pub transaction: Lenient<WithId>,
    pub settings: Lenient<Settings>,
}

/// The top level of a webhook, as far as the edge reads it.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct Head {
    pub notification_type: Scalar,
    pub order: Lenient<WithId>,
    pub transaction: Lenient<WithId>,
    pub user: Lenient<User>,
    pub settings: Lenient<Settings>,
    pub billing: Lenient<Billing>,
}

/// Only the order a body claims, for the log line of a refused (unverified) webhook.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct Claim {
    pub order: Lenient<WithId>,
}
