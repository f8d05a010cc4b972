//! Times as stored: integer nanoseconds since the Unix epoch.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Nanoseconds since the epoch, saturating at the ends of `i64` (years
/// 1677 and 2262).
pub(crate) fn to_nanos(time: SystemTime) -> i64 {
    match time.duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_nanos()).unwrap_or(i64::MAX),
        Err(before) => i64::try_from(before.duration().as_nanos()).map_or(i64::MIN, |n| -n),
    }
}

/// The inverse of [`to_nanos`].
pub(crate) fn from_nanos(nanos: i64) -> SystemTime {
    let offset = Duration::from_nanos(nanos.unsigned_abs());
    if nanos >= 0 { UNIX_EPOCH + offset } else { UNIX_EPOCH - offset }
}

/// A duration in nanoseconds, saturating.
pub(crate) fn duration_nanos(duration: Duration) -> i64 {
    i64::try_from(duration.as_nanos()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_nanosecond_precision_on_both_sides_of_the_epoch() {
        for nanos in [0, 1, -1, 1_700_000_000_123_456_789, -86_400_000_000_001] {
            assert_eq!(to_nanos(from_nanos(nanos)), nanos);
        }
        let now = SystemTime::now();
        assert_eq!(from_nanos(to_nanos(now)), now);
    }

    #[test]
    fn saturates_instead_of_wrapping() {
        let far = UNIX_EPOCH + Duration::from_secs(400 * 365 * 86_400);
        assert_eq!(to_nanos(far), i64::MAX);
        assert_eq!(duration_nanos(Duration::MAX), i64::MAX);
    }
}
