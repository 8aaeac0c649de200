//! Property tests for the HTTP/1 codec: the request-head parser, the response-head parser
//! and the chunked decoder never panic on any input, give the same answer whether a message
//! arrives in one read or split at any byte boundaries, and agree with `httparse` (the
//! reference) on what a valid head says.
//!
//! Case counts are modest (`CASES`) so the suite stays fast on a 2-core CI runner.
use super::codec::{
    parse_request, parse_response, Chunk, ChunkedDecoder, HeadError, RequestHead, ResponseHead,
};
use bytes::BytesMut;
use http::HeaderMap;
use proptest::prelude::*;
use proptest::sample::Index;

const CASES: u32 = 512;
const MAX_HEAD: usize = 8192;

/// Bytes biased towards HTTP syntax, so random input reaches the parsers' deeper states.
fn http_ish_bytes() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        any::<u8>().prop_map(|b| vec![b]),
        prop::sample::select(vec![
            &b"\r\n"[..],
            b"\n",
            b"\r",
            b" ",
            b"\t",
            b":",
            b";",
            b",",
            b"GET / HTTP/1.1\r\n",
            b"HTTP/1.1 200 OK\r\n",
            b"Host: x\r\n",
            b"Content-Length: 5\r\n",
            b"Transfer-Encoding: chunked\r\n",
            b"\r\n\r\n",
            b"0\r\n\r\n",
            b"5\r\nhello\r\n",
            b"ffffffffffffffffff",
            b"\0",
        ])
        .prop_map(<[u8]>::to_vec),
    ];
    prop::collection::vec(piece, 0..40).prop_map(|v| v.concat())
}

/// Sorted cut points into a message of `len` bytes.
fn cuts(idx: &[Index], len: usize) -> Vec<usize> {
    let mut c: Vec<usize> = idx.iter().map(|i| i.index(len + 1)).collect();
    c.push(len);
    c.sort_unstable();
    c.dedup();
    c
}

fn token() -> impl Strategy<Value = String> {
    "[A-Za-z0-9!#$%&'*+.^_`|~-]{1,12}"
}

/// A header name that does not change framing or routing (those have tests of their own).
fn plain_name() -> impl Strategy<Value = String> {
    token().prop_filter("framing header", |n| {
        ![
            "content-length",
            "transfer-encoding",
            "host",
            "connection",
            "expect",
        ]
        .iter()
        .any(|f| n.eq_ignore_ascii_case(f))
    })
}

/// A field value: visible ASCII, spaces and tabs inside, obs-text allowed.
fn value() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop_oneof![
            8 => 0x21u8..0x7f,
            1 => Just(b' '),
            1 => Just(b'\t'),
            1 => 0x80u8..=0xff,
        ],
        0..24,
    )
}

/// A valid request head (and the body its framing announces).
fn valid_request() -> impl Strategy<Value = Vec<u8>> {
    let method = prop_oneof![
        prop::sample::select(vec!["GET", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"])
            .prop_map(str::to_owned),
        "[A-Z]{1,10}",
    ];
    let target = "/[A-Za-z0-9/._~!$&'()*+,;=:@-]{0,24}(\\?[A-Za-z0-9=&/._~-]{0,12})?";
    let version = prop::sample::select(vec!["HTTP/1.1", "HTTP/1.0"]);
    let headers = prop::collection::vec((plain_name(), value()), 0..10);
    let body = prop_oneof![
        Just(None),
        prop::collection::vec(any::<u8>(), 0..40).prop_map(Some),
    ];
    (method, target, version, headers, body).prop_map(|(m, t, v, hs, body)| {
        let mut out = format!("{m} {t} {v}\r\nHost: example.test\r\n").into_bytes();
        for (n, val) in hs {
            out.extend_from_slice(n.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(&val);
            out.extend_from_slice(b"\r\n");
        }
        if let Some(b) = &body {
            out.extend_from_slice(format!("Content-Length: {}\r\n", b.len()).as_bytes());
        }
        out.extend_from_slice(b"\r\n");
        if let Some(b) = body {
            out.extend_from_slice(&b);
        }
        out
    })
}

/// A valid response head (no body: the head parser is what is under test).
fn valid_response() -> impl Strategy<Value = Vec<u8>> {
    let version = prop::sample::select(vec!["HTTP/1.1", "HTTP/1.0"]);
    let reason = "[A-Za-z ]{0,16}";
    let headers = prop::collection::vec((plain_name(), value()), 0..10);
    let length = prop::option::of(0u64..100_000);
    (version, 100u16..600, reason, headers, length).prop_map(|(v, code, reason, hs, len)| {
        let mut out = format!("{v} {code} {reason}\r\n").into_bytes();
        for (n, val) in hs {
            out.extend_from_slice(n.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(&val);
            out.extend_from_slice(b"\r\n");
        }
        if let Some(n) = len {
            out.extend_from_slice(format!("Content-Length: {n}\r\n").as_bytes());
        }
        out.extend_from_slice(b"\r\n");
        out
    })
}

/// What a request head says, for comparisons.
fn request_summary(h: &RequestHead) -> (String, String, http::Version, Vec<(String, Vec<u8>)>) {
    (
        h.parts.method.to_string(),
        h.parts.uri.to_string(),
        h.parts.version,
        headers_of(&h.parts.headers),
    )
}

fn headers_of(map: &HeaderMap) -> Vec<(String, Vec<u8>)> {
    map.iter()
        .map(|(n, v)| (n.as_str().to_owned(), v.as_bytes().to_vec()))
        .collect()
}

fn response_summary(h: &ResponseHead) -> (u16, http::Version, Vec<(String, Vec<u8>)>) {
    (
        h.parts.status.as_u16(),
        h.parts.version,
        headers_of(&h.parts.headers),
    )
}

/// `httparse`'s headers, lowercased names, in order.
fn reference_headers(hs: &[httparse::Header<'_>]) -> Vec<(String, Vec<u8>)> {
    hs.iter()
        .map(|h| (h.name.to_ascii_lowercase(), h.value.to_vec()))
        .collect()
}

/// A header list in the order a `HeaderMap` iterates it: grouped by name in order of first
/// appearance, values of one name in order.
fn grouped(hs: Vec<(String, Vec<u8>)>) -> Vec<(String, Vec<u8>)> {
    let mut names: Vec<String> = Vec::new();
    for (n, _) in &hs {
        if !names.contains(n) {
            names.push(n.clone());
        }
    }
    let mut out = Vec::new();
    for name in names {
        out.extend(hs.iter().filter(|(n, _)| *n == name).cloned());
    }
    out
}

/// Parses a response head from `bytes` the way the backend client does: the buffer grows
/// read by read, the parser is asked after each.
fn response_in_reads(
    bytes: &[u8],
    at: &[usize],
    head: bool,
) -> Result<Option<(ResponseHead, usize)>, HeadError> {
    let mut buf = BytesMut::new();
    let mut from = 0;
    for &to in at {
        buf.extend_from_slice(&bytes[from..to]);
        from = to;
        if buf.is_empty() {
            continue;
        }
        if let Some(h) = parse_response(&mut buf, MAX_HEAD, head)? {
            // How much the head took: what was fed minus what is left.
            return Ok(Some((h, to - buf.len())));
        }
    }
    Ok(None)
}

/// What the chunked decoder made of an input: the data, the trailers, how it ended, and the
/// bytes left in the buffer after the end.
#[derive(Debug, PartialEq)]
struct Decoded {
    data: Vec<u8>,
    trailers: Option<Vec<(String, Vec<u8>)>>,
    end: End,
    rest: Vec<u8>,
}

#[derive(Debug, PartialEq)]
enum End {
    Done,
    NeedMore,
    Error,
}

/// Feeds `input` to a fresh decoder in the reads `at` describes.
fn decode_in_reads(input: &[u8], at: &[usize]) -> Decoded {
    let mut dec = ChunkedDecoder::default();
    let mut buf = BytesMut::new();
    let mut out = Decoded {
        data: Vec::new(),
        trailers: None,
        end: End::NeedMore,
        rest: Vec::new(),
    };
    let mut from = 0;
    for &to in at {
        buf.extend_from_slice(&input[from..to]);
        from = to;
        loop {
            let before = buf.len();
            match dec.decode(&mut buf) {
                Err(_) => {
                    out.end = End::Error;
                    return out;
                }
                Ok(None) => break,
                Ok(Some(Chunk::Data(d))) => {
                    // Progress is always made: no chunk without bytes taken.
                    assert!(!d.is_empty() && buf.len() < before);
                    out.data.extend_from_slice(&d);
                }
                Ok(Some(Chunk::Trailers(t))) => out.trailers = Some(headers_of(&t)),
                Ok(Some(Chunk::End)) => {
                    out.end = End::Done;
                    buf.extend_from_slice(&input[from..]);
                    out.rest = buf.to_vec();
                    return out;
                }
            }
        }
    }
    out
}

/// Header fields as name (lowercase) and value.
type Fields = Vec<(String, Vec<u8>)>;

/// A valid chunked body: its wire form, its data, its trailers. Chunks with optional
/// extensions and upper- or lowercase sizes.
fn chunked_body() -> impl Strategy<Value = (Vec<u8>, Vec<u8>, Fields)> {
    let chunks = prop::collection::vec(
        (
            prop::collection::vec(any::<u8>(), 1..64),
            prop::option::of("[a-z]{1,6}(=[a-z0-9]{1,6})?"),
            any::<bool>(),
        ),
        0..8,
    );
    let trailers = prop::collection::vec((plain_name(), "[!-~]([ !-~]{0,10}[!-~])?"), 0..3);
    (chunks, trailers).prop_map(|(chunks, trailers)| {
        let mut wire = Vec::new();
        let mut data = Vec::new();
        for (c, ext, upper) in chunks {
            let size = if upper {
                format!("{:X}", c.len())
            } else {
                format!("{:x}", c.len())
            };
            wire.extend_from_slice(size.as_bytes());
            if let Some(e) = ext {
                wire.extend_from_slice(format!(";{e}").as_bytes());
            }
            wire.extend_from_slice(b"\r\n");
            wire.extend_from_slice(&c);
            wire.extend_from_slice(b"\r\n");
            data.extend_from_slice(&c);
        }
        wire.extend_from_slice(b"0\r\n");
        let mut t = Vec::new();
        for (n, v) in trailers {
            wire.extend_from_slice(format!("{n}: {v}\r\n").as_bytes());
            t.push((n.to_ascii_lowercase(), v.into_bytes()));
        }
        wire.extend_from_slice(b"\r\n");
        (wire, data, grouped(t))
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    /// Any bytes: the request parser parses, asks for more, or refuses — never panics, and
    /// a parsed head never claims more bytes than there are. What it parses `httparse`
    /// parses the same way.
    #[test]
    fn request_parser_total_on_any_bytes(bytes in http_ish_bytes(), max in 16usize..MAX_HEAD) {
        if let Ok(Some(h)) = parse_request(&bytes, max) {
            prop_assert!(h.len <= bytes.len() && h.len <= max);
            let mut hs = [httparse::EMPTY_HEADER; 128];
            let mut r = httparse::Request::new(&mut hs);
            prop_assert_eq!(r.parse(&bytes), Ok(httparse::Status::Complete(h.len)));
            prop_assert_eq!(r.method, Some(h.parts.method.as_str()));
        }
    }

    /// Any bytes: the response parser parses (taking exactly the head out of the buffer),
    /// asks for more (taking nothing), or refuses.
    #[test]
    fn response_parser_total_on_any_bytes(bytes in http_ish_bytes(), head: bool) {
        let mut buf = BytesMut::from(&bytes[..]);
        match parse_response(&mut buf, MAX_HEAD, head) {
            Ok(Some(_)) => {
                let mut hs = [httparse::EMPTY_HEADER; 128];
                let mut r = httparse::Response::new(&mut hs);
                let n = bytes.len() - buf.len();
                prop_assert_eq!(r.parse(&bytes), Ok(httparse::Status::Complete(n)));
            }
            Ok(None) | Err(_) => prop_assert_eq!(&buf[..], &bytes[..]),
        }
    }

    /// Any bytes in any reads: the chunked decoder ends the same way as with one read,
    /// with the same data, and never yields more data than it was given.
    #[test]
    fn chunked_decoder_total_and_split_invariant(
        bytes in http_ish_bytes(),
        idx in prop::collection::vec(any::<Index>(), 0..8),
    ) {
        let whole = decode_in_reads(&bytes, &[bytes.len()]);
        let split = decode_in_reads(&bytes, &cuts(&idx, bytes.len()));
        prop_assert!(whole.data.len() <= bytes.len());
        prop_assert_eq!(whole, split);
    }

    /// A valid chunked body (with whatever follows it) in any reads: the data and trailers
    /// come out as sent, and decoding stops exactly at the body's end.
    #[test]
    fn chunked_decoder_roundtrip_in_any_reads(
        (wire, data, trailers) in chunked_body(),
        tail in http_ish_bytes(),
        idx in prop::collection::vec(any::<Index>(), 0..8),
    ) {
        let mut input = wire.clone();
        input.extend_from_slice(&tail);
        let d = decode_in_reads(&input, &cuts(&idx, input.len()));
        prop_assert_eq!(d.end, End::Done);
        prop_assert_eq!(d.data, data);
        prop_assert_eq!(d.trailers.unwrap_or_default(), trailers);
        prop_assert_eq!(d.rest, tail);
    }

    /// A valid request: split at any byte boundaries it is incomplete until its head is
    /// all there, then parses to what it parses to in one piece; that agrees with
    /// `httparse` on method, target, version and headers.
    #[test]
    fn valid_requests_parse_the_same_in_any_reads_and_agree_with_httparse(
        req in valid_request(),
        idx in prop::collection::vec(any::<Index>(), 0..8),
    ) {
        let whole = parse_request(&req, MAX_HEAD).expect("valid").expect("complete");
        for at in cuts(&idx, req.len()) {
            match parse_request(&req[..at], MAX_HEAD) {
                Ok(None) => prop_assert!(at < whole.len, "incomplete at {} of {}", at, whole.len),
                Ok(Some(h)) => {
                    prop_assert!(at >= whole.len);
                    prop_assert_eq!(h.len, whole.len);
                    prop_assert_eq!(h.framing, whole.framing);
                    prop_assert_eq!(request_summary(&h), request_summary(&whole));
                }
                Err(e) => prop_assert!(false, "{:?} at {}", e, at),
            }
        }
        let mut hs = [httparse::EMPTY_HEADER; 128];
        let mut r = httparse::Request::new(&mut hs);
        prop_assert_eq!(r.parse(&req), Ok(httparse::Status::Complete(whole.len)));
        let (method, uri, version, headers) = request_summary(&whole);
        prop_assert_eq!(Some(method.as_str()), r.method);
        prop_assert_eq!(Some(uri.as_str()), r.path);
        let v = if version == http::Version::HTTP_10 { 0 } else { 1 };
        prop_assert_eq!(Some(v), r.version);
        prop_assert_eq!(headers, grouped(reference_headers(r.headers)));
    }

    /// A valid response head in any reads parses as in one piece and agrees with
    /// `httparse` on status, version and headers.
    #[test]
    fn valid_responses_parse_the_same_in_any_reads_and_agree_with_httparse(
        resp in valid_response(),
        body in prop::collection::vec(any::<u8>(), 0..16),
        idx in prop::collection::vec(any::<Index>(), 0..8),
    ) {
        let mut bytes = resp.clone();
        bytes.extend_from_slice(&body);
        let (whole, used) = response_in_reads(&bytes, &[bytes.len()], false)
            .expect("valid")
            .expect("complete");
        prop_assert_eq!(used, resp.len());
        let (split, used) = response_in_reads(&bytes, &cuts(&idx, bytes.len()), false)
            .expect("valid")
            .expect("complete");
        prop_assert_eq!(used, resp.len());
        prop_assert_eq!(split.framing, whole.framing);
        prop_assert_eq!(response_summary(&split), response_summary(&whole));
        let mut hs = [httparse::EMPTY_HEADER; 128];
        let mut r = httparse::Response::new(&mut hs);
        prop_assert_eq!(r.parse(&resp), Ok(httparse::Status::Complete(resp.len())));
        let (code, version, headers) = response_summary(&whole);
        prop_assert_eq!(Some(code), r.code);
        let v = if version == http::Version::HTTP_10 { 0 } else { 1 };
        prop_assert_eq!(Some(v), r.version);
        prop_assert_eq!(headers, grouped(reference_headers(r.headers)));
    }
}
