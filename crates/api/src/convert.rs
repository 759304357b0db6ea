//! Conversions between protobuf's well-known types and std's.

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

/// A protobuf timestamp as a `SystemTime`; absent or before 1970 is `None`.
pub fn from_timestamp(t: Option<&prost_types::Timestamp>) -> Option<SystemTime> {
    let t = t?;
    let secs = u64::try_from(t.seconds).ok()?;
    let nanos = u32::try_from(t.nanos).ok()?;
    Some(UNIX_EPOCH + Duration::new(secs, nanos))
}

/// A `SystemTime` as a protobuf timestamp (times before 1970 become the epoch).
pub fn to_timestamp(t: SystemTime) -> prost_types::Timestamp {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    prost_types::Timestamp {
        seconds: i64::try_from(since.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(since.subsec_nanos()).unwrap_or(0),
    }
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
