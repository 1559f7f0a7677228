//! The idle timeout, at the socket: a connection with no request in flight and no byte moving either way for
//! `idle` is failed from below, which ends it for HTTP/1, HTTP/2 and TLS alike (hyper has no idle timeout of its
//! own for HTTP/2, and a client that stops reading a response leaves hyper waiting to write forever).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// Requests of one connection being handled; the idle timer does not run while any is.
#[derive(Clone, Default)]
pub struct InFlight(Arc<AtomicUsize>);

/// Counts one request for as long as it lives.
pub struct InFlightGuard(Arc<AtomicUsize>);

impl InFlight {
    pub fn enter(&self) -> InFlightGuard {
        self.0.fetch_add(1, Ordering::SeqCst);
        InFlightGuard(self.0.clone())
    }

    fn busy(&self) -> bool {
        self.0.load(Ordering::SeqCst) > 0
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

pub struct IdleIo<T> {
    inner: T,
    idle: Duration,
    last: Instant,
    in_flight: InFlight,
    timer: Pin<Box<Sleep>>,
}

impl<T> IdleIo<T> {
    pub fn new(inner: T, idle: Duration, in_flight: InFlight) -> IdleIo<T> {
        let now = Instant::now();
        IdleIo {
            inner,
            idle,
            last: now,
            in_flight,
            timer: Box::pin(tokio::time::sleep_until(now + idle)),
        }
    }

    /// Whether the connection has been idle for too long. Registers the timer's wake-up otherwise; the timer is
    /// moved lazily (on firing) rather than on every byte.
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        loop {
            if self.timer.as_mut().poll(cx).is_pending() {
                return false;
            }
            if self.in_flight.busy() {
                self.last = Instant::now();
            }
            let deadline = self.last + self.idle;
            if Instant::now() >= deadline {
                return true;
            }
            self.timer.as_mut().reset(deadline);
        }
    }

    fn timed_out() -> io::Error {
        io::Error::new(io::ErrorKind::TimedOut, "connection idle too long")
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for IdleIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(r) => {
                if buf.filled().len() > before {
                    this.last = Instant::now();
                }
                Poll::Ready(r)
            }
            Poll::Pending if this.expired(cx) => Poll::Ready(Err(Self::timed_out())),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for IdleIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_write(cx, data) {
            Poll::Ready(Ok(n)) => {
                if n > 0 {
                    this.last = Instant::now();
                }
                Poll::Ready(Ok(n))
            }
            Poll::Pending if this.expired(cx) => Poll::Ready(Err(Self::timed_out())),
            other => other,
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_write_vectored(cx, bufs) {
            Poll::Ready(Ok(n)) => {
                if n > 0 {
                    this.last = Instant::now();
                }
                Poll::Ready(Ok(n))
            }
            Poll::Pending if this.expired(cx) => Poll::Ready(Err(Self::timed_out())),
            other => other,
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test(start_paused = true)]
    async fn an_idle_connection_fails_and_a_busy_one_does_not() {
        let (a, mut b) = tokio::io::duplex(64);
        let in_flight = InFlight::default();
        let mut io = IdleIo::new(a, Duration::from_secs(10), in_flight.clone());
        // Bytes keep it alive.
        for _ in 0..5 {
            tokio::time::advance(Duration::from_secs(6)).await;
            b.write_all(b"x").await.unwrap();
            let mut buf = [0u8; 1];
            io.read_exact(&mut buf).await.unwrap();
        }
        // A request in flight keeps it alive without bytes.
        let guard = in_flight.enter();
        let mut buf = [0u8; 1];
        let r = tokio::time::timeout(Duration::from_secs(30), io.read(&mut buf)).await;
        assert!(
            r.is_err(),
            "still waiting after 30 s with a request in flight"
        );
        drop(guard);
        let err = io.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    }
}
