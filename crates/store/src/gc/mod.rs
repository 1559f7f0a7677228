//! Online garbage collection: review queues in the metadata store, the way GitLab's registry database keeps them.
//!
//! Triggers (migration 0009) queue whatever may have become garbage when the thing that needed it goes away (a new
//! link is queued too: a blob nobody references one grace period after its push is garbage). A run takes the rows
//! that have waited the grace period, and for each one re-checks the rules of `moat_model::gc` and removes what
//! they allow in one write transaction: a push that links the blob or a manifest that references it in the
//! meantime is either committed before that transaction (and the check sees it) or after it (and finds the link
//! gone, so the manifest is refused with `MANIFEST_BLOB_UNKNOWN`, never stored pointing at nothing). Bytes being
//! placed by an upload are pinned (`pins.rs`). The queue is the job's durable state: a run that stops anywhere
//! leaves the rest queued for the next one, and two processes reviewing the same row both re-check it in their
//! transaction, so nothing is removed twice.
//!
//! A run also removes abandoned uploads (sessions idle longer than the upload TTL, and upload objects no session
//! owns that old) and, when asked, sweeps the blob directory for files no row knows (left by a crash between
//! placing bytes and linking them).

mod batch;
mod lease;
pub mod pins;
mod retention;
mod review;
mod soft_delete;
mod sweep;

pub use pins::BlobPins;

use crate::blobs::BlobStore;
use crate::error::Result;
use crate::meta::MetadataStore;
use moat_model::gc::Kind;
use review::Outcome;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How a run behaves.
#[derive(Clone, Debug)]
pub struct GcOptions {
    /// How long a queued item waits before it is reviewed.
    pub grace: Duration,
    /// Report what would be removed; remove nothing.
    pub dry_run: bool,
    /// Upload sessions idle this long (and upload objects no session owns, this old) are abandoned.
    pub upload_ttl: Duration,
    /// While pushes commit, at most this share of the time is spent in the collector's write transactions (it
    /// sleeps the rest), so pushes keep the writer; `None` runs flat out.
    pub share: Option<f64>,
    /// Also walk the blob directory for files no row knows.
    pub sweep_files: bool,
    /// Judge the ages the retention and soft-delete policies count in days as if this much later than now. For
    /// tests (`moat gc --days-later`): waiting a day is no way to test a one-day policy. The grace period and
    /// upload TTL are not shifted.
    pub clock_offset: Duration,
}

/// Where a removed blob's bytes were.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum StoredIn {
    File,
    Database,
    /// A row whose bytes were missing already.
    Nowhere,
}

/// One thing a run removed (or, in a dry run, would remove).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum Removed {
    Manifest {
        registry: String,
        repository: String,
        digest: String,
        size: i64,
    },
    Link {
        registry: String,
        repository: String,
        digest: String,
    },
    /// A soft-deleted tag whose retention is over.
    Tag {
        registry: String,
        repository: String,
        tag: String,
        digest: String,
    },
    Blob {
        digest: String,
        size: i64,
        stored: StoredIn,
    },
    Upload {
        id: String,
        registry: String,
        repository: String,
        size: i64,
    },
    OrphanFile {
        digest: String,
        size: i64,
    },
    OrphanUpload {
        id: String,
        size: i64,
    },
}

impl Removed {
    /// The storage it frees: blob bytes (files and database rows), upload objects and orphan files. Links and
    /// manifests are rows of the metadata store and count nothing here.
    pub fn reclaimed(&self) -> i64 {
        match self {
            Removed::Blob { size, stored, .. } if *stored != StoredIn::Nowhere => *size,
            Removed::Upload { size, .. }
            | Removed::OrphanFile { size, .. }
            | Removed::OrphanUpload { size, .. } => *size,
            _ => 0,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Removed::Manifest { .. } => "manifest",
            Removed::Link { .. } => "link",
            Removed::Tag { .. } => "tag",
            Removed::Blob { .. } => "blob",
            Removed::Upload { .. } => "upload",
            Removed::OrphanFile { .. } => "orphanFile",
            Removed::OrphanUpload { .. } => "orphanUpload",
        }
    }
}

/// What a run did.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GcSummary {
    pub dry_run: bool,
    /// Removed items by kind.
    pub removed: std::collections::BTreeMap<String, u64>,
    pub reclaimed_bytes: i64,
    /// Queued items found still needed (their review ended).
    pub kept: u64,
    /// Pinned bytes left for a later run.
    pub postponed: u64,
    pub passes: u32,
    pub duration_ms: u64,
}

impl GcSummary {
    fn add(&mut self, r: &Removed) {
        *self.removed.entry(r.kind().to_string()).or_default() += 1;
        self.reclaimed_bytes += r.reclaimed();
    }
}

/// Items reviewed per write transaction: a few milliseconds of the writer, so that a push waits little for it,
/// and few enough commits (each one an fsync) for the whole run.
const BATCH: usize = 512;
/// A run with a zero grace ends after this many passes even if removals keep making more items due (a removed index
/// makes its children due at once, and their removal their blobs).
const MAX_PASSES: u32 = 8;

/// The collector over one metadata store and its blob store.
#[derive(Clone)]
pub struct Collector {
    meta: MetadataStore,
    blobs: Arc<dyn BlobStore>,
}

impl Collector {
    pub fn new(meta: MetadataStore, blobs: Arc<dyn BlobStore>) -> Collector {
        Collector { meta, blobs }
    }

    /// Runs once. `upload_busy` says whether an upload session is being written right now (the server's locks);
    /// `report` sees each removal after it is committed (in a dry run, each one that would be made).
    pub async fn run(
        &self,
        opts: &GcOptions,
        upload_busy: &(dyn Fn(&str) -> bool + Sync),
        report: &mut (dyn FnMut(&Removed) + Send),
    ) -> Result<GcSummary> {
        let started = Instant::now();
        let mut summary = GcSummary {
            dry_run: opts.dry_run,
            ..GcSummary::default()
        };
        let mut emit = |r: Removed, s: &mut GcSummary| {
            s.add(&r);
            report(&r);
        };
        let grace = opts.grace.as_secs_f64();
        let now = unix_now() + opts.clock_offset.as_secs_f64();
        // The policies first: what they purge is queued for review, so its links and bytes go in the passes below
        // when the grace period allows.
        for r in self.policies(now, opts).await? {
            emit(r, &mut summary);
        }
        if opts.dry_run {
            summary.passes = 1;
            for r in self.simulate(grace).await? {
                emit(r, &mut summary);
            }
        } else {
            self.meta.drop_expired_pins().await?;
            self.recover_trash().await?;
            // What a removal makes due (a removed index's children) is due one grace period later: with a grace,
            // not in this run. Without one, passes go on while removals make more due.
            let passes = if grace > 0.0 { 1 } else { MAX_PASSES };
            let mut names = HashMap::new();
            let mut pacer = Pacer::new(&self.meta, opts.share);
            while summary.passes < passes {
                summary.passes += 1;
                let keys = {
                    let mut conn = self.meta.reader().acquire().await?;
                    review::due_keys(&mut conn, grace).await?
                };
                let mut progress = false;
                for chunk in keys.chunks(BATCH) {
                    let mut tx = self.meta.begin_write().await?;
                    // Paced on the time the writer is held, not the wait for it (pushes hold it then).
                    let t0 = Instant::now();
                    let mut removed = Vec::new();
                    let (mut links, mut bytes) = (Vec::new(), Vec::new());
                    for key in chunk {
                        match key.kind {
                            Kind::Link => links.push((
                                key.registry_id.clone(),
                                key.repository.clone(),
                                key.digest.clone(),
                            )),
                            Kind::Blob => bytes.push(key.digest.clone()),
                            Kind::Manifest => {
                                match review::apply_manifest(&mut tx, key, grace).await? {
                                    Outcome::Removed(r) => removed.extend(r),
                                    Outcome::Needed => summary.kept += 1,
                                    Outcome::NotDue => {}
                                }
                            }
                        }
                    }
                    let b = batch::review(
                        &mut tx,
                        self.blobs.as_ref(),
                        &links,
                        &bytes,
                        grace,
                        &mut names,
                    )
                    .await?;
                    removed.extend(b.removed);
                    summary.kept += b.needed;
                    summary.postponed += b.postponed;
                    tx.commit().await?;
                    for d in &b.trashed {
                        self.blobs.empty_trash(d)?;
                    }
                    progress |= !removed.is_empty();
                    for r in removed {
                        emit(r, &mut summary);
                    }
                    pacer.pace(t0.elapsed()).await;
                }
                if !progress {
                    break;
                }
            }
        }
        for r in sweep::uploads(&self.meta, self.blobs.as_ref(), opts, upload_busy).await? {
            emit(r, &mut summary);
        }
        if opts.sweep_files {
            for r in sweep::orphan_files(&self.meta, self.blobs.as_ref(), opts).await? {
                emit(r, &mut summary);
            }
        }
        summary.duration_ms = started.elapsed().as_millis() as u64;
        Ok(summary)
    }

    /// The retention policy of every registry that has it enabled (untagged manifests old enough) and the
    /// soft-delete policy (kept manifests and tags whose time is up) are purged (in a dry run, listed), each
    /// re-judged in the write transaction that removes it.
    async fn policies(&self, now: f64, opts: &GcOptions) -> Result<Vec<Removed>> {
        let mut out = Vec::new();
        let mut pacer = Pacer::new(&self.meta, opts.share);
        let targets = {
            let mut conn = self.meta.reader().acquire().await?;
            retention::targets(&mut conn).await?
        };
        for target in &targets {
            let mut conn = self.meta.reader().acquire().await?;
            let keys = retention::candidates(&mut conn, &target.registry_id).await?;
            if opts.dry_run {
                for key in &keys {
                    if let Some(size) = retention::judge(&mut conn, target, key, now).await? {
                        let (registry, _) =
                            review::registry_name(&mut conn, &key.registry_id).await?;
                        out.push(Removed::Manifest {
                            registry,
                            repository: key.repository.clone(),
                            digest: key.digest.clone(),
                            size,
                        });
                    }
                }
                continue;
            }
            drop(conn);
            for chunk in keys.chunks(BATCH) {
                let mut tx = self.meta.begin_write().await?;
                let t0 = Instant::now();
                let mut removed = Vec::new();
                for key in chunk {
                    removed.extend(retention::purge(&mut tx, target, key, now).await?);
                }
                tx.commit().await?;
                out.extend(removed);
                pacer.pace(t0.elapsed()).await;
            }
        }
        // Soft delete: what was kept and whose time is up.
        let expired = {
            let mut conn = self.meta.reader().acquire().await?;
            soft_delete::expired(&mut conn, now).await?
        };
        for chunk in expired.chunks(BATCH) {
            if opts.dry_run {
                let mut conn = self.meta.reader().acquire().await?;
                for (item, days) in chunk {
                    out.extend(soft_delete::purge(&mut conn, item, *days, now, true).await?);
                }
                continue;
            }
            let mut tx = self.meta.begin_write().await?;
            let t0 = Instant::now();
            let mut removed = Vec::new();
            for (item, days) in chunk {
                removed.extend(soft_delete::purge(&mut tx, item, *days, now, false).await?);
            }
            tx.commit().await?;
            out.extend(removed);
            pacer.pace(t0.elapsed()).await;
        }
        Ok(out)
    }

    /// Files a run moved to the trash and did not empty (it stopped before or after its commit): those whose rows
    /// are still there (the removal did not commit) go back under their name, the others are emptied.
    async fn recover_trash(&self) -> Result<()> {
        for d in self.blobs.list_trash()? {
            let row: Option<i64> = sqlx::query_scalar("SELECT 1 FROM blobs WHERE digest = $1")
                .bind(d.as_str())
                .fetch_optional(self.meta.writer())
                .await?;
            if row.is_some() {
                self.blobs.restore_blob(&d)?;
            } else {
                self.blobs.empty_trash(&d)?;
            }
        }
        Ok(())
    }

    /// A dry run: the first pass of a real run, judged on a read snapshot with the same rules. Removals that only
    /// become due because of others (an index's children once the index is gone) show on a later run.
    async fn simulate(&self, grace: f64) -> Result<Vec<Removed>> {
        let mut tx = self.meta.reader().begin().await?;
        let keys = review::due_keys(&mut tx, grace).await?;
        let mut out = Vec::new();
        // Links that would go, by digest: their bytes go too when no other link remains.
        let mut unlinked: HashMap<String, u64> = HashMap::new();
        let mut bytes_reviewed = Vec::new();
        for key in &keys {
            match key.kind {
                Kind::Link => {
                    if review::link_facts(&mut tx, key).await? == Some(false) {
                        let (registry, _) =
                            review::registry_name(&mut tx, &key.registry_id).await?;
                        out.push(Removed::Link {
                            registry,
                            repository: key.repository.clone(),
                            digest: key.digest.clone(),
                        });
                        *unlinked.entry(key.digest.clone()).or_default() += 1;
                    }
                }
                Kind::Blob => bytes_reviewed.push(key.digest.clone()),
                Kind::Manifest => {
                    if let Some((facts, size)) = review::manifest_facts(&mut tx, key).await? {
                        if moat_model::gc::manifest_is_garbage(facts) {
                            let (registry, _) =
                                review::registry_name(&mut tx, &key.registry_id).await?;
                            out.push(Removed::Manifest {
                                registry,
                                repository: key.repository.clone(),
                                digest: key.digest.clone(),
                                size,
                            });
                        }
                    }
                }
            }
        }
        let mut candidates: Vec<String> = unlinked.keys().cloned().collect();
        candidates.extend(
            bytes_reviewed
                .into_iter()
                .filter(|d| !unlinked.contains_key(d)),
        );
        for digest in candidates {
            let links: i64 =
                sqlx::query_scalar("SELECT COUNT(*) FROM blob_links WHERE digest = $1")
                    .bind(&digest)
                    .fetch_one(&mut *tx)
                    .await?;
            let going = unlinked.get(&digest).copied().unwrap_or(0) as i64;
            let (_, pinned) = review::bytes_facts(&mut tx, &digest).await?;
            if links > going || pinned {
                continue;
            }
            let size: Option<i64> = sqlx::query_scalar("SELECT size FROM blobs WHERE digest = $1")
                .bind(&digest)
                .fetch_optional(&mut *tx)
                .await?;
            let inline: Option<i64> =
                sqlx::query_scalar("SELECT 1 FROM blob_data WHERE digest = $1")
                    .bind(&digest)
                    .fetch_optional(&mut *tx)
                    .await?;
            let file = digest.parse().is_ok_and(|d| self.blobs.blob_exists(&d));
            let stored = match (file, inline.is_some(), size.is_some()) {
                (true, _, _) => StoredIn::File,
                (false, true, _) => StoredIn::Database,
                (false, false, true) => StoredIn::Nowhere,
                (false, false, false) => continue,
            };
            out.push(Removed::Blob {
                digest,
                size: size.unwrap_or(0),
                stored,
            });
        }
        tx.commit().await?;
        Ok(out)
    }
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Tracks whether pushes are using the writer, so that the collector yields it only then.
pub(crate) struct Pacer<'a> {
    meta: &'a MetadataStore,
    share: Option<f64>,
    seen: u64,
}

impl<'a> Pacer<'a> {
    pub(crate) fn new(meta: &'a MetadataStore, share: Option<f64>) -> Pacer<'a> {
        Pacer {
            meta,
            share,
            seen: meta.push_commits(),
        }
    }

    /// After a transaction that held the writer for `worked`: while pushes commit, sleeps so that the collector's
    /// transactions take at most `share` of the time; with none since the last call, goes on at once.
    pub(crate) async fn pace(&mut self, worked: Duration) {
        let now = self.meta.push_commits();
        let busy = now != self.seen;
        self.seen = now;
        if let Some(share) = self.share.filter(|s| busy && *s > 0.0 && *s < 1.0) {
            tokio::time::sleep(worked.mul_f64((1.0 - share) / share)).await;
        }
    }
}
