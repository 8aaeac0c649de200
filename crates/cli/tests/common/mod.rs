//! Shared by the CLI test binaries.
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};

/// A keep-alive HTTP/1.1 server on a thread per connection that answers every request with
/// `ok` (bodyless requests only: it answers at the end of each head).
pub fn ok_server() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            std::thread::spawn(move || serve(conn));
        }
    });
    addr
}

fn serve(conn: TcpStream) {
    let mut out = conn.try_clone().unwrap();
    let mut lines = BufReader::new(conn);
    let mut line = String::new();
    loop {
        line.clear();
        match lines.read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) if line == "\r\n" => {
                if out
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    .is_err()
                {
                    return;
                }
            }
            Ok(_) => {}
        }
    }
}
