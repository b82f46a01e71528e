//! The wire protocol of the management socket: JSON lines.
//! Request `{"id":…, "op":"policy.get", "args":{…}}`; response `{"id":…, "ok":true, "result":…}` or
//! `{"id":…, "ok":false, "error":{"code":…, "message":…}}`.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One request line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    #[serde(default)]
    pub id: Value,
    pub op: String,
    #[serde(default = "empty_args")]
    pub args: Value,
}

fn empty_args() -> Value {
    Value::Object(Default::default())
}

/// Error codes, stable for scripts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Not JSON, or not a request object.
    BadRequest,
    /// The request line exceeds the size limit.
    TooLarge,
    UnknownOp,
    /// Missing or mistyped arguments.
    BadArgs,
    /// The resulting policy does not validate.
    InvalidPolicy,
    /// `expected_version` is not the store's current version.
    VersionConflict,
    NotFound,
    AlreadyExists,
    /// The peer may not do this.
    Forbidden,
    /// The store could not persist the change.
    Storage,
    /// The shared policy source (etcd) cannot take changes now (no quorum, unreachable): the
    /// gateway keeps forwarding on its last version; retry later.
    Unavailable,
    /// The socket serves as many connections as it may at once: this one is answered with this
    /// error and closed; retry once another client has disconnected.
    Busy,
    Internal,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub code: ErrorCode,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<Value>,
}

/// One response line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    pub id: Value,
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    /// A result made as JSON text (written as `result`; read back into `result`).
    #[serde(
        rename = "result",
        skip_serializing_if = "Option::is_none",
        skip_deserializing
    )]
    pub result_text: Option<JsonText>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody>,
}

/// JSON text, made without a tree of it (written as it is).
#[derive(Debug, Clone, Serialize)]
#[serde(transparent)]
pub struct JsonText(pub Box<serde_json::value::RawValue>);

impl PartialEq for JsonText {
    fn eq(&self, other: &Self) -> bool {
        self.0.get() == other.0.get()
    }
}

impl Response {
    pub fn ok(id: Value, result: Value) -> Self {
        Response {
            id,
            ok: true,
            result: Some(result),
            result_text: None,
            error: None,
        }
    }
    /// A success whose result is JSON text already made (a peer reads it as `result`).
    pub fn ok_text(id: Value, result: Box<serde_json::value::RawValue>) -> Self {
        Response {
            id,
            ok: true,
            result: None,
            result_text: Some(JsonText(result)),
            error: None,
        }
    }
    pub fn err(id: Value, e: OpError) -> Self {
        Response {
            id,
            ok: false,
            result: None,
            result_text: None,
            error: Some(ErrorBody {
                code: e.code,
                message: e.message,
                details: e.details,
            }),
        }
    }
}

/// An operation's failure, as data.
#[derive(Debug, Clone, PartialEq)]
pub struct OpError {
    pub code: ErrorCode,
    pub message: String,
    pub details: Option<Value>,
}

impl OpError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        OpError {
            code,
            message: message.into(),
            details: None,
        }
    }
    pub fn with_details(mut self, d: Value) -> Self {
        self.details = Some(d);
        self
    }
}

impl std::fmt::Display for OpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}: {}", self.code, self.message)
    }
}
