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
    let t = to_utc(t).unwrap_or(t);
    let micros = t.microsecond();
    t.replace_microsecond(micros).unwrap_or(t)
}

/// `t` in UTC, or None when it does not fit (e.g. `9999-12-31T23:59:59-23:59` is after the
/// last representable UTC instant). Times from callers must pass through this: converting
/// such a value with `to_offset` panics.
pub fn to_utc(t: OffsetDateTime) -> Option<OffsetDateTime> {
    t.checked_to_offset(time::UtcOffset::UTC)
}
