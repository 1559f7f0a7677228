//! The load generator of workloads 2 and 3: HTTP/1.1 written by hand over plain keep-alive TCP connections, as
//! light as wrk. Requests are pre-serialized (or written into a reused buffer) and sent with one `write`; responses
//! are read into a reused 64 KiB buffer and parsed minimally (status line, `Content-Length`, chunked
//! `Transfer-Encoding`, `Connection: close`, `Location`). Nothing is allocated per request, so on 2 cores the client
//! leaves the CPU to the server and the figures measure the server. Requests are not pipelined: one in flight per
//! connection, as with wrk.

use anyhow::{bail, Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const BUF: usize = 64 << 10;
/// How much of an unexpected response's body is quoted in the error.
const QUOTE: usize = 2048;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BodyLen {
    Length(u64),
    Chunked,
    UntilClose,
}

/// A parsed response head; the `Location` value, if any, is left in `Conn::location`.
#[derive(Clone, Copy, Debug)]
pub struct Head {
    pub status: u16,
    body: BodyLen,
    close: bool,
}

/// One keep-alive connection to a loopback address, reopened when the server closes it (`Connection: close`).
pub struct Conn {
    addr: std::net::SocketAddr,
    stream: Option<TcpStream>,
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    /// The `Location` of the last response head (empty if it had none).
    pub location: String,
    /// A reused buffer for requests built per call (`send_out`).
    pub out: Vec<u8>,
}

impl Conn {
    #[cfg(test)]
    pub async fn connect(port: u16) -> Result<Conn> {
        Conn::connect_to((std::net::Ipv4Addr::LOCALHOST, port).into()).await
    }

    pub async fn connect_to(addr: std::net::SocketAddr) -> Result<Conn> {
        let mut c = Conn {
            addr,
            stream: None,
            buf: vec![0u8; BUF].into_boxed_slice(),
            start: 0,
            end: 0,
            location: String::with_capacity(512),
            out: Vec::with_capacity(16 << 10),
        };
        c.open().await?;
        Ok(c)
    }

    async fn open(&mut self) -> Result<()> {
        let s = TcpStream::connect(self.addr)
            .await
            .with_context(|| format!("connecting to {}", self.addr))?;
        s.set_nodelay(true)?;
        self.stream = Some(s);
        self.start = 0;
        self.end = 0;
        Ok(())
    }

    /// Sends a complete request (head and body) with one write.
    pub async fn send(&mut self, req: &[u8]) -> Result<()> {
        if self.stream.is_none() {
            self.open().await?;
        }
        let s = self.stream.as_mut().expect("opened above");
        s.write_all(req).await.context("sending the request")
    }

    /// Sends `self.out` (see `send`).
    pub async fn send_out(&mut self) -> Result<()> {
        if self.stream.is_none() {
            self.open().await?;
        }
        let s = self.stream.as_mut().expect("opened above");
        s.write_all(&self.out).await.context("sending the request")
    }

    /// Reads more bytes into the buffer (moving the unread ones to its front if needed); 0 at end of stream.
    async fn fill(&mut self) -> Result<usize> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.end == self.buf.len() {
            if self.start == 0 {
                bail!("response line or head longer than {BUF} bytes");
            }
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        let s = self
            .stream
            .as_mut()
            .context("reading from a closed connection")?;
        let n = s
            .read(&mut self.buf[self.end..])
            .await
            .context("reading the response")?;
        self.end += n;
        Ok(n)
    }

    /// Reads and parses the next response head; the body is left to `body`.
    pub async fn read_head(&mut self) -> Result<Head> {
        let mut scanned: usize = 0;
        let head_end = loop {
            let from = self.start + scanned.saturating_sub(3);
            if let Some(p) = find(&self.buf[from..self.end], b"\r\n\r\n") {
                break from + p + 4;
            }
            scanned = self.end - self.start;
            if self.fill().await? == 0 {
                self.stream = None;
                bail!("the server closed the connection before a complete response head ({scanned} bytes)");
            }
        };
        let head = &self.buf[self.start..head_end - 4];
        let mut lines = head
            .split(|&b| b == b'\n')
            .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
        let status_line = lines.next().unwrap_or_default();
        let status = match status_line {
            [b'H', b'T', b'T', b'P', b'/', b'1', b'.', minor, b' ', a, b, c, ..]
                if a.is_ascii_digit() && b.is_ascii_digit() && c.is_ascii_digit() =>
            {
                let status = (a - b'0') as u16 * 100 + (b - b'0') as u16 * 10 + (c - b'0') as u16;
                (status, *minor == b'0')
            }
            _ => bail!(
                "not an HTTP/1.x status line: {:?}",
                String::from_utf8_lossy(status_line)
            ),
        };
        let (status, http10) = status;
        let mut close = http10;
        let mut length = None;
        let mut chunked = false;
        self.location.clear();
        for line in lines {
            let Some(colon) = line.iter().position(|&b| b == b':') else {
                continue;
            };
            let name = &line[..colon];
            let value = line[colon + 1..].trim_ascii();
            if name.eq_ignore_ascii_case(b"content-length") {
                let v = std::str::from_utf8(value)
                    .ok()
                    .and_then(|v| v.parse::<u64>().ok());
                length = Some(v.with_context(|| {
                    format!("bad Content-Length {:?}", String::from_utf8_lossy(value))
                })?);
            } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
                chunked = value.eq_ignore_ascii_case(b"chunked")
                    || value.to_ascii_lowercase().ends_with(b"chunked");
            } else if name.eq_ignore_ascii_case(b"connection") {
                let v = value.to_ascii_lowercase();
                if find(&v, b"close").is_some() {
                    close = true;
                } else if find(&v, b"keep-alive").is_some() {
                    close = false;
                }
            } else if name.eq_ignore_ascii_case(b"location") {
                self.location.push_str(&String::from_utf8_lossy(value));
            }
        }
        let body = if status / 100 == 1 || status == 204 || status == 304 {
            BodyLen::Length(0)
        } else if chunked {
            BodyLen::Chunked
        } else if let Some(n) = length {
            BodyLen::Length(n)
        } else {
            close = true;
            BodyLen::UntilClose
        };
        self.start = head_end;
        Ok(Head {
            status,
            body,
            close,
        })
    }

    /// Reads the body of `head` and discards it; returns its length.
    pub async fn skip_body(&mut self, head: &Head) -> Result<u64> {
        self.body(head, None).await
    }

    /// Reads the body of `head` for an error message: its start, lossily as text.
    pub async fn body_text(&mut self, head: &Head) -> String {
        let mut v = Vec::new();
        match self.body(head, Some(&mut v)).await {
            Ok(_) => String::from_utf8_lossy(&v).into_owned(),
            Err(e) => format!("{}<body unreadable: {e:#}>", String::from_utf8_lossy(&v)),
        }
    }

    async fn body(&mut self, head: &Head, mut quote: Option<&mut Vec<u8>>) -> Result<u64> {
        let n = match head.body {
            BodyLen::Length(n) => {
                self.discard(n, quote).await?;
                n
            }
            BodyLen::UntilClose => {
                let mut n = 0u64;
                loop {
                    let have = self.end - self.start;
                    if let Some(q) = quote.as_deref_mut() {
                        q.extend_from_slice(
                            &self.buf
                                [self.start..self.start + have.min(QUOTE.saturating_sub(q.len()))],
                        );
                    }
                    n += have as u64;
                    self.start = self.end;
                    if self.fill().await? == 0 {
                        break n;
                    }
                }
            }
            BodyLen::Chunked => {
                let mut n = 0u64;
                loop {
                    let line = self.line().await?;
                    let hex = &line[..line.iter().position(|&b| b == b';').unwrap_or(line.len())];
                    let size = std::str::from_utf8(hex.trim_ascii())
                        .ok()
                        .and_then(|h| u64::from_str_radix(h, 16).ok());
                    let size = size.with_context(|| {
                        format!("bad chunk size line {:?}", String::from_utf8_lossy(&line))
                    })?;
                    if size == 0 {
                        while !self.line().await?.is_empty() {} // trailers
                        break n;
                    }
                    self.discard(size, quote.as_deref_mut()).await?;
                    if !self.line().await?.is_empty() {
                        bail!("chunk of {size} bytes not followed by CRLF");
                    }
                    n += size;
                }
            }
        };
        if head.close {
            self.stream = None;
        }
        Ok(n)
    }

    /// Consumes `n` body bytes.
    async fn discard(&mut self, n: u64, mut quote: Option<&mut Vec<u8>>) -> Result<()> {
        let mut rem = n;
        loop {
            let have = ((self.end - self.start) as u64).min(rem) as usize;
            if let Some(q) = quote.as_deref_mut() {
                q.extend_from_slice(
                    &self.buf[self.start..self.start + have.min(QUOTE.saturating_sub(q.len()))],
                );
            }
            self.start += have;
            rem -= have as u64;
            if rem == 0 {
                return Ok(());
            }
            if self.fill().await? == 0 {
                self.stream = None;
                bail!(
                    "the server closed the connection after {} of {n} body bytes",
                    n - rem
                );
            }
        }
    }

    /// The next CRLF-terminated line (without the CRLF), consumed. Only for chunked framing: allocates.
    async fn line(&mut self) -> Result<Vec<u8>> {
        loop {
            if let Some(p) = find(&self.buf[self.start..self.end], b"\r\n") {
                let l = self.buf[self.start..self.start + p].to_vec();
                self.start += p + 2;
                return Ok(l);
            }
            if self.fill().await? == 0 {
                self.stream = None;
                bail!("the server closed the connection inside chunked framing");
            }
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The path (and query) of a `Location` on the same server: relative, or `http://<host>/…`.
pub fn same_host_path<'a>(location: &'a str, host: &str) -> Result<&'a str> {
    if location.starts_with('/') {
        return Ok(location);
    }
    match location
        .strip_prefix("http://")
        .and_then(|r| r.strip_prefix(host))
    {
        Some(p) if p.starts_with('/') => Ok(p),
        _ => bail!("Location {location:?} is not on {host}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server that answers each request (read up to its blank line) with the next canned response, then closes.
    async fn canned(responses: Vec<&'static [u8]>) -> u16 {
        let l = tokio::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0))
            .await
            .unwrap();
        let port = l.local_addr().unwrap().port();
        tokio::spawn(async move {
            let mut responses = responses.into_iter();
            'conns: loop {
                let (mut s, _) = l.accept().await.unwrap();
                let mut buf = Vec::new();
                loop {
                    let mut b = [0u8; 1024];
                    let n = s.read(&mut b).await.unwrap();
                    if n == 0 {
                        continue 'conns;
                    }
                    buf.extend_from_slice(&b[..n]);
                    while let Some(p) = find(&buf, b"\r\n\r\n") {
                        buf.drain(..p + 4);
                        let Some(r) = responses.next() else { return };
                        s.write_all(r).await.unwrap();
                        let lower = r.to_ascii_lowercase();
                        if find(&lower, b"close").is_some()
                            || find(&lower, b"length").is_none()
                                && find(&lower, b"chunked").is_none()
                        {
                            continue 'conns;
                        }
                    }
                }
            }
        });
        port
    }

    #[tokio::test]
    async fn framing() {
        let port = canned(vec![
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\ncontent-type: x\r\n\r\nhello",
            b"HTTP/1.1 202 Accepted\r\nlocation: /v2/a/blobs/uploads/1?x=y\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;ext\r\nabc\r\n2\r\nde\r\n0\r\nTrailer: 1\r\n\r\n",
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\nConnection: close\r\n\r\nnot found",
            b"HTTP/1.1 200 OK\r\n\r\nuntil close",
            b"HTTP/1.1 204 No Content\r\n\r\n",
        ])
        .await;
        let mut c = Conn::connect(port).await.unwrap();
        let req = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        c.send(req).await.unwrap();
        let h = c.read_head().await.unwrap();
        assert_eq!((h.status, c.skip_body(&h).await.unwrap()), (200, 5));
        c.send(req).await.unwrap();
        let h = c.read_head().await.unwrap();
        assert_eq!(
            (h.status, c.location.as_str()),
            (202, "/v2/a/blobs/uploads/1?x=y")
        );
        assert_eq!(c.skip_body(&h).await.unwrap(), 0);
        c.send(req).await.unwrap();
        let h = c.read_head().await.unwrap();
        assert_eq!((h.status, c.skip_body(&h).await.unwrap()), (200, 5));
        c.send(req).await.unwrap();
        let h = c.read_head().await.unwrap();
        assert_eq!(
            (h.status, c.body_text(&h).await.as_str()),
            (404, "not found")
        );
        c.send(req).await.unwrap(); // reconnects
        let h = c.read_head().await.unwrap();
        assert_eq!((h.status, c.skip_body(&h).await.unwrap()), (200, 11));
        c.send(req).await.unwrap(); // reconnects
        let h = c.read_head().await.unwrap();
        assert_eq!((h.status, c.skip_body(&h).await.unwrap()), (204, 0));
    }

    #[test]
    fn locations() {
        assert_eq!(
            same_host_path("/v2/x?a=b", "127.0.0.1:5").unwrap(),
            "/v2/x?a=b"
        );
        assert_eq!(
            same_host_path("http://127.0.0.1:5/v2/x", "127.0.0.1:5").unwrap(),
            "/v2/x"
        );
        assert!(same_host_path("http://127.0.0.1:55/v2/x", "127.0.0.1:5").is_err());
        assert!(same_host_path("https://elsewhere/v2/x", "127.0.0.1:5").is_err());
    }
}
