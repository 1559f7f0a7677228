//! Writing one archive as staged blocks (see `azure_blob`): a few workers upload blocks while the caller streams
//! the next; the MD5 state after each block is kept so a checkpoint can name the exact state to resume from.

use super::blob_http::{Client, Req};
use super::md5::Md5;
use super::{xml, ArchiveWriter, StorageError, StorageOptions, CATEGORY_KEY, CATEGORY_VALUE};
use serde_json::{json, Value};
use std::io::{self, Write};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A partial block is staged at a checkpoint only this long after the last one: checkpoints after every small
/// blob would otherwise stage thousands of tiny blocks (Azure allows 50,000 per blob).
const PARTIAL_EVERY: Duration = Duration::from_secs(5);

/// What a checkpoint records.
pub(crate) struct WriterState {
    /// Staged blocks in archive order.
    pub blocks: Vec<(String, u64)>,
    pub md5: Md5,
}

impl WriterState {
    fn to_json(&self) -> Value {
        json!({"v": 1, "blocks": self.blocks, "md5": self.md5.to_json()})
    }

    pub fn from_json(v: &Value) -> Option<WriterState> {
        if v.get("v")?.as_u64()? != 1 {
            return None;
        }
        let blocks: Vec<(String, u64)> = serde_json::from_value(v.get("blocks")?.clone()).ok()?;
        let md5 = Md5::from_json(v.get("md5")?)?;
        (blocks.iter().map(|b| b.1).sum::<u64>() == md5.len())
            .then_some(WriterState { blocks, md5 })
    }
}

struct Job {
    index: usize,
    id: String,
    data: Vec<u8>,
}

struct Done {
    index: usize,
    result: Result<(), StorageError>,
    data: Vec<u8>,
}

pub struct AzureWriter {
    client: Arc<Client>,
    name: String,
    /// Makes this session's block ids differ from an interrupted session's: a block staged after the last
    /// checkpoint by a dead process is never mistaken for ours.
    nonce: String,
    block_size: usize,
    parallel: usize,
    /// Every block staged or being staged, in order, and whether Azure has confirmed it.
    blocks: Vec<(String, u64)>,
    confirmed: Vec<bool>,
    /// MD5 state after each block (index i: after blocks[..=i]), for the checkpoints.
    md5_after: Vec<Md5>,
    md5: Md5,
    buf: Vec<u8>,
    spare: Vec<Vec<u8>>,
    in_flight: usize,
    jobs: Option<Sender<Job>>,
    done: Receiver<Done>,
    workers: Vec<std::thread::JoinHandle<()>>,
    /// The first failure of a worker: every later call reports it.
    failed: Option<String>,
    durable_at_start: u64,
    last_partial: Instant,
}

impl AzureWriter {
    pub(crate) fn start(
        client: Arc<Client>,
        name: String,
        resumed: Option<WriterState>,
        options: &StorageOptions,
    ) -> AzureWriter {
        let (jobs_tx, jobs_rx) = channel::<Job>();
        let (done_tx, done_rx) = channel::<Done>();
        let jobs_rx = Arc::new(Mutex::new(jobs_rx));
        let workers = (0..options.parallel)
            .map(|_| {
                let (client, name, jobs, done) = (
                    client.clone(),
                    name.clone(),
                    jobs_rx.clone(),
                    done_tx.clone(),
                );
                std::thread::spawn(move || loop {
                    let job = match jobs.lock().map(|r| r.recv()) {
                        Ok(Ok(j)) => j,
                        _ => return,
                    };
                    let result = client
                        .send_retrying(
                            || {
                                Req::new("PUT", Some(&name))
                                    .q("comp", "block")
                                    .q("blockid", job.id.clone())
                            },
                            &job.data,
                        )
                        .map(|_| ());
                    if done
                        .send(Done {
                            index: job.index,
                            result,
                            data: job.data,
                        })
                        .is_err()
                    {
                        return;
                    }
                })
            })
            .collect();
        let (blocks, md5) = match resumed {
            Some(s) => (s.blocks, s.md5),
            None => (vec![], Md5::new()),
        };
        let durable_at_start = md5.len();
        let n = blocks.len();
        AzureWriter {
            client,
            name,
            nonce: format!("{:08x}", rand_u32()),
            block_size: options.block_size,
            parallel: options.parallel,
            confirmed: vec![true; n],
            md5_after: vec![md5.clone(); n],
            blocks,
            md5,
            buf: Vec::new(),
            spare: Vec::new(),
            in_flight: 0,
            jobs: Some(jobs_tx),
            done: done_rx,
            workers,
            failed: None,
            durable_at_start,
            last_partial: Instant::now(),
        }
    }

    /// Block ids are base64 of a fixed-length text (Azure wants every id of a blob the same length).
    fn block_id(&self, index: usize) -> String {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(format!("moat-{}-{index:010}", self.nonce))
    }

    fn error(&self) -> StorageError {
        StorageError::Unreachable {
            uri: self.client.url(Some(&self.name)),
            why: self.failed.clone().unwrap_or_default(),
        }
    }

    fn take_done(&mut self, d: Done) -> Result<(), StorageError> {
        self.in_flight -= 1;
        let mut data = d.data;
        data.clear();
        self.spare.push(data);
        match d.result {
            Ok(()) => {
                self.confirmed[d.index] = true;
                Ok(())
            }
            Err(e) => {
                if self.failed.is_none() {
                    self.failed = Some(e.to_string());
                }
                Err(e)
            }
        }
    }

    fn wait_one(&mut self) -> Result<(), StorageError> {
        match self.done.recv() {
            Ok(d) => self.take_done(d),
            Err(_) => Err(StorageError::Invalid("the upload workers stopped".into())),
        }
    }

    fn wait_all(&mut self) -> Result<(), StorageError> {
        while self.in_flight > 0 {
            self.wait_one()?;
        }
        match self.failed {
            Some(_) => Err(self.error()),
            None => Ok(()),
        }
    }

    /// Hands the buffered bytes to a worker as the next block.
    fn stage(&mut self) -> Result<(), StorageError> {
        if self.failed.is_some() {
            return Err(self.error());
        }
        while self.in_flight >= self.parallel {
            self.wait_one()?;
        }
        let index = self.blocks.len();
        let id = self.block_id(index);
        let fresh = self.spare.pop().unwrap_or_default();
        let data = std::mem::replace(&mut self.buf, fresh);
        self.md5.update(&data);
        self.blocks.push((id.clone(), data.len() as u64));
        self.confirmed.push(false);
        self.md5_after.push(self.md5.clone());
        self.in_flight += 1;
        self.jobs
            .as_ref()
            .expect("workers run until commit or abort")
            .send(Job { index, id, data })
            .map_err(|_| StorageError::Invalid("the upload workers stopped".into()))
    }

    /// Closes the job queue: idle workers exit at once. They are not joined: after an abort (a cancelled or
    /// handed-over run) a worker may still be inside a Put Block with its retries, and the caller need not wait
    /// for a block nobody will commit.
    fn stop_workers(&mut self) {
        self.jobs = None;
        self.workers.clear();
    }
}

fn rand_u32() -> u32 {
    let mut b = [0u8; 4];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b);
    u32::from_le_bytes(b)
}

impl Write for AzureWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.buf.capacity() < self.block_size {
            self.buf.reserve_exact(self.block_size - self.buf.len());
        }
        let take = (self.block_size - self.buf.len()).min(data.len());
        self.buf.extend_from_slice(&data[..take]);
        if self.buf.len() == self.block_size {
            self.stage().map_err(StorageError::into_io)?;
        }
        Ok(take)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl ArchiveWriter for AzureWriter {
    fn durable_len(&self) -> u64 {
        let confirmed = self.confirmed.iter().take_while(|c| **c).count();
        match confirmed {
            0 => 0,
            n => self.md5_after[n - 1].len(),
        }
        .max(self.durable_at_start)
    }

    fn checkpoint(&mut self) -> Result<Value, StorageError> {
        if !self.buf.is_empty() && self.last_partial.elapsed() >= PARTIAL_EVERY {
            self.stage()?;
            self.last_partial = Instant::now();
        }
        self.wait_all()?;
        Ok(WriterState {
            blocks: self.blocks.clone(),
            md5: self.md5_after.last().cloned().unwrap_or_default(),
        }
        .to_json())
    }

    fn commit(mut self: Box<Self>) -> Result<(), StorageError> {
        if !self.buf.is_empty() {
            self.stage()?;
        }
        self.wait_all()?;
        self.stop_workers();
        let md5 = std::mem::take(&mut self.md5).finish_base64();
        let mut body = String::from("<?xml version=\"1.0\" encoding=\"utf-8\"?><BlockList>");
        for (id, _) in &self.blocks {
            body.push_str("<Latest>");
            body.push_str(&xml::escape(id));
            body.push_str("</Latest>");
        }
        body.push_str("</BlockList>");
        let name = self.name.clone();
        self.client.send_retrying(
            || {
                Req::new("PUT", Some(&name))
                    .q("comp", "blocklist")
                    .h("Content-Type", "application/xml")
                    .h("x-ms-blob-content-md5", md5.clone())
                    .h("x-ms-blob-content-type", "application/x-tar")
                    .h(
                        // Header names are case-insensitive; Azure keeps metadata names as sent.
                        "x-ms-meta-category",
                        CATEGORY_VALUE,
                    )
            },
            body.as_bytes(),
        )?;
        debug_assert_eq!(CATEGORY_KEY, "category");
        Ok(())
    }

    fn abort(mut self: Box<Self>) {
        self.stop_workers();
    }
}

impl Drop for AzureWriter {
    fn drop(&mut self) {
        self.stop_workers();
    }
}
