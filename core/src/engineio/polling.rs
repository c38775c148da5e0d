//! The HTTP long-polling transport: GET waits for packets, POST delivers them, and a
//! small driver task keeps the heartbeat while the session is on polling.

use std::io::Write as _;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderMap, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use tokio::time::Instant;

use super::error::empty;
use super::packet::{Packet, PacketType};
use super::session::{Beat, CloseReason, Session};
use super::{Engine, EngineHandler, TransportKind};

/// Resets the `pending` flag of a request however it ends.
struct PendingGuard<'a, D> {
    s: &'a Session<D>,
    get: bool,
}

impl<D> Drop for PendingGuard<'_, D> {
    fn drop(&mut self) {
        let mut st = self.s.state.lock();
        if self.get {
            st.get_pending = false;
        } else {
            st.post_pending = false;
        }
    }
}

/// A GET: answers with every queued packet, waiting until there is one.
pub(crate) async fn get<H: EngineHandler>(
    engine: &Arc<Engine<H>>,
    s: Arc<Session<H::Data>>,
    headers: &HeaderMap,
) -> Response<Full<Bytes>> {
    {
        let mut st = s.state.lock();
        if st.get_pending {
            drop(st);
            tracing::debug!(sid = %s.id(), "overlapping GET, closing session");
            s.abort(CloseReason::TransportError);
            return empty(StatusCode::BAD_REQUEST);
        }
        st.get_pending = true;
    }
    let _guard = PendingGuard { s: &s, get: true };
    let mut body = Vec::new();
    loop {
        let notified = s.writer.notified();
        {
            let mut st = s.state.lock();
            if st.transport != TransportKind::Polling {
                // Upgraded while this GET waited: release it with a noop, and pass on
                // the wake-up it may have taken from the WebSocket task.
                body.push(b'0' + PacketType::Noop as u8);
                drop(st);
                s.writer.notify_one();
                break;
            }
            if st.closed_by_client {
                // engine.io's polling `onClose` answers a pending GET with a noop.
                body.push(b'0' + PacketType::Noop as u8);
                break;
            }
            if !st.queue.is_empty() || st.closing.is_some() {
                // A graceful close sends what is queued first and the close packet with
                // the next GET, as the reference does (it closes the transport on
                // "drain"): the official client handles a close packet at once but the
                // packets before it a tick later, so a DISCONNECT sharing the close's
                // payload would be reported as "transport close". On shutdown no GET
                // will be waited for: everything goes at once.
                let flushing = st.flush_on_close
                    && !st.queue.is_empty()
                    && st.closing != Some(CloseReason::ServerShutdown);
                for f in st.queue.drain(..) {
                    f.write_polling(&mut body);
                }
                if st.closing.is_some() && !flushing {
                    if !body.is_empty() {
                        body.push(0x1e);
                    }
                    body.push(b'0' + PacketType::Close as u8);
                    st.get_pending = false;
                    st.close_delivered = true;
                    drop(st);
                    s.driver.notify_one();
                }
                break;
            }
            // Nothing to send: the next frame wakes this GET.
            st.writer_idle = true;
        }
        notified.await;
    }
    tracing::trace!(sid = %s.id(), body = %String::from_utf8_lossy(&body), "polling GET");
    payload_response(body, headers, engine.config.http_compression_threshold)
}

/// A POST: decodes the payload and hands each packet to the engine.
pub(crate) async fn post<H: EngineHandler, B>(
    engine: &Arc<Engine<H>>,
    s: Arc<Session<H::Data>>,
    req: http::Request<B>,
) -> Response<Full<Bytes>>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<crate::http::BoxError>,
{
    {
        let mut st = s.state.lock();
        if st.post_pending {
            drop(st);
            s.abort(CloseReason::TransportError);
            return empty(StatusCode::BAD_REQUEST);
        }
        st.post_pending = true;
    }
    let _guard = PendingGuard { s: &s, get: false };
    let is_binary = req
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes() == b"application/octet-stream");
    if is_binary {
        // EIO4 sends binary as base64 inside text payloads; raw binary is invalid.
        s.abort(CloseReason::TransportError);
        return empty(StatusCode::BAD_REQUEST);
    }
    let collect = Limited::new(req.into_body(), engine.config.max_payload).collect();
    let Ok(collected) = tokio::time::timeout(engine.config.body_timeout, collect).await else {
        tracing::debug!(sid = %s.id(), "polling POST body too slow, closing");
        s.abort(CloseReason::TransportError);
        let mut r = empty(StatusCode::REQUEST_TIMEOUT);
        r.headers_mut()
            .insert(header::CONNECTION, http::HeaderValue::from_static("close"));
        return r;
    };
    let body = match collected {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                tracing::debug!(sid = %s.id(), "polling payload over maxPayload");
                return empty(StatusCode::PAYLOAD_TOO_LARGE);
            }
            s.abort(CloseReason::TransportError);
            return empty(StatusCode::BAD_REQUEST);
        }
    };
    tracing::trace!(sid = %s.id(), body = %String::from_utf8_lossy(&body), "polling POST");
    for p in Packet::decode_payload(body) {
        match p {
            Ok(p) => {
                if !engine.on_packet(&s, p) {
                    break;
                }
            }
            Err(e) => {
                tracing::debug!(sid = %s.id(), error = %e, "invalid packet");
                s.abort(CloseReason::ParseError);
                break;
            }
        }
    }
    Response::builder()
        .header(header::CONTENT_TYPE, "text/html")
        .body(Full::new(Bytes::from_static(b"ok")))
        .expect("static response parts are valid")
}

/// A polling payload, compressed when the client accepts it and it is large enough.
pub(crate) fn payload_response(
    body: Vec<u8>,
    headers: &HeaderMap,
    threshold: Option<usize>,
) -> Response<Full<Bytes>> {
    let resp = Response::builder().header(header::CONTENT_TYPE, "text/plain; charset=UTF-8");
    let accept = headers
        .get(header::ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let encoding = match threshold {
        Some(t) if body.len() >= t => {
            if accept.contains("gzip") {
                Some("gzip")
            } else if accept.contains("deflate") {
                Some("deflate")
            } else {
                None
            }
        }
        _ => None,
    };
    let out = match encoding {
        Some("gzip") => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(&body).and_then(|_| e.finish()).ok()
        }
        Some(_) => {
            let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(&body).and_then(|_| e.finish()).ok()
        }
        None => None,
    };
    match (out, encoding) {
        (Some(c), Some(enc)) => resp
            .header(header::CONTENT_ENCODING, enc)
            .body(Full::new(Bytes::from(c))),
        _ => resp.body(Full::new(Bytes::from(body))),
    }
    .expect("static response parts are valid")
}

/// Drives a polling session: heartbeat, and the end of the session. Returns when the
/// session closed (after finishing it) or moved to WebSocket (whose task takes over).
pub(crate) async fn drive<H: EngineHandler>(engine: Arc<Engine<H>>, s: Arc<Session<H::Data>>) {
    let close_grace = engine.config.ping_interval.min(Duration::from_secs(30));
    let mut closing_since: Option<Instant> = None;
    loop {
        let notified = s.driver.notified();
        let (transport, closing, flushed) = {
            let st = s.state.lock();
            (st.transport, st.closing, st.close_delivered)
        };
        if transport != TransportKind::Polling {
            return;
        }
        let wake;
        if closing.is_some() {
            let since = *closing_since.get_or_insert_with(Instant::now);
            let (graceful, get_pending) = {
                let st = s.state.lock();
                (st.flush_on_close, st.get_pending)
            };
            // A graceful close waits for a GET to collect the last packets and the
            // close packet, as the reference does, for at most `close_grace`. When the
            // server shuts down, no GET will come: only a pending one is answered.
            let shutting_down = closing == Some(CloseReason::ServerShutdown) && !get_pending;
            if !graceful || flushed || shutting_down || since.elapsed() >= close_grace {
                engine.finish(&s);
                return;
            }
            wake = Some(since + close_grace);
        } else {
            match s.beat(Instant::now()) {
                Beat::Wait(t) | Beat::PingSent(t) => wake = Some(t),
                Beat::TimedOut => {
                    s.abort(CloseReason::PingTimeout);
                    continue;
                }
            }
        }
        let until = wake.unwrap_or_else(|| Instant::now() + close_grace);
        tokio::select! {
            _ = notified => {}
            _ = tokio::time::sleep_until(until) => {}
        }
    }
}
