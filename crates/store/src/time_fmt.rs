//! One timestamp format for every stored time: UTC, fixed width, so text order is time order.

use time::format_description::FormatItem;
use time::macros::format_description;
use time::OffsetDateTime;

const FORMAT: &[FormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z");

pub fn format(t: OffsetDateTime) -> String {
    t.to_offset(time::UtcOffset::UTC)
        .format(FORMAT)
        .expect("fixed format always formats")
}

pub fn now() -> String {
    format(OffsetDateTime::now_utc())
}

/// Accepts RFC 3339 (any offset) and returns the stored form, for filters given by users.
pub fn parse_user(s: &str) -> Option<String> {
    OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(format)
}

/// The stored form of a time kept as unix seconds (the collector's queues and soft delete).
pub fn from_unix(secs: f64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos((secs * 1e9) as i128)
        .map(format)
        .unwrap_or_else(|_| now())
}
