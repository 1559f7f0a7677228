//! Syslog over TLS: RFC 5424 messages in RFC 5425 octet-counting framing, one TLS connection kept open between
//! batches and made again after any error.
//!
//! Syslog has no acknowledgements, so "delivered" can only mean what TCP knows: a batch counts once every byte
//! of it has been acknowledged by the collector's TCP stack (the socket's send queue is empty) and the connection
//! is still up afterwards. Before writing, a non-blocking read looks for the peer's close (EOF, reset): a batch
//! written into a connection the collector already closed would otherwise vanish into the kernel's buffer and be
//! counted. What this cannot see is a collector that acknowledged bytes at the TCP level and died before
//! reading them; delivery is therefore at least once to the collector's TCP stack, and a batch that is retried
//! after a break may arrive twice (each message carries its `recordId` so the collector can drop duplicates).

use super::super::sink::{SinkError, SinkRecord};
use moat_model::monitor::partner::{octet_frame, syslog_message, SyslogOrigin, SyslogRecord};
use moat_outbound::Outbound;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long connecting, the handshake, one write, or the collector's acknowledgement of a batch may take.
const IO_TIMEOUT: Duration = Duration::from_secs(15);

/// What the messages say about this server.
#[derive(Clone, Debug)]
pub struct Origin {
    pub facility: u8,
    pub hostname: String,
    pub app_name: String,
    pub proc_id: u32,
}

type Tls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// What a non-blocking read says about the collector.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Peer {
    Up,
    /// Closed cleanly: it had read everything sent before.
    Closed,
    /// Reset (bytes it never read), or the socket failed.
    Reset,
}

pub struct SyslogSink {
    outbound: Outbound,
    tls: Arc<rustls::ClientConfig>,
    host: String,
    port: u16,
    origin: Origin,
    /// The open connection, reused by the next batch; `None` after an error.
    conn: Option<Tls>,
}

fn unavailable(message: String) -> SinkError {
    SinkError::Unavailable {
        message,
        delivered: 0,
    }
}

impl SyslogSink {
    pub fn new(
        outbound: Outbound,
        tls: Arc<rustls::ClientConfig>,
        host: String,
        port: u16,
        origin: Origin,
    ) -> Self {
        SyslogSink {
            outbound,
            tls,
            host,
            port,
            origin,
            conn: None,
        }
    }

    fn netloc(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    pub fn describe(&self) -> String {
        format!("syslog:{}", self.netloc())
    }

    /// A new TLS connection through the outbound connector: the name is resolved and every address checked by
    /// it, then dialled in turn.
    fn connect(&self) -> Result<Tls, SinkError> {
        let netloc = self.netloc();
        let addrs = self.outbound.resolve(&netloc).map_err(|e| match e {
            moat_outbound::ResolveError::Refused(r) => SinkError::Misconfigured(r.to_string()),
            other => unavailable(other.to_string()),
        })?;
        let mut last = format!("'{netloc}' resolves to no address");
        let mut sock = None;
        for a in addrs {
            match TcpStream::connect_timeout(&a, IO_TIMEOUT) {
                Ok(s) => {
                    sock = Some(s);
                    break;
                }
                Err(e) => last = format!("cannot connect to {netloc} ({a}): {e}"),
            }
        }
        let sock = sock.ok_or_else(|| unavailable(last))?;
        let io = |e: std::io::Error| unavailable(format!("{netloc}: {e}"));
        sock.set_read_timeout(Some(IO_TIMEOUT)).map_err(io)?;
        sock.set_write_timeout(Some(IO_TIMEOUT)).map_err(io)?;
        sock.set_nodelay(true).map_err(io)?;
        let name = rustls::pki_types::ServerName::try_from(self.host.clone()).map_err(|e| {
            SinkError::Misconfigured(format!("'{}' is not a TLS server name: {e}", self.host))
        })?;
        let conn = rustls::ClientConnection::new(self.tls.clone(), name)
            .map_err(|e| SinkError::Misconfigured(format!("TLS: {e}")))?;
        let mut tls = rustls::StreamOwned::new(conn, sock);
        while tls.conn.is_handshaking() {
            tls.conn.complete_io(&mut tls.sock).map_err(|e| {
                // A certificate the collector's CA did not sign is a setting to fix, not an outage.
                let text = format!("TLS handshake with {netloc} failed: {e}");
                match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
                    Some(rustls::Error::InvalidCertificate(_)) => SinkError::Misconfigured(text),
                    _ => unavailable(text),
                }
            })?;
        }
        Ok(tls)
    }

    /// Whether the peer is still there, by a non-blocking read: EOF (the collector's close_notify or FIN) says it
    /// closed after reading what it was sent; a reset says it closed with bytes unread (the kernel answers those
    /// with RST). Anything the collector sent is dropped (RFC 5425 collectors send nothing).
    fn peer(tls: &mut Tls) -> Peer {
        if tls.sock.set_nonblocking(true).is_err() {
            return Peer::Reset;
        }
        let mut buf = [0u8; 512];
        let state = loop {
            match tls.read(&mut buf) {
                Ok(0) => break Peer::Closed,
                Ok(_) => continue,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break Peer::Up,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == ErrorKind::UnexpectedEof => break Peer::Closed,
                Err(_) => break Peer::Reset,
            }
        };
        if tls.sock.set_nonblocking(false).is_err() {
            return Peer::Reset;
        }
        state
    }

    /// Waits until the collector's TCP stack has acknowledged every byte written (the send queue is empty).
    fn acknowledged(sock: &TcpStream) -> Result<(), String> {
        let deadline = Instant::now() + IO_TIMEOUT;
        loop {
            let mut queued: libc::c_int = 0;
            // SAFETY: TIOCOUTQ writes one int, the number of bytes not yet acknowledged, into `queued`.
            let rc = unsafe { libc::ioctl(sock.as_raw_fd(), libc::TIOCOUTQ, &mut queued) };
            if rc != 0 {
                return Err(format!(
                    "reading the send queue: {}",
                    std::io::Error::last_os_error()
                ));
            }
            if queued == 0 {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "{queued} bytes not acknowledged by the collector within {IO_TIMEOUT:?}"
                ));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// The open connection, made again if there is none or the collector closed it.
    fn connection(&mut self) -> Result<&mut Tls, SinkError> {
        let reuse = match self.conn.as_mut() {
            Some(c) => Self::peer(c) == Peer::Up,
            None => false,
        };
        if !reuse {
            self.conn = None;
            self.conn = Some(self.connect()?);
        }
        Ok(self.conn.as_mut().expect("connected above"))
    }

    pub fn probe(&mut self) -> Result<(), SinkError> {
        self.connection().map(|_| ())
    }

    pub fn deliver(&mut self, records: &[SinkRecord]) -> Result<(), SinkError> {
        if records.is_empty() {
            return Ok(());
        }
        let origin = SyslogOrigin {
            facility: self.origin.facility,
            hostname: &self.origin.hostname,
            app_name: &self.origin.app_name,
            proc_id: self.origin.proc_id,
        };
        let mut bytes = Vec::with_capacity(records.len() * 512);
        for r in records {
            bytes.extend(octet_frame(&syslog_message(
                &origin,
                &SyslogRecord {
                    record_id: &r.id,
                    category: &r.category,
                    time: &r.time,
                    json: &r.json,
                },
            )));
        }
        let netloc = self.netloc();
        let conn = self.connection()?;
        let sent = conn
            .write_all(&bytes)
            .and_then(|_| conn.flush())
            .map_err(|e| format!("writing to {netloc}: {e}"))
            .and_then(|_| Self::acknowledged(&conn.sock))
            .and_then(|_| match Self::peer(conn) {
                Peer::Up | Peer::Closed => Ok(()),
                Peer::Reset => Err(format!("{netloc} reset the connection during the batch")),
            });
        if let Err(message) = sent {
            // Nothing of the batch is counted: it is sent again, whole, on a new connection.
            self.conn = None;
            return Err(unavailable(message));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// A self-signed certificate for `localhost` and a TLS server config with it.
    fn server_tls() -> (Arc<rustls::ServerConfig>, String) {
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let cert_pem = ck.cert.pem();
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(ck.key_pair.serialize_der().into());
        let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![ck.cert.der().clone()], key)
        .unwrap();
        (Arc::new(cfg), cert_pem)
    }

    fn record(n: i64) -> SinkRecord {
        SinkRecord::new(
            format!("s/audit/{n}"),
            "ContainerRegistryLoginEvents".into(),
            "2026-12-07T18:53:06.000000Z".into(),
            serde_json::json!({"recordId": format!("s/audit/{n}")}),
        )
    }

    fn sink(port: u16, ca: &str) -> SyslogSink {
        let tls = super::super::tls_config(Some(ca), false, None).unwrap();
        SyslogSink::new(
            Outbound::new(Default::default(), Arc::new(Vec::new)),
            tls,
            "localhost".into(),
            port,
            Origin {
                facility: 16,
                hostname: "h".into(),
                app_name: "moat".into(),
                proc_id: 1,
            },
        )
    }

    /// Accepts `conns` connections one after the other, reads each until `per_conn` frames arrived, then closes it.
    fn collector(
        l: TcpListener,
        cfg: Arc<rustls::ServerConfig>,
        per_conn: Vec<usize>,
    ) -> std::thread::JoinHandle<Vec<String>> {
        std::thread::spawn(move || {
            let mut got = Vec::new();
            for want in per_conn {
                let (s, _) = l.accept().unwrap();
                let conn = rustls::ServerConnection::new(cfg.clone()).unwrap();
                let mut tls = rustls::StreamOwned::new(conn, s);
                let mut buf = Vec::new();
                let mut frames = 0;
                let mut chunk = [0u8; 4096];
                while frames < want {
                    let n = tls.read(&mut chunk).unwrap();
                    assert!(n > 0);
                    buf.extend_from_slice(&chunk[..n]);
                    // Split complete `LEN SP MSG` frames.
                    while let Some(sp) = buf.iter().position(|b| *b == b' ') {
                        let len: usize = std::str::from_utf8(&buf[..sp]).unwrap().parse().unwrap();
                        if buf.len() < sp + 1 + len {
                            break;
                        }
                        got.push(String::from_utf8(buf[sp + 1..sp + 1 + len].to_vec()).unwrap());
                        buf.drain(..sp + 1 + len);
                        frames += 1;
                    }
                }
                tls.conn.send_close_notify();
                let _ = tls.flush();
            }
            got
        })
    }

    #[test]
    fn batches_arrive_framed_and_a_closed_connection_is_made_again() {
        let (cfg, ca) = server_tls();
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let t = collector(l, cfg, vec![3, 2]);
        let mut s = sink(port, &ca);
        s.deliver(&[record(1), record(2), record(3)]).unwrap();
        // The collector closes after three frames: the next batch sees it and reconnects instead of writing
        // into the closed connection.
        std::thread::sleep(Duration::from_millis(200));
        s.deliver(&[record(4), record(5)]).unwrap();
        let got = t.join().unwrap();
        assert_eq!(got.len(), 5);
        for (i, m) in got.iter().enumerate() {
            assert!(
                m.starts_with("<134>1 2026-12-07T18:53:06.000000Z h moat 1 LoginEvent "),
                "{m}"
            );
            assert!(
                m.contains(&format!("recordId=\"s/audit/{}\"", i + 1)),
                "{m}"
            );
        }
    }

    #[test]
    fn an_unknown_ca_is_misconfigured_and_a_dead_port_unavailable() {
        let (cfg, _) = server_tls();
        let (_, other_ca) = server_tls();
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        std::thread::spawn(move || {
            let (s, _) = l.accept().unwrap();
            let conn = rustls::ServerConnection::new(cfg).unwrap();
            let mut tls = rustls::StreamOwned::new(conn, s);
            let _ = tls.read(&mut [0u8; 16]);
        });
        assert!(matches!(
            sink(port, &other_ca).probe(),
            Err(SinkError::Misconfigured(_))
        ));
        let dead = TcpListener::bind("127.0.0.1:0").unwrap();
        let dead_port = dead.local_addr().unwrap().port();
        drop(dead);
        assert!(matches!(
            sink(dead_port, &other_ca).deliver(&[record(1)]),
            Err(SinkError::Unavailable { delivered: 0, .. })
        ));
    }
}
