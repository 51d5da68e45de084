//! Timestamps on the wire: ISO-8601 UTC with milliseconds, `2026-06-25T09:00:00.000Z`.

use chrono::{DateTime, SecondsFormat, Utc};

pub fn iso(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

pub fn iso_opt(at: Option<DateTime<Utc>>) -> Option<String> {
    at.map(iso)
}
