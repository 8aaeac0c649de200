//! WebSocket load: many connections in echo mode (send, await the reply, record the round trip)
//! or subscribe mode (receive, record latency from a `ts` timestamp in the message when present,
//! count messages per second). Scenario WebSocket steps (`scenario.rs`) open their sessions and
//! exchange messages with the same functions.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, Message};

use crate::http1::Stream;
use crate::recorder::ErrorKind;
use crate::runner::{connect, Run, WsMode};
use crate::target::Target;

pub(crate) type Ws = tokio_tungstenite::WebSocketStream<Stream>;

fn classify(e: &tungstenite::Error) -> ErrorKind {
    match e {
        tungstenite::Error::Http(resp) if resp.status().is_server_error() => ErrorKind::Http5xx,
        tungstenite::Error::Http(resp) if resp.status().is_client_error() => ErrorKind::Http4xx,
        tungstenite::Error::Io(io) => ErrorKind::from_io(io),
        tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed => {
            ErrorKind::Reset
        }
        tungstenite::Error::Tls(_) => ErrorKind::Tls,
        _ => ErrorKind::Protocol,
    }
}

/// What opening one WebSocket connection needs: the whole-run modes take it from the plan,
/// scenario steps from the rendered step.
pub(crate) struct Session<'a> {
    pub target: &'a Target,
    /// The URL to request (a scenario renders it per run; `target` only fixes the origin).
    pub url: &'a str,
    pub headers: &'a [(String, String)],
    pub timeout: Duration,
}

impl Session<'_> {
    /// Connects (TCP or TLS, as every engine does) and performs the upgrade handshake.
    /// On failure, the category and a message for the report's `error_messages`.
    pub(crate) async fn open(&self) -> Result<Ws, (ErrorKind, String)> {
        let stream = connect(self.target, self.timeout)
            .await
            .map_err(|(k, e)| (k, e.to_string()))?;
        let protocol = |e: &dyn std::fmt::Display| (ErrorKind::Protocol, e.to_string());
        let mut req = self.url.into_client_request().map_err(|e| protocol(&e))?;
        for (k, v) in self.headers {
            let name =
                http::header::HeaderName::from_bytes(k.as_bytes()).map_err(|e| protocol(&e))?;
            let value = http::header::HeaderValue::from_str(v).map_err(|e| protocol(&e))?;
            req.headers_mut().insert(name, value);
        }
        match tokio::time::timeout(self.timeout, tokio_tungstenite::client_async(req, stream)).await
        {
            Ok(Ok((ws, _))) => Ok(ws),
            // E.g. `HTTP error: 200 OK` from a server that does not upgrade.
            Ok(Err(e)) => Err((classify(&e), format!("WebSocket handshake: {e}"))),
            Err(_) => Err((
                ErrorKind::Timeout,
                format!("WebSocket handshake took longer than {:?}", self.timeout),
            )),
        }
    }
}

async fn open(run: &Run) -> Result<Ws, (ErrorKind, String)> {
    let plan = &run.plan;
    let Some(target) = plan.target.as_ref() else {
        return Err((ErrorKind::Connect, "no target".into()));
    };
    Session {
        target,
        url: target.url.as_str(),
        headers: &plan.headers,
        timeout: plan.timeout,
    }
    .open()
    .await
}

/// A failure on an open session: the category and a message for the report's
/// `error_messages` (formatted only when it fails, which is the rare path).
pub(crate) type WsError = (ErrorKind, String);

/// Sends one text message.
pub(crate) async fn send_text(ws: &mut Ws, text: String) -> Result<(), WsError> {
    send(ws, Message::Text(text)).await
}

/// Sends one message (text or binary frame).
pub(crate) async fn send(ws: &mut Ws, msg: Message) -> Result<(), WsError> {
    ws.send(msg)
        .await
        .map_err(|e| (classify(&e), format!("WebSocket send: {e}")))
}

/// Starts the close handshake without waiting long for the peer (it may be the one that failed).
pub(crate) async fn close(ws: &mut Ws) {
    let _ = tokio::time::timeout(Duration::from_millis(100), ws.close(None)).await;
}

/// Receives the next data message, text or binary, skipping control frames.
pub(crate) async fn next_data(ws: &mut Ws) -> Result<Vec<u8>, WsError> {
    next_frame(ws).await.map(|f| f.data)
}

/// A received data message.
pub(crate) struct Frame {
    /// A binary frame (else text).
    pub binary: bool,
    pub data: Vec<u8>,
}

/// Receives the next data message and whether it came in a binary frame, skipping control
/// frames.
pub(crate) async fn next_frame(ws: &mut Ws) -> Result<Frame, WsError> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => {
                return Ok(Frame {
                    binary: false,
                    data: t.into_bytes(),
                })
            }
            Some(Ok(Message::Binary(data))) => return Ok(Frame { binary: true, data }),
            Some(Ok(Message::Close(frame))) => return Err((ErrorKind::Reset, closed_by(frame))),
            None => {
                return Err((
                    ErrorKind::Reset,
                    "WebSocket recv: the connection ended without a close frame".into(),
                ))
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err((classify(&e), format!("WebSocket recv: {e}"))),
        }
    }
}

/// The message for a close frame from the server: its code and reason say why (e.g. 1011
/// and the server's own text), which the count alone does not.
fn closed_by(frame: Option<tungstenite::protocol::CloseFrame<'_>>) -> String {
    match frame {
        Some(f) if f.reason.is_empty() => {
            format!("WebSocket closed by the server: code {}", u16::from(f.code))
        }
        Some(f) => format!(
            "WebSocket closed by the server: code {}, reason {:?}",
            u16::from(f.code),
            f.reason
        ),
        None => "WebSocket closed by the server (close frame without a code)".into(),
    }
}

/// The message for a send/receive exchange that did not finish within `limit`.
pub(crate) fn timed_out(what: &str, limit: Duration) -> String {
    format!("WebSocket {what}: nothing within {limit:?}")
}

pub(crate) async fn ws_vu(run: Arc<Run>, vu: usize) {
    match run.plan.ws_mode {
        WsMode::Echo => echo(run, vu).await,
        WsMode::Subscribe => subscribe(run, vu).await,
    }
}

async fn echo(run: Arc<Run>, vu: usize) {
    let plan = run.plan.clone();
    let mut local = run.recorder.local(vu);
    let mut ws: Option<Ws> = None;
    let mut backoff = Duration::from_millis(10);
    while let Some(scheduled) = run.turn(vu, &mut local).await {
        let sent = Instant::now();
        if ws.is_none() {
            match open(&run).await {
                Ok(w) => {
                    ws = Some(w);
                    backoff = Duration::from_millis(10);
                }
                Err((kind, why)) => {
                    local.error_because(0, kind, 0, &why);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    continue;
                }
            }
        }
        let Some(w) = ws.as_mut() else { continue };
        let exchange = async {
            send_text(w, plan.ws_message.clone()).await?;
            next_data(w).await
        };
        match tokio::time::timeout(plan.timeout, exchange).await {
            Ok(Ok(reply)) => {
                local.ws(1, 1);
                local.response(0, scheduled, sent, 0, reply.len() as u64);
            }
            Ok(Err((kind, why))) => {
                local.error_because(0, kind, 0, &why);
                ws = None;
            }
            Err(_) => {
                let why = timed_out("echo (send, then await the reply)", plan.timeout);
                local.error_because(0, ErrorKind::Timeout, 0, &why);
                ws = None;
            }
        }
        run.think().await;
    }
    if let Some(mut w) = ws {
        close(&mut w).await;
    }
}

async fn subscribe(run: Arc<Run>, vu: usize) {
    let plan = run.plan.clone();
    let mut local = run.recorder.local(vu);
    let mut backoff = Duration::from_millis(10);
    while run.turn(vu, &mut local).await.is_some() {
        let mut ws = match open(&run).await {
            Ok(w) => w,
            Err((kind, why)) => {
                local.error_because(0, kind, 0, &why);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        backoff = Duration::from_millis(10);
        if !plan.ws_message.is_empty() {
            if let Err((kind, why)) = send_text(&mut ws, plan.ws_message.clone()).await {
                local.error_because(0, kind, 0, &why);
                continue;
            }
            local.ws(1, 0);
        }
        // Subscribed: from here on the user only listens, which is not a request in flight
        // (each message is recorded as it comes), so the end of the run interrupts nothing.
        local.settle();
        loop {
            match next_data(&mut ws).await {
                Ok(msg) => {
                    local.ws(0, 1);
                    match timestamp_latency(&msg) {
                        Some(lat) => local.message_latency(lat, msg.len() as u64),
                        None => local.message(msg.len() as u64),
                    }
                }
                Err((kind, why)) => {
                    local.error_because(0, kind, 0, &why);
                    break;
                }
            }
        }
    }
}

/// Latency of a message carrying a `ts` (or `ts_ms` / `ts_us`) Unix timestamp. Plain `ts` is
/// read by magnitude: seconds (float), milliseconds or microseconds.
fn timestamp_latency(msg: &[u8]) -> Option<Duration> {
    let v: serde_json::Value = serde_json::from_slice(msg).ok()?;
    let now_us = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .ok()?
        .as_micros() as f64;
    let sent_us = if let Some(us) = v.get("ts_us").and_then(serde_json::Value::as_f64) {
        us
    } else if let Some(ms) = v.get("ts_ms").and_then(serde_json::Value::as_f64) {
        ms * 1000.0
    } else {
        let ts = v.get("ts").and_then(serde_json::Value::as_f64)?;
        if ts > 1e14 {
            ts
        } else if ts > 1e11 {
            ts * 1000.0
        } else {
            ts * 1e6
        }
    };
    let lat = now_us - sent_us;
    (lat.is_finite() && lat >= 0.0).then(|| Duration::from_micros(lat as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_by_magnitude() {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        let ms = now.as_millis() - 50;
        let lat = timestamp_latency(format!("{{\"ts\":{ms}}}").as_bytes()).unwrap();
        assert!(lat >= Duration::from_millis(50), "{lat:?}");
        assert!(timestamp_latency(b"{\"x\":1}").is_none());
        assert!(timestamp_latency(b"not json").is_none());
    }
}
