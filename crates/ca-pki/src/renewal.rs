//! The renewal policy: when a node should ask for a new certificate, as a pure function.

use time::OffsetDateTime;

/// Earliest renewal point, as a fraction of the certificate's lifetime.
const EARLIEST: f64 = 0.5;
/// Latest renewal point, as a fraction of the certificate's lifetime.
const LATEST: f64 = 0.8;

/// When to renew a certificate valid from `not_before` to `not_after`: at 50 % of its lifetime
/// plus `draw` × 30 %, so nodes spread their renewals between 50 % and 80 %.
///
/// `draw` is a random number in `[0, 1]` that the caller picks once per certificate (values
/// outside are clamped, NaN counts as 0). A certificate with no lifetime renews at `not_before`.
pub fn renewal_time(not_before: OffsetDateTime, not_after: OffsetDateTime, draw: f64) -> OffsetDateTime {
    if not_after <= not_before {
        return not_before;
    }
    let draw = if draw.is_nan() { 0.0 } else { draw.clamp(0.0, 1.0) };
    let fraction = EARLIEST + (LATEST - EARLIEST) * draw;
    not_before + (not_after - not_before) * fraction
}

/// Whether a certificate valid from `not_before` to `not_after` is due for renewal at `now`
/// (see [`renewal_time`]).
pub fn needs_renewal(not_before: OffsetDateTime, not_after: OffsetDateTime, now: OffsetDateTime, draw: f64) -> bool {
    now >= renewal_time(not_before, not_after, draw)
}

/// The shortest and longest waits before a failed renewal is tried again.
const RETRY_MIN: std::time::Duration = std::time::Duration::from_millis(200);
const RETRY_MAX: std::time::Duration = std::time::Duration::from_secs(30);

/// How long a node waits before trying a failed renewal again: a tenth of the time its
/// certificate has left at `now`, between 200 ms and 30 s, so a node whose CA is out of reach
/// tries more often as the expiry nears.
pub fn renewal_retry_wait(not_after: OffsetDateTime, now: OffsetDateTime) -> std::time::Duration {
    let left = std::time::Duration::try_from(not_after - now).unwrap_or(std::time::Duration::ZERO);
    (left / 10).clamp(RETRY_MIN, RETRY_MAX)
}

#[cfg(test)]
mod tests {
    use time::Duration;

    use super::*;

    /// 2030-01-01 00:00 UTC.
    const START: OffsetDateTime = OffsetDateTime::UNIX_EPOCH.saturating_add(Duration::seconds(1_893_456_000));

    #[test]
    fn renewal_point_spans_50_to_80_percent() {
        let end = START + Duration::days(100);
        let cases = [
            (0.0, Duration::days(50)),
            (0.5, Duration::days(65)),
            (1.0, Duration::days(80)),
            (-3.0, Duration::days(50)),
            (7.0, Duration::days(80)),
            (f64::NAN, Duration::days(50)),
        ];
        for (draw, offset) in cases {
            assert_eq!(renewal_time(START, end, draw), START + offset, "draw {draw}");
        }
    }

    #[test]
    fn needs_renewal_follows_the_clock() {
        let end = START + Duration::days(90);
        let due = renewal_time(START, end, 0.25);
        assert!(!needs_renewal(START, end, due - Duration::seconds(1), 0.25));
        assert!(needs_renewal(START, end, due, 0.25));
        assert!(needs_renewal(START, end, end + Duration::days(1), 0.25));
    }

    #[test]
    fn retries_come_sooner_as_the_expiry_nears() {
        assert_eq!(renewal_retry_wait(START + Duration::days(30), START), RETRY_MAX);
        assert_eq!(renewal_retry_wait(START + Duration::seconds(20), START), std::time::Duration::from_secs(2));
        assert_eq!(renewal_retry_wait(START - Duration::seconds(5), START), RETRY_MIN, "expired: as soon as allowed");
    }

    #[test]
    fn certificate_without_lifetime_renews_at_once() {
        assert_eq!(renewal_time(START, START, 0.5), START);
        assert!(needs_renewal(START, START - Duration::hours(1), START, 0.9));
    }
}
