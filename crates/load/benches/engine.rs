//! Per-request costs of the generator itself: recording a sample into the HDR shards, one
//! HTTP/1.1 request/response through the raw engine (in-memory peer, so no syscalls), and a
//! timetable ticket.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use scalewise_load::http1::{serialize, Conn};
use scalewise_load::recorder::Recorder;
use scalewise_load::schedule::{Shape, Timetable};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A peer that answers every write with the same canned response.
struct Canned {
    resp: &'static [u8],
    pos: usize,
}

impl AsyncRead for Canned {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let n = (self.resp.len() - self.pos).min(buf.remaining());
        let start = self.pos;
        buf.put_slice(&self.resp[start..start + n]);
        self.pos += n;
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Canned {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.pos = 0;
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

const NGINX_RESPONSE: &[u8] =
    b"HTTP/1.1 200 OK\r\nServer: nginx/1.24.0\r\nDate: Tue, 01 Dec 2026 21:00:00 GMT\r\n\
Content-Type: text/plain\r\nContent-Length: 17\r\nConnection: keep-alive\r\n\r\nhello, scalewise\n";

const CHUNKED_RESPONSE: &[u8] =
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10\r\n0123456789abcdef\r\n4\r\nwxyz\r\n0\r\n\r\n";

fn engine(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let wire = serialize("GET", "/", "127.0.0.1:8080", &[], b"", true);
    for (name, resp) in [
        ("http1_request_content_length", NGINX_RESPONSE),
        ("http1_request_chunked", CHUNKED_RESPONSE),
    ] {
        let mut conn = Conn::new(Canned {
            resp,
            pos: resp.len(),
        });
        c.bench_function(name, |b| {
            b.iter(|| {
                rt.block_on(async {
                    conn.request(&wire, false)
                        .await
                        .map(|r| r.status)
                        .unwrap_or(0)
                })
            })
        });
    }
}

fn recording(c: &mut Criterion) {
    let rec = Recorder::new(4);
    let mut local = rec.local(0);
    let t0 = Instant::now() - Duration::from_millis(3);
    c.bench_function("record_response_open", |b| {
        b.iter(|| local.response(0, t0, t0, 200, 120))
    });
    let rec = Recorder::new(4).single_closed();
    let mut local = rec.local(0);
    c.bench_function("record_response_closed", |b| {
        b.iter(|| local.response(0, t0, t0, 200, 120))
    });
}

fn timetable(c: &mut Criterion) {
    let tt = Timetable::new(Shape::Constant, 1e9, Duration::from_secs(1_000_000));
    c.bench_function("timetable_next_constant", |b| b.iter(|| tt.next()));
    let tt = Timetable::new(
        Shape::Ramp { from: 1e6 },
        2e6,
        Duration::from_secs(1_000_000),
    );
    c.bench_function("timetable_next_ramp", |b| b.iter(|| tt.next()));
}

criterion_group!(benches, engine, recording, timetable);
criterion_main!(benches);
