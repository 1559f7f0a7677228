//! Workload 5: this machine's physical limits, single-core SHA-256 and fsync'd disk writes.

use super::*;

pub fn sha_throughput(data: &[u8]) -> (f64, String) {
    let t = Instant::now();
    let digest = Sha256::digest(data);
    (
        mib_s(data.len() as u64, t.elapsed()),
        format!("sha256:{}", hex::encode(digest)),
    )
}

/// The disk's best rate for `total` bytes made durable by one writer: the better of writing everything then one
/// fsync, and writing while a second thread fdatasyncs what is written (a virtual disk that takes writes into a
/// cache pays for them at the flush, and flushing as it goes overlaps the two).
pub fn disk_throughput(dir: &Path, data: &[u8], total: u64) -> Result<f64> {
    let path = dir.join("disk-test.bin");
    let mut best: f64 = 0.0;
    for flush_while_writing in [false, true] {
        let t = Instant::now();
        let mut f = std::fs::File::create(&path)?;
        let written = Arc::new(AtomicU64::new(0));
        let flusher = flush_while_writing.then(|| {
            let (f, written) = (f.try_clone(), written.clone());
            std::thread::spawn(move || -> Result<()> {
                let f = f?;
                let mut flushed = 0;
                while flushed < total {
                    let w = written.load(Ordering::Acquire);
                    if w - flushed >= 32 << 20 || (w == total && w > flushed) {
                        f.sync_data()?;
                        flushed = w;
                    } else {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                }
                Ok(())
            })
        });
        let mut pos = 0usize;
        let mut n_written = 0u64;
        while n_written < total {
            let n = FRAME
                .min(data.len() - pos)
                .min((total - n_written) as usize);
            f.write_all(&data[pos..pos + n])?;
            pos = (pos + n) % data.len();
            n_written += n as u64;
            written.store(n_written, Ordering::Release);
        }
        if let Some(h) = flusher {
            h.join()
                .map_err(|_| anyhow!("disk flusher thread panicked"))??;
        }
        f.sync_all()?;
        best = best.max(mib_s(total, t.elapsed()));
        drop(f);
        std::fs::remove_file(&path)?;
    }
    Ok(best)
}
