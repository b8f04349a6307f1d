//! The JSON messages of etcd's v3 gateway, one type per request and per
//! answer, as the gateway of etcd 3.4 writes and reads them (tested against
//! 3.4.23; the gateway of 3.5 and 3.6 documents the same JSON mapping of
//! the protocol buffers, see docs/etcd.md "Versions").
//!
//! The gateway's mapping (keys and values in base64, int64 values as JSON
//! strings, zero values left out) is in [`super::encoding`]; every answer
//! field has `#[serde(default)]`, and no type denies unknown fields.
//!
//! Request types list their fields in the order of their JSON names, so a
//! body is the same bytes as a `serde_json::Value` of it would give.

use serde::{Deserialize, Serialize};

pub use super::encoding::{b64, decode, prefix_end, Int, B64};
use super::encoding::{lenient, lenient_items, present};

// ---- requests -------------------------------------------------------------

/// `RangeRequest` (`/v3/kv/range`, and a transaction's `request_range`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct RangeRequest {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub count_only: Option<bool>,
    pub key: B64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keys_only: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<Int>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_create_revision: Option<Int>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_create_revision: Option<Int>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub range_end: Option<B64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sort_order: Option<SortOrder>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sort_target: Option<SortTarget>,
}

impl RangeRequest {
    /// The key `key` alone.
    pub fn key(key: &str) -> RangeRequest {
        RangeRequest {
            key: B64::of(key),
            ..RangeRequest::default()
        }
    }

    /// Every key that starts with `prefix`.
    pub fn prefix(prefix: &str) -> RangeRequest {
        RangeRequest {
            key: B64::of(prefix),
            range_end: Some(B64(prefix_end(prefix))),
            ..RangeRequest::default()
        }
    }
}

/// `RangeRequest.SortOrder`.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum SortOrder {
    Ascend,
    Descend,
}

/// `RangeRequest.SortTarget`.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum SortTarget {
    Create,
}

/// `PutRequest`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PutRequest {
    pub key: B64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lease: Option<Int>,
    pub value: B64,
}

/// `DeleteRangeRequest` (`/v3/kv/deleterange`, and a transaction's
/// `request_delete_range`): one key.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DeleteRangeRequest {
    pub key: B64,
}

impl DeleteRangeRequest {
    /// The key `key`.
    pub fn key(key: &str) -> DeleteRangeRequest {
        DeleteRangeRequest { key: B64::of(key) }
    }
}

/// `RequestOp`: one operation of a transaction.
#[derive(Debug, Clone, Serialize)]
pub enum RequestOp {
    #[serde(rename = "request_range")]
    Range(RangeRequest),
    #[serde(rename = "request_put")]
    Put(PutRequest),
    #[serde(rename = "request_delete_range")]
    DeleteRange(DeleteRangeRequest),
    /// A transaction inside a transaction's branch (etcd 3.3 and later).
    #[serde(rename = "request_txn")]
    Txn(Box<TxnRequest>),
}

/// `Compare`, on create revisions: of one key, or of every key in
/// `[key, range_end)` (true when there is none, as etcd compares an empty
/// range against a key that does not exist).
#[derive(Debug, Clone, Serialize)]
pub struct Compare {
    pub create_revision: Int,
    pub key: B64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub range_end: Option<B64>,
    pub result: CompareResult,
    pub target: CompareTarget,
}

impl Compare {
    /// `key` was created at `revision` (0: does not exist).
    pub fn created_at(key: &str, revision: i64) -> Compare {
        Compare {
            create_revision: Int(revision),
            key: B64::of(key),
            range_end: None,
            result: CompareResult::Equal,
            target: CompareTarget::Create,
        }
    }

    /// No key under `prefix` exists.
    pub fn none_under(prefix: &str) -> Compare {
        Compare {
            range_end: Some(B64(prefix_end(prefix))),
            ..Compare::created_at(prefix, 0)
        }
    }

    /// Every key under `prefix` was created at `revision` or before.
    pub fn none_under_after(prefix: &str, revision: i64) -> Compare {
        Compare {
            create_revision: Int(revision + 1),
            range_end: Some(B64(prefix_end(prefix))),
            result: CompareResult::Less,
            ..Compare::created_at(prefix, 0)
        }
    }
}

/// `Compare.CompareResult`.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum CompareResult {
    Equal,
    Less,
}

/// `Compare.CompareTarget`.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum CompareTarget {
    Create,
}

/// `TxnRequest` (`/v3/kv/txn`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct TxnRequest {
    pub compare: Vec<Compare>,
    pub failure: Vec<RequestOp>,
    pub success: Vec<RequestOp>,
}

/// `LeaseGrantRequest` (`/v3/lease/grant`).
#[derive(Debug, Clone, Serialize)]
pub struct LeaseGrantRequest {
    #[serde(rename = "TTL")]
    pub ttl: Int,
}

/// `LeaseKeepAliveRequest` (`/v3/lease/keepalive`) and
/// `LeaseRevokeRequest` (`/v3/lease/revoke`): the same one field.
#[derive(Debug, Clone, Serialize)]
pub struct LeaseIdRequest {
    #[serde(rename = "ID")]
    pub id: Int,
}

/// `WatchRequest` (`/v3/watch`), of the one kind used: a create request.
#[derive(Debug, Clone, Serialize)]
pub struct WatchRequest {
    pub create_request: WatchCreateRequest,
}

/// `WatchCreateRequest`: one key, from a revision on.
#[derive(Debug, Clone, Serialize)]
pub struct WatchCreateRequest {
    pub key: B64,
    pub start_revision: Int,
}

/// `AuthenticateRequest` (`/v3/auth/authenticate`).
#[derive(Clone, Serialize)]
pub struct AuthenticateRequest<'a> {
    pub name: &'a str,
    pub password: &'a str,
}

// ---- answers --------------------------------------------------------------

/// `ResponseHeader`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ResponseHeader {
    #[serde(default)]
    pub revision: Int,
}

/// `KeyValue`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct KeyValue {
    #[serde(default)]
    pub key: B64,
    #[serde(default)]
    pub value: B64,
    #[serde(default)]
    pub create_revision: Int,
}

/// `RangeResponse`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RangeResponse {
    #[serde(default, deserialize_with = "lenient")]
    pub header: ResponseHeader,
    #[serde(default, deserialize_with = "lenient_items")]
    pub kvs: Vec<KeyValue>,
    #[serde(default)]
    pub count: Int,
}

impl RangeResponse {
    /// The first key found.
    pub fn first(&self) -> Option<&KeyValue> {
        self.kvs.first()
    }
}

/// `ResponseOp`: range answers and the answer of a transaction inside a
/// transaction are read.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ResponseOp {
    #[serde(default, deserialize_with = "lenient")]
    pub response_range: RangeResponse,
    #[serde(default, deserialize_with = "lenient")]
    pub response_txn: Option<Box<TxnResponse>>,
}

/// `TxnResponse`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct TxnResponse {
    #[serde(default, deserialize_with = "lenient")]
    pub header: ResponseHeader,
    #[serde(default, deserialize_with = "lenient")]
    pub succeeded: bool,
    #[serde(default, deserialize_with = "lenient_items")]
    pub responses: Vec<ResponseOp>,
}

impl TxnResponse {
    /// The range answer of operation `i` (empty when there is none).
    pub fn range(&self, i: usize) -> &RangeResponse {
        static NONE: RangeResponse = RangeResponse {
            header: ResponseHeader { revision: Int(0) },
            kvs: Vec::new(),
            count: Int(0),
        };
        self.responses.get(i).map_or(&NONE, |op| &op.response_range)
    }
}

/// `LeaseGrantResponse`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct LeaseGrantResponse {
    #[serde(rename = "ID", default)]
    pub id: Int,
    #[serde(rename = "TTL", default)]
    pub ttl: Int,
    #[serde(default, deserialize_with = "lenient")]
    pub error: Option<String>,
}

/// A keep-alive answer: one message of the stream, `{"result": ...}`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct LeaseKeepAliveAnswer {
    #[serde(default, deserialize_with = "lenient")]
    pub result: LeaseKeepAliveResponse,
}

/// `LeaseKeepAliveResponse`: no TTL means expired or revoked.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct LeaseKeepAliveResponse {
    #[serde(rename = "TTL", default)]
    pub ttl: Int,
}

/// `LeaseRevokeResponse`: nothing of it is read.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct LeaseRevokeResponse {}

/// `DeleteRangeResponse`: nothing of it is read.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct DeleteRangeResponse {}

/// `AuthenticateResponse`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct AuthenticateResponse {
    #[serde(default, deserialize_with = "lenient")]
    pub token: String,
}

/// One message of a watch stream: `{"result": ...}` or `{"error": ...}`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct WatchMessage {
    #[serde(default, deserialize_with = "present")]
    pub error: Option<StreamError>,
    #[serde(default, deserialize_with = "lenient")]
    pub result: WatchResponse,
}

/// `WatchResponse`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct WatchResponse {
    #[serde(default, deserialize_with = "lenient_items")]
    pub events: Vec<Event>,
    #[serde(default, deserialize_with = "lenient")]
    pub created: bool,
    #[serde(default, deserialize_with = "lenient")]
    pub canceled: bool,
}

/// `Event`: its type is left out for a put (the zero value).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Event {
    #[serde(rename = "type", default, deserialize_with = "lenient")]
    pub kind: String,
}

/// The error the gateway puts in a streamed answer (a 200), as
/// `{"error": {"http_code": 401, "message": ...}}`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct StreamError {
    #[serde(default, deserialize_with = "lenient")]
    pub http_code: Option<i64>,
    #[serde(default, deserialize_with = "lenient")]
    pub message: Option<String>,
}

/// Any answer, for the error a streamed call carries in it.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct StreamFailure {
    #[serde(default, deserialize_with = "lenient")]
    pub error: StreamError,
}

/// The body of an error answer (4xx, 5xx).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ErrorBody {
    #[serde(default, deserialize_with = "lenient")]
    pub message: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub error: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zeros_left_out_and_odd_shapes_read_as_zero() {
        let txn: TxnResponse = decode(
            br#"{"header":{"revision":"9"},"responses":[{"response_put":{}},
                {"response_range":{"kvs":[{"key":"YQ==","create_revision":5},7],"count":"2"}}],
                "unknown":1}"#,
        )
        .unwrap();
        assert!(!txn.succeeded);
        assert_eq!(txn.header.revision, Int(9));
        assert!(txn.range(0).first().is_none());
        let range = txn.range(1);
        assert_eq!(range.kvs[0].key.0, b"a");
        assert_eq!(range.kvs[0].create_revision, Int(5));
        assert_eq!(range.kvs[1].create_revision, Int(0));
        assert_eq!(range.count, Int(2));
        assert!(txn.range(2).kvs.is_empty());
        let odd: TxnResponse = decode(br#"{"succeeded":"yes","responses":{}}"#).unwrap();
        assert!(!odd.succeeded && odd.responses.is_empty());
        assert!(decode::<TxnResponse>(b"[1]").is_ok());
        assert!(decode::<TxnResponse>(b"{").is_err());
        let watch: WatchMessage = decode(br#"{"error":null}"#).unwrap();
        assert!(watch.error.is_some());
    }

    #[test]
    fn requests_are_the_same_bytes() {
        let txn = TxnRequest {
            compare: vec![Compare::created_at("k", 0)],
            success: vec![RequestOp::Put(PutRequest {
                key: B64::of("k"),
                lease: Some(Int(12)),
                value: B64::default(),
            })],
            failure: vec![RequestOp::Range(RangeRequest {
                limit: Some(Int(1)),
                keys_only: Some(true),
                sort_order: Some(SortOrder::Ascend),
                sort_target: Some(SortTarget::Create),
                ..RangeRequest::prefix("p/")
            })],
        };
        let value = serde_json::json!({
            "compare": [{"key": b64("k"), "target": "CREATE", "result": "EQUAL", "create_revision": "0"}],
            "success": [{"request_put": {"key": b64("k"), "value": "", "lease": "12"}}],
            "failure": [{"request_range": {"key": b64("p/"), "range_end": b64("p0"),
                "sort_order": "ASCEND", "sort_target": "CREATE", "limit": "1", "keys_only": true}}],
        });
        assert_eq!(serde_json::to_string(&txn).unwrap(), value.to_string());
    }
}
