//! The body read timeout: a request body that delivers nothing for `timeout` while the handler waits for it is
//! cut with an error (per read, so a slow upload that keeps moving is never cut; time the handler spends
//! elsewhere does not count). Without it a body shorter than its `Content-Length` holds a request forever.

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::{Instant, Sleep};

#[derive(Debug, thiserror::Error)]
#[error("the request body sent nothing for {0:?}: the connection is closed")]
pub struct BodyTimedOut(Duration);

pub struct ReadTimeoutBody<B> {
    inner: B,
    timeout: Duration,
    /// Armed while the handler waits for a frame.
    timer: Option<Pin<Box<Sleep>>>,
    waiting: bool,
}

impl<B> ReadTimeoutBody<B> {
    pub fn new(inner: B, timeout: Duration) -> ReadTimeoutBody<B> {
        ReadTimeoutBody {
            inner,
            timeout,
            timer: None,
            waiting: false,
        }
    }
}

impl<B> Body for ReadTimeoutBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<axum::BoxError>,
{
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.waiting = false;
                Poll::Ready(frame.map(|r| r.map_err(Into::into)))
            }
            Poll::Pending => {
                let deadline = Instant::now() + this.timeout;
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                if !this.waiting {
                    this.waiting = true;
                    timer.as_mut().reset(deadline);
                }
                if timer.as_mut().poll(cx).is_ready() {
                    this.waiting = false;
                    return Poll::Ready(Some(Err(BodyTimedOut(this.timeout).into())));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, StreamBody};

    #[tokio::test(start_paused = true)]
    async fn a_stalled_body_is_cut_and_a_moving_one_is_not() {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(1);
        let stream =
            futures_util::stream::unfold(
                rx,
                |mut rx| async move { rx.recv().await.map(|f| (f, rx)) },
            );
        let mut body =
            ReadTimeoutBody::new(StreamBody::new(Box::pin(stream)), Duration::from_secs(10));
        let sender = tokio::spawn(async move {
            for _ in 0..5 {
                tokio::time::sleep(Duration::from_secs(8)).await;
                tx.send(Ok(Frame::data(Bytes::from_static(b"x"))))
                    .await
                    .unwrap();
            }
            // Then stall, holding the channel open.
            tokio::time::sleep(Duration::from_secs(3600)).await;
            drop(tx);
        });
        for _ in 0..5 {
            let f = body.frame().await.unwrap().unwrap();
            assert_eq!(f.into_data().unwrap(), Bytes::from_static(b"x"));
            // Time the handler spends elsewhere does not count.
            tokio::time::sleep(Duration::from_secs(30)).await;
        }
        let err = body.frame().await.unwrap().unwrap_err();
        assert!(err.to_string().contains("sent nothing"), "{err}");
        sender.abort();
    }
}
