//! Numbers in query strings, read as the reference reads them (Python's `int()`: optional
//! blanks and sign, decimal digits, `_` between digits) — but where the reference silently
//! drops a value it cannot read (`limit=1e3` then means "no limit" and lists everything), this
//! answers 400 and says which parameter is wrong. An empty value is no value.

use super::ServiceError;
use crate::model::submit::python_int_checked;

/// Longest `time_window` accepted: ten years of hours. Longer is a typo, and the seconds must
/// stay far from overflowing the clock arithmetic.
pub const MAX_TIME_WINDOW_HOURS: i64 = 10 * 366 * 24;

fn int(name: &str, text: &str) -> Result<i64, ServiceError> {
    python_int_checked(&serde_json::Value::String(text.to_string()))
        .map_err(|why| ServiceError::BadRequest(format!("Invalid {name}: {why}")))
}

/// `limit=`: an integer, or nothing.
pub fn limit(text: Option<&str>) -> Result<Option<i64>, ServiceError> {
    match text.map(str::trim) {
        None | Some("") => Ok(None),
        Some(t) => int("limit", t).map(Some),
    }
}

/// `time_window=hours[:minutes]` in seconds, or nothing. Components after the minutes are
/// ignored, as the reference ignores them.
pub fn time_window(text: Option<&str>) -> Result<Option<i64>, ServiceError> {
    let Some(text) = text.filter(|t| !t.trim().is_empty()) else {
        return Ok(None);
    };
    let mut parts = text.split(':');
    let hours = int("time_window", parts.next().unwrap_or_default())?;
    let minutes = match parts.next() {
        Some(m) => int("time_window", m)?,
        None => 0,
    };
    if !(0..=MAX_TIME_WINDOW_HOURS).contains(&hours)
        || !(0..=MAX_TIME_WINDOW_HOURS * 60).contains(&minutes)
    {
        return Err(ServiceError::BadRequest(format!(
            "Invalid time_window: {text:?} is not between 0 and {MAX_TIME_WINDOW_HOURS} hours"
        )));
    }
    Ok(Some(hours * 3600 + minutes * 60))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(r: Result<Option<i64>, ServiceError>) -> String {
        match r {
            Err(ServiceError::BadRequest(m)) => m,
            other => panic!("not a 400: {other:?}"),
        }
    }

    #[test]
    fn limits_are_python_integers_or_a_400() {
        assert_eq!(limit(None).unwrap(), None);
        assert_eq!(limit(Some("")).unwrap(), None);
        assert_eq!(limit(Some(" 12 ")).unwrap(), Some(12));
        assert_eq!(limit(Some("+7")).unwrap(), Some(7));
        assert_eq!(limit(Some("1_0")).unwrap(), Some(10));
        assert_eq!(
            limit(Some("-3")).unwrap(),
            Some(-3),
            "the range check is the caller's"
        );
        for bad in ["1e3", "0x10", "NaN", "1.5", "ten", "1__0", "inf"] {
            assert!(
                message(limit(Some(bad))).starts_with("Invalid limit: invalid literal for int()"),
                "{bad}"
            );
        }
        assert_eq!(
            message(limit(Some("99999999999999999999"))),
            "Invalid limit: Python int too large to convert to C long"
        );
    }

    #[test]
    fn time_windows_are_integer_hours_and_minutes() {
        assert_eq!(time_window(Some("1")).unwrap(), Some(3600));
        assert_eq!(time_window(Some("0:30")).unwrap(), Some(1800));
        assert_eq!(time_window(Some("1:30:99")).unwrap(), Some(5400));
        assert_eq!(time_window(Some("")).unwrap(), None);
        assert!(
            message(time_window(Some("1.5"))).starts_with("Invalid time_window: invalid literal")
        );
        assert!(
            message(time_window(Some("1:"))).starts_with("Invalid time_window: invalid literal")
        );
        assert!(message(time_window(Some("x"))).starts_with("Invalid time_window"));
        assert!(message(time_window(Some("-1"))).contains("is not between 0 and"));
        assert!(message(time_window(Some("99999999999"))).contains("is not between 0 and"));
    }
}
