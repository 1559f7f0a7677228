//! An upload's bytes as staged blocks. Bytes are gathered into blocks of [`BLOCK`](super::BLOCK) and each is
//! sent (Put Block) while the next one fills, at most [`IN_FLIGHT`](super::IN_FLIGHT) at once, so an upload's
//! memory is bounded whatever its size. A staged block is durable once Put Block answers, so a chunk is
//! acknowledged when all its blocks are in; their ids go into the upload's row, and the next chunk, on any node,
//! stages after them. Only the last chunk commits the list (Put Block List): object_store names every block of a
//! list as `Uncommitted`, so a list committed earlier could not be extended, and blocks never listed (a chunk that
//! was not acknowledged) are discarded by that commit.

use super::{Inner, BLOCK, IN_FLIGHT};
use crate::blobs::writer::Sink;
use bytes::Bytes;
use object_store::multipart::PartId;
use object_store::path::Path;
use object_store::PutPayload;
use std::collections::VecDeque;
use std::io;
use std::sync::mpsc::Receiver;
use std::sync::Arc;

pub(super) struct BlockSink {
    inner: Arc<Inner>,
    path: Path,
    /// Ids of the blocks staged and finished, in order.
    parts: Vec<String>,
    /// Blocks being sent, oldest first (their order is their place in the blob).
    in_flight: VecDeque<Receiver<io::Result<PartId>>>,
    /// The block being gathered.
    buf: Vec<Bytes>,
    buf_len: usize,
}

impl BlockSink {
    pub(super) fn new(inner: Arc<Inner>, path: Path, parts: Vec<String>) -> BlockSink {
        BlockSink {
            inner,
            path,
            parts,
            in_flight: VecDeque::new(),
            buf: Vec::new(),
            buf_len: 0,
        }
    }

    /// Sends the gathered bytes as one block, waiting first while too many are in flight.
    fn stage(&mut self) -> io::Result<()> {
        if self.buf_len == 0 {
            return Ok(());
        }
        while self.in_flight.len() >= IN_FLIGHT {
            self.wait_oldest()?;
        }
        let payload: PutPayload = std::mem::take(&mut self.buf).into_iter().collect();
        self.buf_len = 0;
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let (i, path) = (self.inner.clone(), self.path.clone());
        let idx = self.parts.len() + self.in_flight.len();
        self.inner.rt.spawn(async move {
            let r = i
                .parts
                .put_part(&path, &String::new(), idx, payload)
                .await
                .map_err(|e| i.err(e));
            let _ = tx.send(r);
        });
        self.in_flight.push_back(rx);
        Ok(())
    }

    fn wait_oldest(&mut self) -> io::Result<()> {
        if let Some(rx) = self.in_flight.pop_front() {
            let part = rx
                .recv()
                .map_err(|_| io::Error::other("a block upload ended without an answer"))??;
            self.parts.push(part.content_id);
        }
        Ok(())
    }

    /// Every byte written is in a staged block, and every block is in.
    fn drain(&mut self) -> io::Result<()> {
        self.stage()?;
        while !self.in_flight.is_empty() {
            self.wait_oldest()?;
        }
        Ok(())
    }

    /// The blocks become the object's content.
    fn commit_list(&mut self) -> io::Result<()> {
        let parts: Vec<PartId> = self
            .parts
            .iter()
            .map(|c| PartId {
                content_id: c.clone(),
            })
            .collect();
        let (i, path) = (self.inner.clone(), self.path.clone());
        self.inner.run(async move {
            i.parts
                .complete_multipart(&path, &String::new(), parts)
                .await
                .map(|_| ())
                .map_err(|e| i.err(e))
        })
    }
}

impl Sink for BlockSink {
    fn write(&mut self, chunk: &Bytes) -> io::Result<()> {
        let mut chunk = chunk.clone();
        while !chunk.is_empty() {
            let take = (BLOCK - self.buf_len).min(chunk.len());
            self.buf.push(chunk.split_to(take));
            self.buf_len += take;
            if self.buf_len == BLOCK {
                self.stage()?;
            }
        }
        Ok(())
    }

    fn sync(&mut self) -> io::Result<()> {
        self.drain()
    }

    fn finish(&mut self, last: bool) -> io::Result<Vec<String>> {
        self.drain()?;
        if last {
            self.commit_list()?;
        }
        Ok(self.parts.clone())
    }
}
