//! A peer that lies about the size of its answers, on loopback: for tests that a reader stops
//! at its cap instead of buffering whatever a node or a device sends. Plain threads and
//! `std::net`, so any test (async or not) can use it; it counts what it managed to send on each
//! connection, which is what the reader was made to take in (plus socket buffers).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How the peer answers every request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lie {
    /// `200`, no length, bytes until the reader hangs up.
    Endless,
    /// `200` declaring this `Content-Length`, then bytes until the reader hangs up.
    Declares(u64),
}

/// What each connection sent before the reader hung up (or so far).
#[derive(Debug, Default)]
struct Tally {
    per_connection: Vec<u64>,
    /// Each connection's request line (`GET /path HTTP/1.1`), once read.
    requests: Vec<String>,
    open: usize,
}

/// A running liar; its threads end when readers hang up.
#[derive(Debug)]
pub struct Liar {
    pub addr: SocketAddr,
    tally: Arc<Mutex<Tally>>,
}

impl Liar {
    pub fn start(lie: Lie) -> Liar {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        let tally = Arc::new(Mutex::new(Tally::default()));
        let t = tally.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let t = t.clone();
                let index = {
                    let mut tally = t.lock().unwrap();
                    tally.per_connection.push(0);
                    tally.requests.push(String::new());
                    tally.open += 1;
                    tally.per_connection.len() - 1
                };
                std::thread::spawn(move || {
                    serve(stream, lie, &t, index);
                    t.lock().unwrap().open -= 1;
                });
            }
        });
        Liar { addr, tally }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Bytes sent on each connection so far.
    pub fn sent(&self) -> Vec<u64> {
        self.tally.lock().unwrap().per_connection.clone()
    }

    /// Bytes sent on each connection whose request line contains `path`.
    pub fn sent_for(&self, path: &str) -> Vec<u64> {
        let tally = self.tally.lock().unwrap();
        tally
            .requests
            .iter()
            .zip(&tally.per_connection)
            .filter(|(line, _)| line.contains(path))
            .map(|(_, sent)| *sent)
            .collect()
    }

    /// Waits until every connection has been hung up by its reader, at least `n` of them made;
    /// false if some reader still takes bytes after `timeout`.
    pub fn wait_hung_up(&self, n: usize, timeout: Duration) -> bool {
        let until = Instant::now() + timeout;
        while Instant::now() < until {
            {
                let tally = self.tally.lock().unwrap();
                if tally.per_connection.len() >= n && tally.open == 0 {
                    return true;
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }
}

fn serve(mut stream: TcpStream, lie: Lie, tally: &Mutex<Tally>, index: usize) {
    // Read the request head (its body, if any, is left unread: the answer does not wait).
    let mut head = Vec::new();
    let mut byte = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&byte[..n]),
        }
        if head.len() > 64 * 1024 {
            return;
        }
    }
    let line = String::from_utf8_lossy(&head);
    tally.lock().unwrap().requests[index] = line.lines().next().unwrap_or("").to_owned();
    let header = match lie {
        Lie::Endless => {
            "HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\nconnection: close\r\n\r\n"
                .to_owned()
        }
        Lie::Declares(n) => format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\ncontent-length: {n}\r\n\r\n"
        ),
    };
    if stream.write_all(header.as_bytes()).is_err() {
        return;
    }
    // JSON-looking filler, so a reader that parses as it goes is not stopped by a syntax error.
    let chunk = [b' '; 64 * 1024];
    loop {
        if stream.write_all(&chunk).is_err() {
            return;
        }
        tally.lock().unwrap().per_connection[index] += chunk.len() as u64;
    }
}
