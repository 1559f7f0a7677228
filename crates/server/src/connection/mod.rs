//! One accepted connection, bounded: the connection caps, the TLS handshake timeout and the SNI check, hyper's
//! header read timeout, the body read timeout and the idle timeout. The accept loop ([`crate::listener`]) asks
//! this module for each; the values come from [`crate::limits::Limits`].

pub mod body;
pub mod caps;
pub mod idle;
pub mod sni;

use crate::limits::Limits;
use caps::{ConnCaps, ConnPermit};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;
use sni::SniCheck;
use std::net::IpAddr;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::server::TlsStream;
use tokio_rustls::{LazyConfigAcceptor, TlsAcceptor};

/// HTTP/2's `SETTINGS_MAX_HEADER_LIST_SIZE` (counted with 32 bytes per field): room for the edge's target and
/// header bounds with their per-field overhead.
const H2_MAX_HEADER_LIST: u32 =
    (crate::edge::MAX_HEADER_BYTES * 2 + crate::edge::MAX_TARGET_BYTES * 2) as u32;

pub struct Connections {
    pub limits: Limits,
    caps: Arc<ConnCaps>,
    /// With the local CA only: which SNI names get a minted certificate. `None` with the operator's certificate.
    sni: Option<SniCheck>,
}

impl Connections {
    pub fn new(limits: Limits, sni: Option<SniCheck>) -> Arc<Connections> {
        Arc::new(Connections {
            caps: ConnCaps::new(limits.max_connections, limits.max_connections_per_address),
            limits,
            sni,
        })
    }

    /// A place for a new connection from `peer`, or `None`: then the caller closes it at once.
    pub fn admit(&self, peer: IpAddr) -> Option<ConnPermit> {
        let permit = self.caps.admit(peer);
        if permit.is_none() {
            tracing::debug!("connection from {peer} refused: connection cap reached");
        }
        permit
    }

    /// The header read timeout (HTTP/1; it also bounds the wait for the next request on a kept-alive
    /// connection). HTTP/2 connections are bounded by the idle timeout at the socket. HTTP/2's header list
    /// limit (hyper's default is 16 KiB) is set above the edge's own bounds, so that an oversized request is
    /// answered by [`crate::edge`] with an error body rather than by the h2 layer with a bare 431.
    pub fn configure(&self, builder: &mut auto::Builder<TokioExecutor>) {
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(self.limits.header_read_timeout);
        builder.http2().max_header_list_size(H2_MAX_HEADER_LIST);
    }

    /// The TLS handshake, within the handshake timeout; with the local CA, the SNI name is checked against the
    /// registries first. `None` when the client fails or is too slow.
    pub async fn handshake<IO>(&self, acceptor: &TlsAcceptor, stream: IO) -> Option<TlsStream<IO>>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let handshake = async {
            match &self.sni {
                None => acceptor.accept(stream).await.ok(),
                Some(sni) => {
                    let start =
                        LazyConfigAcceptor::new(rustls::server::Acceptor::default(), stream)
                            .await
                            .ok()?;
                    if let Some(name) = start.client_hello().server_name() {
                        let name = name.to_string();
                        sni.check(&name).await;
                    }
                    start.into_stream(acceptor.config().clone()).await.ok()
                }
            }
        };
        tokio::time::timeout(self.limits.tls_handshake_timeout, handshake)
            .await
            .ok()
            .flatten()
    }
}
