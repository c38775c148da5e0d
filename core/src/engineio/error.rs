//! The HTTP errors of the reference server (`Server.errors` in engine.io), with the same
//! status and `{"code","message"}` body.

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;

/// A request the Engine.IO layer refuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HttpError {
    #[error("Transport unknown")]
    UnknownTransport,
    #[error("Session ID unknown")]
    UnknownSid,
    #[error("Bad handshake method")]
    BadHandshakeMethod,
    #[error("Bad request")]
    BadRequest,
    #[error("Forbidden")]
    Forbidden,
    #[error("Unsupported protocol version")]
    UnsupportedProtocolVersion,
}

impl HttpError {
    pub fn code(self) -> u8 {
        match self {
            Self::UnknownTransport => 0,
            Self::UnknownSid => 1,
            Self::BadHandshakeMethod => 2,
            Self::BadRequest => 3,
            Self::Forbidden => 4,
            Self::UnsupportedProtocolVersion => 5,
        }
    }

    pub fn status(self) -> StatusCode {
        match self {
            Self::Forbidden => StatusCode::FORBIDDEN,
            _ => StatusCode::BAD_REQUEST,
        }
    }

    /// The JSON response; `message` overrides the default text (as `allowRequest` may).
    pub fn response(self, message: Option<&str>) -> Response<Full<Bytes>> {
        let msg = message
            .map(str::to_owned)
            .unwrap_or_else(|| self.to_string());
        let body = serde_json::json!({ "code": self.code(), "message": msg }).to_string();
        Response::builder()
            .status(self.status())
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))
            .expect("static response parts are valid")
    }
}

/// An empty response with this status (overlapping GET: 400, oversized POST: 413).
pub(crate) fn empty(status: StatusCode) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = status;
    r
}
