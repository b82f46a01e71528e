//! A blocking client of the management socket, as `joypath ctl` and tests use it.

use crate::protocol::{Request, Response};
use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;

pub struct Client {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    next_id: u64,
}

impl Client {
    pub fn connect(path: &Path) -> std::io::Result<Client> {
        let s = UnixStream::connect(path)?;
        Ok(Client {
            reader: BufReader::new(s.try_clone()?),
            writer: s,
            next_id: 1,
        })
    }

    /// Sends one request and waits for its response.
    pub fn call(&mut self, op: &str, args: Value) -> std::io::Result<Response> {
        let id = self.next_id;
        self.next_id += 1;
        let req = Request {
            id: Value::from(id),
            op: op.to_string(),
            args,
        };
        let mut line = serde_json::to_vec(&req)?;
        line.push(b'\n');
        if let Err(e) = self.writer.write_all(&line) {
            // The server may have answered and closed before reading (a refused peer): its answer
            // is still in our receive buffer.
            return self.read_response().map_err(|_| e);
        }
        self.read_response()
    }

    /// Sends raw bytes (tests use this for malformed requests).
    pub fn send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.writer.write_all(bytes)
    }

    pub fn read_response(&mut self) -> std::io::Result<Response> {
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the server closed the connection",
            ));
        }
        serde_json::from_str(&line)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
    }
}
