//! Timestamps as FTS3 writes them: `YYYY-MM-DDTHH:MM:SS`, UTC, no fraction, no zone suffix.
//! Clients parse exactly this (`strptime(x, "%Y-%m-%dT%H:%M:%S")`); a `Z` or a fraction breaks
//! them.

/// Format unix seconds the FTS3 way. Out-of-range values clamp to the representable range.
pub fn fts_datetime(unix: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp(unix).unwrap_or(if unix < 0 {
        time::OffsetDateTime::UNIX_EPOCH
    } else {
        time::PrimitiveDateTime::MAX.assume_utc()
    });
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// Now, in unix seconds.
pub fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// Now, in unix nanoseconds (a fallback source of uniqueness).
pub fn now_nanos() -> u64 {
    let t = time::OffsetDateTime::now_utc().unix_timestamp_nanos();
    u64::try_from(t).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_like_the_reference() {
        assert_eq!(fts_datetime(0), "1970-01-01T00:00:00");
        assert_eq!(fts_datetime(1_719_498_720), "2024-06-27T14:32:00");
    }
}
