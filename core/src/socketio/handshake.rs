//! The handshake of a socket: what the connecting request said, and its auth payload.

use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::engineio::OpenRequest;
use crate::http::parse_query;

/// The request that opened an Engine.IO session, kept once per connection and shared by
/// its sockets.
#[derive(Debug)]
pub struct ConnInfo {
    pub headers: http::HeaderMap,
    pub remote: Option<SocketAddr>,
    pub url: String,
    /// Milliseconds since the Unix epoch.
    pub issued: u64,
}

impl ConnInfo {
    pub(crate) fn from_request(req: &OpenRequest) -> Self {
        let mut headers = req.parts.headers.clone();
        // The key and version of a WebSocket handshake say nothing to applications.
        headers.remove(http::header::SEC_WEBSOCKET_KEY);
        headers.remove(http::header::SEC_WEBSOCKET_VERSION);
        ConnInfo {
            headers,
            remote: req.remote,
            url: req
                .parts
                .uri
                .path_and_query()
                .map(|p| p.to_string())
                .unwrap_or_default(),
            issued: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
        }
    }
}

/// `socket.handshake`, in the reference's shape, so it crosses nodes as is (fields a
/// peer leaves out read as empty).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Handshake {
    pub headers: Map<String, Value>,
    pub time: String,
    pub address: String,
    pub xdomain: bool,
    pub secure: bool,
    pub issued: u64,
    pub url: String,
    pub query: Map<String, Value>,
    pub auth: Value,
}

impl Handshake {
    pub(crate) fn build(conn: &ConnInfo, auth: &Value) -> Handshake {
        let mut headers = Map::new();
        for (k, v) in &conn.headers {
            let v = String::from_utf8_lossy(v.as_bytes()).into_owned();
            headers.insert(k.as_str().to_owned(), Value::String(v));
        }
        let query_str = conn.url.split_once('?').map(|(_, q)| q).unwrap_or("");
        let query = parse_query(query_str)
            .map(|(k, v)| (k, Value::String(v)))
            .collect();
        Handshake {
            xdomain: conn.headers.contains_key(http::header::ORIGIN),
            headers,
            time: js_date(conn.issued),
            address: conn.remote.map(|a| a.ip().to_string()).unwrap_or_default(),
            secure: false,
            issued: conn.issued,
            url: conn.url.clone(),
            query,
            auth: auth.clone(),
        }
    }
}

/// `new Date(ms).toString()` in UTC, e.g. `Thu Nov 26 2026 09:17:21 GMT+0000
/// (Coordinated Universal Time)`.
fn js_date(ms: u64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let secs = ms / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil-from-days (H. Hinnant).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{} {} {:02} {} {:02}:{:02}:{:02} GMT+0000 (Coordinated Universal Time)",
        DAYS[(days.rem_euclid(7)) as usize],
        MONTHS[(m - 1) as usize],
        d,
        y,
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn js_date_format() {
        assert_eq!(
            super::js_date(1_795_684_641_000),
            "Thu Nov 26 2026 09:17:21 GMT+0000 (Coordinated Universal Time)"
        );
        assert_eq!(
            super::js_date(0),
            "Thu Jan 01 1970 00:00:00 GMT+0000 (Coordinated Universal Time)"
        );
    }
}
