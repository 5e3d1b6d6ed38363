//! `google.rpc.Status` details as OTLP uses them: the `RetryInfo` a throttled or busy server
//! sends with its status, read by the exporter and written by the receivers.

use std::time::Duration;

use prost::Message as _;

/// `google.rpc.Status` and the parts of it used here.
#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
    #[prost(message, repeated, tag = "3")]
    details: Vec<AnyDetail>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct AnyDetail {
    #[prost(string, tag = "1")]
    type_url: String,
    #[prost(bytes = "vec", tag = "2")]
    value: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct RetryInfo {
    #[prost(message, optional, tag = "1")]
    retry_delay: Option<ProtoDuration>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ProtoDuration {
    #[prost(int64, tag = "1")]
    seconds: i64,
    #[prost(int32, tag = "2")]
    nanos: i32,
}

const RETRY_INFO_TYPE: &str = "type.googleapis.com/google.rpc.RetryInfo";

/// A status's `grpc-status-details-bin` asking the client to retry after `delay`.
pub(crate) fn retry_info(delay: Duration) -> Vec<u8> {
    RpcStatus {
        details: vec![AnyDetail {
            type_url: RETRY_INFO_TYPE.into(),
            value: RetryInfo {
                retry_delay: Some(ProtoDuration {
                    seconds: i64::try_from(delay.as_secs()).unwrap_or(i64::MAX),
                    nanos: i32::try_from(delay.subsec_nanos()).unwrap_or(0),
                }),
            }
            .encode_to_vec(),
        }],
        ..RpcStatus::default()
    }
    .encode_to_vec()
}

/// The delay a status's `RetryInfo` asks for.
pub(crate) fn retry_info_delay(details: &[u8]) -> Option<Duration> {
    let status = RpcStatus::decode(details).ok()?;
    let info = status
        .details
        .iter()
        .find(|d| d.type_url == RETRY_INFO_TYPE)?;
    let delay = RetryInfo::decode(&info.value[..]).ok()?.retry_delay?;
    Some(Duration::new(
        u64::try_from(delay.seconds).ok()?,
        u32::try_from(delay.nanos).unwrap_or(0),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_info_round_trips_and_garbage_has_none() {
        let d = Duration::from_millis(1500);
        assert_eq!(retry_info_delay(&retry_info(d)), Some(d));
        assert_eq!(retry_info_delay(b"\xff\xff"), None);
        assert_eq!(retry_info_delay(&[]), None);
    }
}
