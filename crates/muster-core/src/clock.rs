//! Time as muster stores it.

use time::OffsetDateTime;

/// Now, in UTC, truncated to whole microseconds.
///
/// PostgreSQL keeps microseconds; truncating before anything is stored means a value read back
/// compares equal to the value written, on both databases.
pub fn now() -> OffsetDateTime {
    truncate(OffsetDateTime::now_utc())
}

/// Truncates a timestamp to whole microseconds, in UTC.
pub fn truncate(t: OffsetDateTime) -> OffsetDateTime {
    let t = t.to_offset(time::UtcOffset::UTC);
    let micros = t.microsecond();
    t.replace_microsecond(micros).unwrap_or(t)
}
