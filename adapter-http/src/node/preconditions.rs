//! Conditional requests (RFC 9110 §13): `If-Match` and `If-None-Match` turned into the engine's
//! [`Condition`] for a write, and the entity-tag match that makes a read `304 Not Modified`. A value's
//! entity-tag is its version.

use otkv_engine::Condition;

use crate::front::{HttpError, Method, Preconditions};

/// An entity-tag list as `If-Match` / `If-None-Match` carry it (RFC 9110 §8.8.3, §13.1.1): `*`, or
/// versions. A weak tag (`W/"5"`) is kept, marked weak: `If-Match` never matches it.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Tags {
    Any,
    List(Vec<(u64, bool)>),
}

impl Tags {
    pub(super) fn parse(value: &[u8]) -> Result<Tags, HttpError> {
        let bad = || HttpError::BadRequest("malformed entity-tag: expected * or \"VERSION\"".into());
        let text = std::str::from_utf8(value).map_err(|_| bad())?.trim();
        if text == "*" {
            return Ok(Tags::Any);
        }
        let mut tags = Vec::new();
        for item in text.split(',').map(str::trim) {
            let (weak, quoted) = match item.strip_prefix("W/") {
                Some(rest) => (true, rest),
                None => (false, item),
            };
            let inner = quoted.strip_prefix('"').and_then(|q| q.strip_suffix('"')).ok_or_else(bad)?;
            if inner.is_empty() || !inner.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            tags.push((inner.parse().map_err(|_| bad())?, weak));
        }
        Ok(Tags::List(tags))
    }

    /// The engine condition for `If-Match`: one strong tag at most (a list cannot be one atomic check).
    pub(super) fn if_match(&self) -> Result<Condition, HttpError> {
        match self {
            Tags::Any => Ok(Condition::Present),
            Tags::List(tags) => match tags.as_slice() {
                [(v, false)] => Ok(Condition::Version(*v)),
                // A weak tag never matches under If-Match's strong comparison.
                [(_, true)] => Err(HttpError::PreconditionFailed("If-Match names a weak entity-tag")),
                _ => Err(HttpError::BadRequest("If-Match takes * or one entity-tag".into())),
            },
        }
    }

    /// Whether `If-None-Match` matches `version` (weak comparison).
    pub(super) fn matches(&self, version: u64) -> bool {
        match self {
            Tags::Any => true,
            Tags::List(tags) => tags.iter().any(|&(v, _)| v == version),
        }
    }
}

/// The write condition of a PUT or DELETE from its preconditions.
pub(super) fn write_condition(method: Method, pre: &Preconditions<'_>) -> Result<Condition, HttpError> {
    match (pre.if_match, pre.if_none_match) {
        (Some(_), Some(_)) => Err(HttpError::BadRequest("send If-Match or If-None-Match, not both".into())),
        (Some(m), None) => Tags::parse(m)?.if_match(),
        (None, Some(n)) if method == Method::Put => match Tags::parse(n)? {
            Tags::Any => Ok(Condition::Absent),
            Tags::List(_) => Err(HttpError::BadRequest("If-None-Match on PUT takes * (create only)".into())),
        },
        (None, Some(_)) => Err(HttpError::BadRequest("If-None-Match applies to GET, HEAD and PUT".into())),
        (None, None) => Ok(Condition::Always),
    }
}
