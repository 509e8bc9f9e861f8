//! The errors the relay itself answers with. Each has a JSON-RPC code and a
//! stable `data.kind` string; docs/errors.md lists them for client authors.

/// Why the relay, not the upstream, answered a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayError {
    /// The client's bytes were not JSON.
    ParseError,
    /// JSON, but not a JSON-RPC message the relay can forward.
    InvalidRequest,
    /// A request id that is already in flight on this connection.
    DuplicateId,
    /// The upstream closed or exited with the request in flight.
    UpstreamClosed,
    /// No reply within the response timeout (or the max request time).
    ResponseTimeout,
    /// The request (or its reply) exceeded `--max-message-size`.
    MessageTooLarge,
    /// No process became free for the session (queue full or queue timeout).
    QueueFull,
    /// HTTP upstream: TCP connect plus TLS handshake took too long.
    ConnectTimeout,
    /// HTTP upstream: the connection could not be made (refused, unreachable,
    /// name not resolved).
    ConnectFailed,
    /// HTTP upstream: TLS failed (certificate not trusted, name mismatch, …).
    Tls,
    /// HTTP upstream: the request could not be sent in time.
    RequestTimeout,
    /// HTTP upstream: an HTTP error status instead of a reply.
    UpstreamStatus,
    /// The server's reply is not a valid message (not UTF-8, or not JSON).
    InvalidReply,
    /// A stdio server is not reading its input: the queue toward its stdin
    /// is full, so the request was not sent (retry later).
    UpstreamBusy,
    /// A `tools/call` the upstream's tool filter (`--allow-tool`,
    /// `--deny-tool`, `"tools"`) refuses; it was not sent.
    ToolDenied,
    /// `forward --url --oauth`: no token could be had for the upstream
    /// (authorization failed, refused, timed out), or the upstream refused
    /// a token just issued. The request was not answered by the server.
    Unauthorized,
}

impl RelayError {
    pub fn code(self) -> i64 {
        match self {
            RelayError::ParseError => -32700,
            RelayError::InvalidRequest | RelayError::DuplicateId => -32600,
            // -32000 and -32001 are what the MCP SDKs use for "connection
            // closed" and "request timed out"; clients already handle them.
            RelayError::UpstreamClosed => -32000,
            RelayError::ResponseTimeout => -32001,
            // -32002 is taken by MCP (resource not found); -32003… are ours.
            RelayError::MessageTooLarge => -32003,
            RelayError::QueueFull => -32004,
            RelayError::ConnectTimeout | RelayError::ConnectFailed | RelayError::Tls => -32005,
            RelayError::RequestTimeout => -32001,
            RelayError::UpstreamStatus => -32006,
            RelayError::InvalidReply => -32007,
            RelayError::UpstreamBusy => -32008,
            RelayError::ToolDenied => -32009,
            RelayError::Unauthorized => -32010,
        }
    }

    pub fn kind(self) -> &'static str {
        match self {
            RelayError::ParseError => "parse_error",
            RelayError::InvalidRequest => "invalid_request",
            RelayError::DuplicateId => "duplicate_id",
            RelayError::UpstreamClosed => "upstream_closed",
            RelayError::ResponseTimeout => "response_timeout",
            RelayError::MessageTooLarge => "message_too_large",
            RelayError::QueueFull => "queue_full",
            RelayError::ConnectTimeout => "connect_timeout",
            RelayError::ConnectFailed => "connect_failed",
            RelayError::Tls => "tls",
            RelayError::RequestTimeout => "request_timeout",
            RelayError::UpstreamStatus => "upstream_status",
            RelayError::InvalidReply => "invalid_reply",
            RelayError::UpstreamBusy => "upstream_busy",
            RelayError::ToolDenied => "tool_denied",
            RelayError::Unauthorized => "unauthorized",
        }
    }
}

impl RelayError {
    /// The error for an HTTP exchange failure kind (`Failure::kind`).
    pub fn from_http_kind(kind: &str) -> RelayError {
        match kind {
            "connect_timeout" => RelayError::ConnectTimeout,
            "connect_failed" => RelayError::ConnectFailed,
            "tls" => RelayError::Tls,
            "request_timeout" => RelayError::RequestTimeout,
            "response_timeout" => RelayError::ResponseTimeout,
            _ => RelayError::UpstreamClosed,
        }
    }
}
