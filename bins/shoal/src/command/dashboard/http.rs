//! The dashboard's HTTP side: the page's assets, its JSON API and its live stream, behind an
//! access token.
//!
//! The token is made at start and printed in the URL (`/?token=…`), as Jupyter does: the first
//! request with it is answered with a cookie (`shoal_dashboard_PORT`, `HttpOnly`,
//! `SameSite=Strict`) and a redirect to `/`, and every request must carry the cookie. Another user
//! of the machine cannot use the dashboard without the URL, and a web page on another site cannot
//! make the browser act through it (the cookie is not sent on cross-site requests; a DNS-rebound
//! name is another site). Browsers send a host's cookies to all its ports: a page the operator
//! opens on another port of the same host could read the cookie, as with any loopback service
//! that signs in by cookie. Responses forbid framing, sniffing, referrers and any script or style
//! not served from here.
//!
//! | Route | |
//! |---|---|
//! | `GET /`, `/app.js`, `/app.css` | the page (embedded in the binary) |
//! | `GET /api/state` | the whole model (see `state::Model::snapshot`) |
//! | `GET /api/events` | server-sent events: `reset` (the model), `delta` (changes), `status` |
//! | `POST /api/services/ID/scale` | `{"replicas": N, "specVersion": V}` |
//! | `POST /api/services/ID/rollback` | `{"specVersion": V}` |
//! | `POST /api/nodes/ID/availability` | `{"availability": "active" \| "pause" \| "drain"}` |
//!
//! Actions answer `{"message": …}` or, with a 4xx status, `{"error": …}` (the CLI's own words).
//! `specVersion`, when given, is the service's spec version the page showed: a service changed
//! since is refused (409), so a confirmation never applies to a service the user did not see.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited, StreamBody, combinators::BoxBody};
use hyper::body::{Body, Frame};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{Value, json};
use shoal_api::v1::control_client::ControlClient;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::StreamExt as _;
use tonic::transport::Channel;

use super::actions;
use super::state::Hub;

/// The access cookie's name: `shoal_dashboard_PORT`, since browsers keep cookies per host, not
/// per port, and two dashboards on one machine must not take each other's.
fn cookie_name(port: u16) -> String {
    format!("shoal_dashboard_{port}")
}
/// The largest action body accepted.
const MAX_BODY: usize = 64 << 10;
/// How long a client may take to send a request's head.
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// A comment line sent this often keeps idle streams open and finds browsers that left.
const KEEPALIVE: Duration = Duration::from_secs(15);

const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const APP_CSS: &str = include_str!("assets/app.css");

pub(crate) type ResponseBody = BoxBody<Bytes, Infallible>;

/// What answers the dashboard's requests.
#[derive(Debug)]
pub(crate) struct Server {
    pub(crate) hub: Arc<Hub>,
    pub(crate) control: ControlClient<Channel>,
    pub(crate) token: String,
    /// The port it serves on: its cookie's name.
    pub(crate) port: u16,
}

fn full(body: impl Into<Bytes>) -> ResponseBody {
    Full::new(body.into()).boxed()
}

/// A response with the headers every answer carries.
fn respond(status: StatusCode, content_type: &'static str, body: ResponseBody) -> Response<ResponseBody> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; \
             frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
        ),
    );
    response
}

fn json_response(status: StatusCode, value: &Value) -> Response<ResponseBody> {
    respond(status, "application/json", full(value.to_string()))
}

fn error(status: StatusCode, message: impl Into<String>) -> Response<ResponseBody> {
    json_response(status, &json!({ "error": message.into() }))
}

/// Compares two strings in time that depends only on their lengths.
fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The value of `name` in the request's query string.
fn query_value<'a>(query: Option<&'a str>, name: &str) -> Option<&'a str> {
    query?.split('&').find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
}

/// The value of cookie `name`, if the request has one.
fn cookie<'a, B>(request: &'a Request<B>, name: &str) -> Option<&'a str> {
    request
        .headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .find_map(|pair| pair.trim().strip_prefix(name)?.strip_prefix('='))
}

impl Server {
    /// Answers one request.
    pub(crate) async fn handle<B>(self: Arc<Self>, request: Request<B>) -> Response<ResponseBody>
    where
        B: Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        if let Some(given) = query_value(request.uri().query(), "token") {
            if !same_secret(given, &self.token) {
                return error(
                    StatusCode::UNAUTHORIZED,
                    "this access token is not the dashboard's: open the URL `shoal dashboard` printed",
                );
            }
            let mut response = respond(StatusCode::SEE_OTHER, "text/plain", full("signed in"));
            let cookie = format!("{}={}; Path=/; HttpOnly; SameSite=Strict", cookie_name(self.port), self.token);
            let headers = response.headers_mut();
            // Always the page itself (it routes by the part after `#`): never a place the request names.
            headers.insert(header::LOCATION, HeaderValue::from_static("/"));
            if let Ok(cookie) = HeaderValue::from_str(&cookie) {
                headers.insert(header::SET_COOKIE, cookie);
            }
            return response;
        }
        if !cookie(&request, &cookie_name(self.port)).is_some_and(|given| same_secret(given, &self.token)) {
            return error(
                StatusCode::UNAUTHORIZED,
                "no access token: open the URL `shoal dashboard` printed (it ends in ?token=…)",
            );
        }
        let path = request.uri().path().to_owned();
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        match (request.method().clone(), segments.as_slice()) {
            (Method::GET, [""] | ["index.html"]) => {
                respond(StatusCode::OK, "text/html; charset=utf-8", full(INDEX_HTML))
            }
            (Method::GET, ["app.js"]) => respond(StatusCode::OK, "text/javascript; charset=utf-8", full(APP_JS)),
            (Method::GET, ["app.css"]) => respond(StatusCode::OK, "text/css; charset=utf-8", full(APP_CSS)),
            (Method::GET, ["api", "state"]) => respond(StatusCode::OK, "application/json", full(self.hub.snapshot())),
            (Method::GET, ["api", "events"]) => self.stream(),
            (Method::POST, ["api", kind @ ("services" | "nodes"), id, action]) => {
                let (kind, id, action) = (kind.to_string(), id.to_string(), action.to_string());
                self.act(request, &kind, &id, &action).await
            }
            (Method::GET | Method::POST, _) => error(StatusCode::NOT_FOUND, format!("no such page or API: {path}")),
            (method, _) => error(StatusCode::METHOD_NOT_ALLOWED, format!("{method} is not served here")),
        }
    }

    /// `/api/events`: the model, then its changes, as server-sent events.
    fn stream(&self) -> Response<ResponseBody> {
        let (first, mut frames) = self.hub.follow();
        let hub = Arc::clone(&self.hub);
        let (tx, rx) = mpsc::channel::<Bytes>(16);
        tokio::spawn(async move {
            if tx.send(Bytes::from(first.to_string())).await.is_err() {
                return;
            }
            loop {
                let next = tokio::select! {
                    frame = frames.recv() => frame,
                    _ = tokio::time::sleep(KEEPALIVE) => {
                        if tx.send(Bytes::from_static(b": keepalive\n\n")).await.is_err() {
                            return;
                        }
                        continue;
                    }
                };
                let bytes = match next {
                    Ok(frame) => Bytes::from(frame.to_string()),
                    // Fell behind: start this browser over from the model as it is now.
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        let (reset, fresh) = hub.follow();
                        frames = fresh;
                        Bytes::from(reset.to_string())
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                };
                if tx.send(bytes).await.is_err() {
                    return;
                }
            }
        });
        let frames = tokio_stream::wrappers::ReceiverStream::new(rx).map(|bytes| Ok(Frame::data(bytes)));
        let mut response = respond(StatusCode::OK, "text/event-stream", StreamBody::new(frames).boxed());
        response.headers_mut().insert("x-accel-buffering", HeaderValue::from_static("no"));
        response
    }

    /// `POST /api/KIND/ID/ACTION`.
    async fn act<B>(&self, request: Request<B>, kind: &str, id: &str, action: &str) -> Response<ResponseBody>
    where
        B: Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let is_json = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim().starts_with("application/json"));
        if !is_json {
            return error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "actions take a JSON body (Content-Type: application/json)",
            );
        }
        let body = match Limited::new(request.into_body(), MAX_BODY).collect().await {
            Ok(body) => body.to_bytes(),
            Err(err) => return error(StatusCode::BAD_REQUEST, format!("cannot read the request body: {err}")),
        };
        let body: Value = if body.is_empty() {
            json!({})
        } else {
            match serde_json::from_slice(&body) {
                Ok(value) => value,
                Err(err) => return error(StatusCode::BAD_REQUEST, format!("the request body is not JSON: {err}")),
            }
        };
        let mut control = self.control.clone();
        let done = match (kind, action) {
            ("services", "scale") => actions::scale(&mut control, id, &body).await,
            ("services", "rollback") => actions::rollback(&mut control, id, &body).await,
            ("nodes", "availability") => actions::availability(&mut control, id, &body).await,
            _ => return error(StatusCode::NOT_FOUND, format!("no action {action} on {kind}")),
        };
        match done {
            Ok(message) => json_response(StatusCode::OK, &json!({ "message": message })),
            Err(actions::ActionError::BadRequest(message)) => error(StatusCode::BAD_REQUEST, message),
            Err(actions::ActionError::Refused(err)) => error(StatusCode::CONFLICT, format!("{err:#}")),
        }
    }
}

/// Serves `server` on `listener` until the process ends: HTTP/1.1, one task per connection.
pub(crate) async fn serve(listener: tokio::net::TcpListener, server: Arc<Server>) -> std::io::Result<()> {
    loop {
        let (stream, _) = listener.accept().await?;
        let server = Arc::clone(&server);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let server = Arc::clone(&server);
                async move { Ok::<_, Infallible>(server.handle(request).await) }
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            // A client that sends its request head slowly is dropped; a browser that goes away
            // mid-request is no news.
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(io, service)
                .await;
        });
    }
}
