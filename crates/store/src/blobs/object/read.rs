//! Reading objects: a GET whose body a task on the store's runtime forwards to a blocking reader, and error texts
//! fit to show.

use super::{data_path, ObjectBlobStore, Path};
use bytes::Bytes;
use futures_util::StreamExt;
use object_store::{GetOptions, ObjectStore};
use std::io::{self, Read};

impl ObjectBlobStore {
    /// A reader over a whole upload object (for hashing it by another algorithm).
    pub(super) fn read_upload(&self, id: &str) -> io::Result<Box<dyn Read + Send>> {
        Ok(Box::new(self.stream(data_path(id), GetOptions::default())?))
    }

    /// A GET whose body a task on the store's runtime forwards to a blocking reader; returns once the store
    /// has answered.
    pub(super) fn stream(&self, path: Path, opts: GetOptions) -> io::Result<StreamReader> {
        let (tx, rx) = tokio::sync::mpsc::channel::<io::Result<Bytes>>(8);
        let (ready_tx, ready) = std::sync::mpsc::sync_channel::<io::Result<()>>(1);
        let i = self.inner.clone();
        self.inner.rt.spawn(async move {
            let mut stream = match i.store.get_opts(&path, opts).await {
                Ok(r) => {
                    let _ = ready_tx.send(Ok(()));
                    r.into_stream()
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(i.err(e)));
                    return;
                }
            };
            while let Some(chunk) = stream.next().await {
                let item = chunk.map_err(|e| i.err(e));
                let failed = item.is_err();
                if tx.send(item).await.is_err() || failed {
                    return;
                }
            }
        });
        ready
            .recv()
            .map_err(|_| io::Error::other("the read ended without an answer"))??;
        Ok(StreamReader {
            rx,
            current: Bytes::new(),
        })
    }
}

/// An error text without credentials: object_store's messages carry the request URL, whose query holds the
/// signature when the store is reached with a SAS token (secrets are not data, and not log lines either).
pub(super) fn redact(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("sig=") {
        let before = rest[..i].chars().last();
        out.push_str(&rest[..i + 4]);
        rest = &rest[i + 4..];
        // Only a query parameter named exactly `sig` (not `xsig=`).
        if matches!(before, None | Some('?') | Some('&')) {
            let end = rest
                .find(|c: char| c == '&' || c == '"' || c.is_whitespace())
                .unwrap_or(rest.len());
            out.push_str("REDACTED");
            rest = &rest[end..];
        }
    }
    out.push_str(rest);
    out
}

/// A blocking reader over a response body that a task on the store's runtime forwards.
pub(super) struct StreamReader {
    rx: tokio::sync::mpsc::Receiver<io::Result<Bytes>>,
    current: Bytes,
}

impl Read for StreamReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(chunk) => self.current = chunk?,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn signatures_never_reach_a_message() {
        let msg =
            "Error performing PUT http://h/c/data/x?comp=block&sig=abc%2Bdef%3D&se=2099 in 3ms";
        let r = redact(msg);
        assert!(!r.contains("abc"), "{r}");
        assert!(r.contains("sig=REDACTED&se=2099"), "{r}");
        assert_eq!(redact("?sig=s3cr3t"), "?sig=REDACTED");
        assert_eq!(redact("xsig=kept"), "xsig=kept");
        assert_eq!(redact("no query here"), "no query here");
    }
}
