//! The native HTTP/1.1 engine, pingora/nginx style: both sides of an HTTP/1 exchange run
//! inline in the client connection's task.
//!
//! - [`codec`]: head parsing (`httparse`), framing and smuggling rules, chunked decoding,
//!   writers.
//! - [`server`]: the client connection loop (keep-alive, pipelining, `Expect`, upgrades,
//!   timeouts, buffers released while idle).
//! - [`client`]: the backend connection pool and exchange, also used by hyper's HTTP/2
//!   server for HTTP/1 backends.
pub(crate) mod client;
pub(crate) mod codec;
#[cfg(test)]
mod proptests;
pub(crate) mod server;
