//! Conversions between protobuf's well-known types and std's, and durations as docker's flags
//! write them.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A protobuf duration as a std one; negative or absent durations are `None`.
pub fn from_duration(d: Option<&prost_types::Duration>) -> Option<Duration> {
    let d = d?;
    let secs = u64::try_from(d.seconds).ok()?;
    let nanos = u32::try_from(d.nanos).ok()?;
    Some(Duration::new(secs, nanos))
}

/// A std duration as a protobuf one (saturating at `i64::MAX` seconds).
pub fn to_duration(d: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}

/// The latest time a protobuf timestamp may hold, 9999-12-31T23:59:59.999999999Z, in seconds
/// since 1970 (the well-known type's documented range).
const MAX_TIMESTAMP_SECONDS: u64 = 253_402_300_799;
const MAX_NANOS: u32 = 999_999_999;

/// A protobuf timestamp as a `SystemTime`; absent or before 1970 is `None`. Timestamps past the
/// well-known type's range (year 9999), which only a faulty or hostile peer sends, are clamped
/// to its end, so that the time is representable and a delay can still be added to it.
pub fn from_timestamp(t: Option<&prost_types::Timestamp>) -> Option<SystemTime> {
    let t = t?;
    let secs = u64::try_from(t.seconds).ok()?;
    let nanos = u32::try_from(t.nanos).ok()?;
    let (secs, nanos) =
        if secs >= MAX_TIMESTAMP_SECONDS { (MAX_TIMESTAMP_SECONDS, MAX_NANOS) } else { (secs, nanos.min(MAX_NANOS)) };
    UNIX_EPOCH.checked_add(Duration::new(secs, nanos))
}

/// A `SystemTime` as a protobuf timestamp (times before 1970 become the epoch).
pub fn to_timestamp(t: SystemTime) -> prost_types::Timestamp {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    prost_types::Timestamp {
        seconds: i64::try_from(since.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(since.subsec_nanos()).unwrap_or(0),
    }
}

/// Parses `90s`, `5m`, `1h`, `1m30s`, `500ms` or plain seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    if text.trim().is_empty() {
        return Err("invalid duration \"\": expected e.g. 5s, 1m30s, 500ms".to_owned());
    }
    if let Ok(secs) = text.parse::<f64>() {
        return Duration::try_from_secs_f64(secs).map_err(|e| format!("invalid duration {text:?}: {e}"));
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(rest.len());
        let (number, tail) = rest.split_at(digits);
        let unit_len = tail.find(|c: char| c.is_ascii_digit()).unwrap_or(tail.len());
        let (unit, next) = tail.split_at(unit_len);
        let value: f64 =
            number.parse().map_err(|_| format!("invalid duration {text:?}: expected e.g. 5s, 1m30s, 500ms"))?;
        let secs = match unit {
            "ms" => value / 1000.0,
            "s" => value,
            "m" => value * 60.0,
            "h" => value * 3600.0,
            _ => return Err(format!("invalid duration {text:?}: unit {unit:?} is not one of ms, s, m, h")),
        };
        total += Duration::try_from_secs_f64(secs).map_err(|e| format!("invalid duration {text:?}: {e}"))?;
        rest = next;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v1;
    use prost::Message as _;

    #[test]
    fn durations_and_timestamps_round_trip() {
        let d = Duration::from_millis(5_250);
        assert_eq!(from_duration(Some(&to_duration(d))), Some(d));
        assert_eq!(from_duration(Some(&prost_types::Duration { seconds: -1, nanos: 0 })), None);
        assert_eq!(from_duration(None), None);
        let t = UNIX_EPOCH + Duration::new(1_795_000_000, 123);
        assert_eq!(from_timestamp(Some(&to_timestamp(t))), Some(t));
    }

    #[test]
    fn timestamps_past_year_9999_are_clamped_not_panicking() {
        let end = UNIX_EPOCH + Duration::new(MAX_TIMESTAMP_SECONDS, MAX_NANOS);
        for (seconds, nanos) in [(i64::MAX, 0), (i64::MAX, i32::MAX), (i64::MAX - 1, 999_999_999), (253_402_300_800, 0)]
        {
            let t = prost_types::Timestamp { seconds, nanos };
            assert_eq!(from_timestamp(Some(&t)), Some(end), "{t:?}");
        }
        let t = prost_types::Timestamp { seconds: 1, nanos: i32::MAX };
        assert_eq!(from_timestamp(Some(&t)), Some(UNIX_EPOCH + Duration::new(1, MAX_NANOS)), "nanos beyond a second");
        assert_eq!(from_timestamp(Some(&prost_types::Timestamp { seconds: -1, nanos: 0 })), None);
    }

    #[test]
    fn objects_encode_and_decode() {
        let service = v1::Service {
            id: "svc1".into(),
            spec: Some(v1::ServiceSpec {
                annotations: Some(v1::Annotations { name: "web".into(), ..Default::default() }),
                mode: Some(v1::service_spec::Mode::Replicated(v1::ReplicatedService { replicas: 3 })),
                task: Some(v1::TaskSpec {
                    container: Some(v1::ContainerSpec { image: "shoal-test/web:v1".into(), ..Default::default() }),
                    restart: Some(v1::RestartPolicy {
                        condition: v1::restart_policy::Condition::OnFailure as i32,
                        delay: Some(to_duration(Duration::from_secs(5))),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let bytes = service.encode_to_vec();
        assert_eq!(v1::Service::decode(bytes.as_slice()).expect("decode"), service);
    }
}
