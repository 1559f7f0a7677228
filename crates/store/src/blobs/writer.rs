//! Writing an upload: each byte hashed once on its way to the store, and large uploads made durable while they
//! stream rather than all at the end.

use super::midstate::{Midstate, UploadState};
use super::received::Hashed;
use bytes::Bytes;
use moat_model::Digest;
use std::fs::File;
use std::io::{self, Write};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

/// Where an upload's bytes go: a local file, or blocks staged in an object store.
pub(crate) trait Sink: Send {
    fn write(&mut self, chunk: &Bytes) -> io::Result<()>;
    /// Makes every byte written so far durable (before a 202 acknowledges them).
    fn sync(&mut self) -> io::Result<()>;
    /// Ends the writing, durably: the store's ids of the parts, in order, for an object store (empty for a file).
    /// `last` when the upload is complete (its parts then become one object); otherwise a chunk to acknowledge.
    fn finish(&mut self, last: bool) -> io::Result<Vec<String>>;
}

/// Appends to an upload, hashing each byte once on its way to the store. Large uploads hash on a second thread
/// while this one writes, so that a push runs at the lesser of the hash rate and the store's rate, not their sum.
pub struct UploadWriter {
    sink: Box<dyn Sink>,
    hashing: Hashing,
    size: u64,
}

enum Hashing {
    Inline(Midstate),
    Parallel {
        chunks: std::sync::mpsc::SyncSender<Bytes>,
        hasher: JoinHandle<Midstate>,
    },
    Taken,
}

/// Below this size, a thread costs more than it saves.
const PARALLEL_HASH_AFTER: u64 = 4 << 20;
/// Write-back is started every this many bytes.
const WRITEBACK_WINDOW: u64 = 8 << 20;
/// An upload gets a flusher once it is this large; the flusher syncs whenever this much is unflushed.
const FLUSH_EVERY: u64 = 32 << 20;
/// The writer waits while this much is written but not yet flushed: it bounds what the final fsync can find.
const FLUSH_BACKLOG: u64 = 256 << 20;

impl UploadWriter {
    pub(super) fn new(sink: Box<dyn Sink>, hasher: Midstate) -> UploadWriter {
        UploadWriter {
            sink,
            size: hasher.len(),
            hashing: Hashing::Inline(hasher),
        }
    }

    pub fn write(&mut self, chunk: Bytes) -> io::Result<()> {
        if self.size >= PARALLEL_HASH_AFTER {
            if let Hashing::Inline(_) = self.hashing {
                let Hashing::Inline(mut h) = std::mem::replace(&mut self.hashing, Hashing::Taken)
                else {
                    unreachable!()
                };
                let (tx, rx) = std::sync::mpsc::sync_channel::<Bytes>(16);
                let hasher = std::thread::spawn(move || {
                    for c in rx {
                        h.update(&c);
                    }
                    h
                });
                self.hashing = Hashing::Parallel { chunks: tx, hasher };
            }
        }
        match &mut self.hashing {
            Hashing::Inline(h) => h.update(&chunk),
            Hashing::Parallel { chunks, .. } => {
                chunks
                    .send(chunk.clone())
                    .map_err(|_| io::Error::other("hasher thread ended"))?;
            }
            Hashing::Taken => unreachable!("hasher is only taken while switching"),
        }
        self.sink.write(&chunk)?;
        self.size += chunk.len() as u64;
        Ok(())
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// Makes the bytes written so far durable.
    pub fn sync(&mut self) -> io::Result<()> {
        self.sink.sync()
    }

    /// Ends a chunk that a 202 will acknowledge: its bytes durable, and the state to continue with.
    pub fn finish_chunk(self) -> io::Result<Hashed> {
        self.end(false)
    }

    /// Ends a complete upload (its commit makes it durable under its digest): the digest of everything written.
    /// This and [`finish_chunk`](Self::finish_chunk) are the only ways to a [`Hashed`], which is what proves bytes
    /// arrived (see `received.rs`). A store failure while the upload streamed fails it here.
    pub fn finish(self) -> io::Result<Hashed> {
        self.end(true)
    }

    fn end(mut self, last: bool) -> io::Result<Hashed> {
        let parts = self.sink.finish(last)?;
        let hasher = match std::mem::replace(&mut self.hashing, Hashing::Taken) {
            Hashing::Inline(h) => h,
            Hashing::Parallel { chunks, hasher } => {
                drop(chunks);
                hasher
                    .join()
                    .map_err(|_| io::Error::other("hasher thread panicked"))?
            }
            Hashing::Taken => unreachable!("finish consumes the writer"),
        };
        let digest = Digest::from_sha256_bytes(&hasher.finalize());
        Ok(Hashed::new(
            digest,
            UploadState {
                hash: hasher,
                parts,
            },
        ))
    }
}

/// An upload in a local file. The disk's write-back is started as the bytes arrive, and a large upload is
/// flushed to stable storage by a second thread (`Flusher`), so that the fsync that acknowledges it finds little
/// left to do.
pub(crate) struct FileSink {
    file: File,
    size: u64,
    /// Write-back has been started for every byte before this offset.
    writeback_from: u64,
    /// The size the upload was opened at: bytes acknowledged earlier, already durable.
    durable: u64,
    flusher: Option<Flusher>,
}

impl FileSink {
    pub(crate) fn new(file: File, size: u64) -> FileSink {
        FileSink {
            file,
            size,
            writeback_from: size,
            durable: size,
            flusher: None,
        }
    }
}

impl Sink for FileSink {
    fn write(&mut self, chunk: &Bytes) -> io::Result<()> {
        self.file.write_all(chunk)?;
        self.size += chunk.len() as u64;
        if self.size - self.writeback_from >= WRITEBACK_WINDOW {
            self.start_writeback();
        }
        if self.flusher.is_none() && self.size - self.durable >= FLUSH_EVERY {
            let file = self.file.try_clone()?;
            self.flusher = Some(Flusher::start(move || file.sync_data(), self.durable));
        }
        if let Some(f) = &self.flusher {
            f.written(self.size)?;
        }
        Ok(())
    }

    fn sync(&mut self) -> io::Result<()> {
        self.file.sync_data()
    }

    /// A flush that failed while the upload streamed fails it here: the kernel reports a write-back error to one
    /// fsync only, and that one was the flusher's. The last chunk is made durable by the commit's fsync.
    fn finish(&mut self, last: bool) -> io::Result<Vec<String>> {
        if let Some(f) = self.flusher.take() {
            f.stop()?;
        }
        if !last {
            self.file.sync_data()?;
        }
        Ok(Vec::new())
    }
}

impl FileSink {
    #[cfg(target_os = "linux")]
    fn start_writeback(&mut self) {
        use std::os::fd::AsRawFd;
        let fd = self.file.as_raw_fd();
        let (start, len) = (
            self.writeback_from as i64,
            (self.size - self.writeback_from) as i64,
        );
        // SAFETY: sync_file_range only reads the descriptor and offsets; failures are harmless hints (the
        // flusher's and the commit's fsyncs are what count).
        unsafe {
            libc::sync_file_range(fd, start, len, libc::SYNC_FILE_RANGE_WRITE);
        }
        self.writeback_from = self.size;
    }

    #[cfg(not(target_os = "linux"))]
    fn start_writeback(&mut self) {}
}

/// Flushes a large upload to stable storage while it is still being written. A disk that takes writes into a
/// cache and pays for them at the flush (virtual disks do) otherwise makes the acknowledging fsync cost nearly as
/// much as the whole transfer again; flushed as it streams, that cost overlaps the receiving and hashing.
struct Flusher {
    shared: Arc<FlushShared>,
    thread: Option<JoinHandle<()>>,
}

struct FlushShared {
    progress: Mutex<FlushProgress>,
    changed: Condvar,
}

struct FlushProgress {
    written: u64,
    flushed: u64,
    stopping: bool,
    failed: Option<io::Error>,
}

impl Flusher {
    /// `sync` makes everything written so far durable (`fdatasync` of the upload); the first `durable` bytes
    /// already are.
    fn start(sync: impl FnMut() -> io::Result<()> + Send + 'static, durable: u64) -> Flusher {
        let shared = Arc::new(FlushShared {
            progress: Mutex::new(FlushProgress {
                written: durable,
                flushed: durable,
                stopping: false,
                failed: None,
            }),
            changed: Condvar::new(),
        });
        let s = shared.clone();
        let thread = std::thread::spawn(move || s.run(sync));
        Flusher {
            shared,
            thread: Some(thread),
        }
    }

    /// Records that `size` bytes are written; waits while too much of it is unflushed.
    fn written(&self, size: u64) -> io::Result<()> {
        let mut p = self.shared.lock();
        p.written = size;
        self.shared.changed.notify_all();
        while p.failed.is_none() && p.written - p.flushed > FLUSH_BACKLOG {
            p = self
                .shared
                .changed
                .wait(p)
                .unwrap_or_else(|e| e.into_inner());
        }
        match &p.failed {
            Some(e) => Err(io::Error::new(e.kind(), e.to_string())),
            None => Ok(()),
        }
    }

    /// Ends the thread after its current flush; the error of any flush that failed.
    fn stop(mut self) -> io::Result<()> {
        self.shared.lock().stopping = true;
        self.shared.changed.notify_all();
        if let Some(t) = self.thread.take() {
            t.join()
                .map_err(|_| io::Error::other("flusher thread panicked"))?;
        }
        match self.shared.lock().failed.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

impl Drop for Flusher {
    fn drop(&mut self) {
        // An upload abandoned mid-stream: let the thread end by itself, nobody waits for its flushes.
        self.shared.lock().stopping = true;
        self.shared.changed.notify_all();
    }
}

impl FlushShared {
    fn lock(&self) -> std::sync::MutexGuard<'_, FlushProgress> {
        self.progress.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn run(&self, mut sync: impl FnMut() -> io::Result<()>) {
        loop {
            let target = {
                let mut p = self.lock();
                while !p.stopping && p.written - p.flushed < FLUSH_EVERY {
                    p = self.changed.wait(p).unwrap_or_else(|e| e.into_inner());
                }
                if p.stopping {
                    return;
                }
                p.written
            };
            let result = sync();
            let mut p = self.lock();
            match result {
                Ok(()) => p.flushed = target,
                Err(e) => {
                    p.failed = Some(e);
                    self.changed.notify_all();
                    return;
                }
            }
            self.changed.notify_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    #[test]
    fn flusher_keeps_the_unflushed_backlog_bounded() {
        let flushes = Arc::new(AtomicU64::new(0));
        let f = {
            let flushes = flushes.clone();
            Flusher::start(
                move || {
                    std::thread::sleep(std::time::Duration::from_millis(2));
                    flushes.fetch_add(1, Ordering::Relaxed);
                    Ok(())
                },
                0,
            )
        };
        for step in 1..=(4 * FLUSH_BACKLOG / WRITEBACK_WINDOW) {
            f.written(step * WRITEBACK_WINDOW).unwrap();
            let p = f.shared.lock();
            assert!(p.written - p.flushed <= FLUSH_BACKLOG);
        }
        f.stop().unwrap();
        assert!(flushes.load(Ordering::Relaxed) >= 3);
    }

    #[test]
    fn a_failed_flush_fails_the_upload() {
        let f = Flusher::start(|| Err(io::Error::other("EIO from the disk")), 0);
        // The writer learns of the failure at the latest when the backlog would make it wait.
        let mut size = 0;
        let err = loop {
            size += WRITEBACK_WINDOW;
            if let Err(e) = f.written(size) {
                break e;
            }
            assert!(
                size <= 2 * FLUSH_BACKLOG,
                "the failure never reached the writer"
            );
        };
        assert!(err.to_string().contains("EIO"));
        assert!(f.stop().unwrap_err().to_string().contains("EIO"));
    }
}
