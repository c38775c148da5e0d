//! The HTTP entry point: request checks in the reference server's order, the handshake,
//! and dispatch to the polling or WebSocket transport.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::config::{CorsOrigin, TransportKind};
use super::error::{empty, HttpError};
use super::packet::{Frame, PacketType};
use super::session::Session;
use super::ws_conn::Mode;
use super::ws_io::Generic;
use super::{polling, ws, ws_conn, Engine, EngineHandler, OpenRequest};
use crate::http::{query_param, BoxError, ConnectionSlot, RemoteAddr};

fn is_ws_upgrade<B>(req: &Request<B>) -> bool {
    req.headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// An error on a WebSocket upgrade is plain text, as the reference's `abortUpgrade`.
fn upgrade_error(e: HttpError, message: Option<&str>) -> Response<Full<Bytes>> {
    let msg = message.map(str::to_owned).unwrap_or_else(|| e.to_string());
    Response::builder()
        .status(StatusCode::BAD_REQUEST)
        .header(header::CONNECTION, "close")
        .header(header::CONTENT_TYPE, "text/html")
        .body(Full::new(Bytes::from(msg)))
        .expect("static response parts are valid")
}

impl<H: EngineHandler> Engine<H> {
    /// Handles an HTTP request addressed to the engine's path. Any request body works
    /// (hyper's `Incoming`, axum's `Body`, ...). The WebSocket transport needs the
    /// request to come from a hyper server with upgrades enabled.
    pub async fn handle<B>(self: &Arc<Self>, req: Request<B>) -> Response<Full<Bytes>>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let origin = req.headers().get(header::ORIGIN).cloned();
        let mut resp = self.route(req).await;
        self.add_cors(&mut resp, origin.as_ref());
        resp
    }

    fn add_cors(&self, resp: &mut Response<Full<Bytes>>, origin: Option<&HeaderValue>) {
        let Some(cors) = &self.config.cors else {
            return;
        };
        let h = resp.headers_mut();
        let allowed = match (&cors.origin, origin) {
            (CorsOrigin::Any, Some(o)) if cors.credentials => Some(o.clone()),
            (CorsOrigin::Any, _) => Some(HeaderValue::from_static("*")),
            (CorsOrigin::List(list), Some(o)) => list
                .iter()
                .any(|l| l.as_bytes() == o.as_bytes())
                .then(|| o.clone()),
            (CorsOrigin::List(_), None) => None,
        };
        if let Some(a) = allowed {
            h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, a);
            if cors.credentials {
                h.insert(
                    header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                    HeaderValue::from_static("true"),
                );
            }
        }
        h.append(header::VARY, HeaderValue::from_static("Origin"));
    }

    async fn route<B>(self: &Arc<Self>, mut req: Request<B>) -> Response<Full<Bytes>>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let upgrade = is_ws_upgrade(&req);
        let err = |e: HttpError| {
            if upgrade {
                upgrade_error(e, None)
            } else {
                e.response(None)
            }
        };
        if req.method() == Method::OPTIONS && self.config.cors.is_some() {
            let mut r = empty(StatusCode::NO_CONTENT);
            let h = r.headers_mut();
            h.insert(
                header::ACCESS_CONTROL_ALLOW_METHODS,
                HeaderValue::from_static("GET,HEAD,PUT,PATCH,POST,DELETE"),
            );
            if let Some(hdrs) = req.headers().get(header::ACCESS_CONTROL_REQUEST_HEADERS) {
                h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, hdrs.clone());
            }
            return r;
        }
        let query = req.uri().query().unwrap_or("").to_owned();
        let query = query.as_str();
        let transport = query_param(query, "transport")
            .as_deref()
            .and_then(TransportKind::parse)
            .filter(|t| self.config.allows(*t));
        let Some(transport) = transport else {
            return err(HttpError::UnknownTransport);
        };
        if let Some(o) = req.headers().get(header::ORIGIN) {
            if o.as_bytes()
                .iter()
                .any(|c| *c != b'\t' && (*c < 0x20 || *c == 0x7f))
            {
                return err(HttpError::BadRequest);
            }
        }
        if let Some(sid) = query_param(query, "sid") {
            let session = sid.parse().ok().and_then(|sid| self.session(sid));
            let Some(session) = session else {
                return err(HttpError::UnknownSid);
            };
            if session.check_pong_deadline() || session.is_gone() {
                return err(HttpError::UnknownSid);
            }
            // Every request of a session speaks the protocol it opened with.
            if query_param(query, "EIO").as_deref() != Some("4") {
                return err(HttpError::BadRequest);
            }
            if upgrade {
                if transport != TransportKind::Websocket || !self.config.allow_upgrades {
                    return err(HttpError::BadRequest);
                }
                return self.accept_ws(&mut req, Some(session));
            }
            if session.transport() != transport {
                return err(HttpError::BadRequest);
            }
            return match *req.method() {
                Method::GET => polling::get(self, session, req.headers()).await,
                Method::POST => polling::post(self, session, req).await,
                _ => empty(StatusCode::INTERNAL_SERVER_ERROR),
            };
        }
        // Handshake.
        if req.method() != Method::GET {
            return err(HttpError::BadHandshakeMethod);
        }
        // A WebSocket handshake must name the websocket transport, and the reverse.
        if (transport == TransportKind::Websocket) != upgrade {
            return err(HttpError::BadRequest);
        }
        if let Some(allow) = &self.config.allow_request {
            let (parts, body) = req.into_parts();
            let verdict = allow(&parts).await;
            req = Request::from_parts(parts, body);
            if let Err(msg) = verdict {
                return if upgrade {
                    upgrade_error(HttpError::Forbidden, Some(&msg))
                } else {
                    HttpError::Forbidden.response(Some(&msg))
                };
            }
        }
        if query_param(query, "EIO").as_deref() != Some("4") {
            return err(HttpError::UnsupportedProtocolVersion);
        }
        if upgrade {
            return self.accept_ws(&mut req, None);
        }
        let session = self.open(transport, &req);
        let mut body = Vec::new();
        self.open_packet(&session, transport)
            .write_polling(&mut body);
        // Anything the handler queued on open goes out with the handshake.
        for f in session.state.lock().queue.drain(..) {
            f.write_polling(&mut body);
        }
        tokio::spawn(polling::drive(self.clone(), session.clone()));
        let mut resp = polling::payload_response(body, req.headers(), None);
        self.set_cookie(&mut resp, &session);
        resp
    }

    fn set_cookie(&self, resp: &mut Response<Full<Bytes>>, s: &Session<H::Data>) {
        if let Some(c) = &self.config.cookie {
            let mut v = format!("{}={}; Path={}", c.name, s.id(), c.path);
            if c.http_only {
                v.push_str("; HttpOnly");
            }
            if !c.same_site.is_empty() {
                v.push_str("; SameSite=");
                v.push_str(&c.same_site);
            }
            if let Ok(v) = HeaderValue::from_str(&v) {
                resp.headers_mut().append(header::SET_COOKIE, v);
            }
        }
    }

    fn open_packet(&self, s: &Session<H::Data>, t: TransportKind) -> Frame {
        let c = &self.config;
        let body = serde_json::json!({
            "sid": s.id(),
            "upgrades": c.upgrades_for(t),
            "pingInterval": c.ping_interval.as_millis() as u64,
            "pingTimeout": c.ping_timeout.as_millis() as u64,
            "maxPayload": c.max_payload,
        });
        Frame::text(PacketType::Open, body.to_string().as_bytes())
    }

    /// Creates and registers a session, and tells the handler.
    fn open<B>(self: &Arc<Self>, t: TransportKind, req: &Request<B>) -> Arc<Session<H::Data>> {
        let c = &self.config;
        let s = Arc::new(Session::new(
            super::Sid::new(),
            H::Data::default(),
            t,
            c.ping_interval,
            c.ping_timeout,
            c.max_buffered_packets,
        ));
        self.insert(s.clone());
        let (mut parts, _) = Request::new(()).into_parts();
        parts.method = req.method().clone();
        parts.uri = req.uri().clone();
        parts.version = req.version();
        // Copied value by value: hyper's header values are slices of its read buffer,
        // and keeping them for the session's life would keep that whole buffer (8 KB
        // or more) alive per connection.
        parts.headers = req
            .headers()
            .iter()
            .filter_map(|(k, v)| Some((k.clone(), HeaderValue::from_bytes(v.as_bytes()).ok()?)))
            .collect();
        let remote: Option<SocketAddr> = req.extensions().get::<RemoteAddr>().map(|r| r.0);
        let open = OpenRequest { parts, remote };
        if t == TransportKind::Websocket {
            // The open packet must be the first frame, before anything `on_open` sends.
            let _ = s.send_frame(self.open_packet(&s, t));
        }
        self.handler.on_open(&s, &open);
        s
    }

    /// Answers a WebSocket upgrade and starts the connection task.
    fn accept_ws<B>(
        self: &Arc<Self>,
        req: &mut Request<B>,
        existing: Option<Arc<Session<H::Data>>>,
    ) -> Response<Full<Bytes>> {
        let key = req.headers().get(header::SEC_WEBSOCKET_KEY).cloned();
        let version_ok = req
            .headers()
            .get(header::SEC_WEBSOCKET_VERSION)
            .is_some_and(|v| v.as_bytes() == b"13");
        let (Some(key), true) = (key, version_ok) else {
            return upgrade_error(HttpError::BadRequest, None);
        };
        let (session, mode) = match existing {
            Some(s) => {
                // One upgrade per session. Like the reference, a second WebSocket (the
                // session is upgrading, upgraded, or closing) is accepted and closed at
                // once; the session carries on.
                let mut st = s.state.lock();
                let mode = if st.closing.is_some()
                    || st.upgrading
                    || st.transport != TransportKind::Polling
                {
                    Mode::Refuse
                } else {
                    st.upgrading = true;
                    Mode::Upgrade
                };
                drop(st);
                (s, mode)
            }
            None => (self.open(TransportKind::Websocket, req), Mode::Fresh),
        };
        // The connection counts against `max_connections` for as long as it lives.
        let slot = req.extensions().get::<ConnectionSlot>().cloned();
        let on_upgrade = hyper::upgrade::on(req);
        let engine = self.clone();
        tokio::spawn(async move {
            let _slot = slot;
            match on_upgrade.await {
                // Served on a plain TCP connection by hyper's HTTP/1 server: the
                // transport drives the socket itself.
                Ok(up) => match up.downcast::<TokioIo<TcpStream>>() {
                    Ok(parts) => {
                        let io = parts.io.into_inner();
                        let _ = io.set_nodelay(true);
                        ws_conn::run(engine, session, mode, io, parts.read_buf).await;
                    }
                    // Anything else (axum's server, TLS): through AsyncRead/AsyncWrite.
                    Err(up) => {
                        let io = Generic(TokioIo::new(up));
                        ws_conn::run(engine, session, mode, io, Bytes::new()).await;
                    }
                },
                Err(e) => {
                    tracing::debug!(error = %e, "websocket upgrade failed");
                    match mode {
                        Mode::Fresh => {
                            session.abort(super::CloseReason::TransportError);
                            engine.finish(&session);
                        }
                        Mode::Upgrade => session.state.lock().upgrading = false,
                        Mode::Refuse => {}
                    }
                }
            }
        });
        Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header(header::UPGRADE, "websocket")
            .header(header::CONNECTION, "Upgrade")
            .header(header::SEC_WEBSOCKET_ACCEPT, ws::accept_key(key.as_bytes()))
            .body(Full::new(Bytes::new()))
            .expect("static response parts are valid")
    }
}
