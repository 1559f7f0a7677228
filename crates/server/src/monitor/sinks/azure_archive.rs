//! The storage-account destination of a diagnostic setting, written as Azure Monitor archives it: container
//! `insights-logs-<category>` (created on first use), one append blob per hour
//! (`resourceId=/SUBSCRIPTIONS/…/y=YYYY/m=MM/d=DD/h=HH/m=00/PT1H.json`), one JSON record a line.
//!
//! Exactly once per record: every append names the offset the blob must end at, and whenever this sink is not
//! sure what a blob holds (first use since it was opened — after a restart or a `kill -9` —, or after a failed
//! or unanswered append), it reads the blob's tail and skips the records of the batch already there, by
//! `recordId`. Each blob has one writer (a setting's destination; two settings of a registry may not archive the
//! same category to one account), except the subscription-wide activity blob, where an append that lost the race
//! is retried after a new look at the tail.

use super::sink::{Sink, SinkError, SinkRecord};
use moat_model::monitor::resource_log::{self, ADMINISTRATIVE};
use moat_transfer::storage::append_blob::{AppendBlobs, MAX_APPEND};
use moat_transfer::storage::{Credential, StorageError};
use std::collections::{HashMap, HashSet};

pub struct AzureArchive {
    account: String,
    endpoint: String,
    cred: Credential,
    outbound: moat_outbound::Outbound,
    /// The registry's resource id (blob paths of its logs and metrics).
    resource_id: String,
    /// `/SUBSCRIPTIONS/{sub}` (the activity log's blob path).
    subscription_path: String,
    containers: HashMap<String, AppendBlobs>,
    /// Blobs whose length this sink knows for sure (it made the last append it knows of).
    lengths: HashMap<(String, String), u64>,
}

impl AzureArchive {
    pub fn new(
        account: &str,
        endpoint: &str,
        cred: Credential,
        outbound: moat_outbound::Outbound,
        resource_id: &str,
        subscription: &str,
    ) -> AzureArchive {
        AzureArchive {
            account: account.into(),
            endpoint: endpoint.into(),
            cred,
            outbound,
            resource_id: resource_id.into(),
            subscription_path: format!("/SUBSCRIPTIONS/{}", subscription.to_ascii_uppercase()),
            containers: HashMap::new(),
            lengths: HashMap::new(),
        }
    }

    fn container(&mut self, name: &str) -> Result<&AppendBlobs, StorageError> {
        if !self.containers.contains_key(name) {
            let c = AppendBlobs::new(
                &self.endpoint,
                &self.account,
                name,
                self.cred.clone(),
                &self.outbound,
                None,
            )?;
            c.create_container()?;
            self.containers.insert(name.to_string(), c);
        }
        Ok(&self.containers[name])
    }

    /// Where a record goes: (container, blob).
    fn place(&self, r: &SinkRecord) -> Result<(String, String), SinkError> {
        let path = if r.category == ADMINISTRATIVE {
            &self.subscription_path
        } else {
            &self.resource_id
        };
        let blob = resource_log::blob_path(path, &r.time).ok_or_else(|| {
            SinkError::Misconfigured(format!("record {} has no usable time '{}'", r.id, r.time))
        })?;
        Ok((resource_log::container(&r.category), blob))
    }

    /// Checks the connection and the credential: creates (or finds) one container. The settings PUT calls it.
    pub fn probe(&mut self, category: &str) -> Result<(), StorageError> {
        self.container(&resource_log::container(category))
            .map(|_| ())
    }

    /// Appends `lines` (records of one blob, in order) exactly once; `Ok(n)`: all arrived; on error, how many
    /// leading ones arrived is in the error.
    fn append_group(
        &mut self,
        container: &str,
        blob: &str,
        group: &[&SinkRecord],
    ) -> Result<(), (usize, StorageError)> {
        let key = (container.to_string(), blob.to_string());
        let mut attempts = 0;
        loop {
            attempts += 1;
            let mut start = 0;
            let mut at = match self.lengths.get(&key) {
                Some(n) => *n,
                None => {
                    let c = self.container(container).map_err(|e| (0, e))?;
                    let len = match c.length(blob).map_err(|e| (0, e))? {
                        Some(n) => n,
                        None => {
                            c.create(blob).map_err(|e| (0, e))?;
                            c.length(blob).map_err(|e| (0, e))?.unwrap_or(0)
                        }
                    };
                    if len > 0 {
                        start = already_there(c, blob, len, group).map_err(|e| (0, e))?;
                    }
                    len
                }
            };
            let mut lines: Vec<u8> = Vec::new();
            let mut in_chunk = 0;
            let mut done = start;
            let mut failed = None;
            for r in group.iter().skip(start) {
                let mut line = r.text.clone().into_bytes();
                line.push(b'\n');
                if !lines.is_empty() && lines.len() + line.len() > MAX_APPEND {
                    match self.containers[container].append(blob, at, &lines) {
                        Ok(n) => {
                            at = n;
                            done += in_chunk;
                        }
                        Err(e) => {
                            failed = Some(e);
                            break;
                        }
                    }
                    lines.clear();
                    in_chunk = 0;
                }
                lines.extend_from_slice(&line);
                in_chunk += 1;
            }
            if failed.is_none() && !lines.is_empty() {
                match self
                    .container(container)
                    .map_err(|e| (done, e))?
                    .append(blob, at, &lines)
                {
                    Ok(n) => {
                        at = n;
                        done += in_chunk;
                    }
                    Err(e) => failed = Some(e),
                }
            }
            match failed {
                None => {
                    self.lengths.insert(key, at);
                    return Ok(());
                }
                Some(e) => {
                    // Not sure any more what the blob holds: the next attempt reads its tail.
                    self.lengths.remove(&key);
                    let raced = matches!(e, StorageError::Status { status: 412, .. });
                    if !raced || attempts >= 3 {
                        return Err((done, e));
                    }
                }
            }
        }
    }
}

/// How many leading records of `group` the blob already ends with (a previous attempt whose answer was lost):
/// the index after the last one of them found in the blob's tail.
fn already_there(
    c: &AppendBlobs,
    blob: &str,
    len: u64,
    group: &[&SinkRecord],
) -> Result<usize, StorageError> {
    let group_bytes: u64 = group.iter().map(|r| r.text.len() as u64 + 1).sum();
    let from = len.saturating_sub(group_bytes + (1 << 20));
    let tail = c.read_from(blob, from)?;
    let mut ids = HashSet::new();
    for line in tail.split(|b| *b == b'\n') {
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(line) {
            if let Some(id) = v.get("recordId").and_then(|x| x.as_str()) {
                ids.insert(id.to_string());
            }
        }
    }
    Ok(group
        .iter()
        .rposition(|r| ids.contains(&r.id))
        .map(|i| i + 1)
        .unwrap_or(0))
}

fn sink_error(e: StorageError, delivered: usize) -> SinkError {
    match e {
        StorageError::CredentialRefused { .. }
        | StorageError::Refused(_)
        | StorageError::Invalid(_)
        | StorageError::DirectoryRefused(_) => SinkError::Misconfigured(e.to_string()),
        other => SinkError::Unavailable {
            message: other.to_string(),
            delivered,
        },
    }
}

impl Sink for AzureArchive {
    fn describe(&self) -> String {
        format!("storage:{}", self.account)
    }

    fn deliver(&mut self, records: &[SinkRecord]) -> Result<(), SinkError> {
        let mut i = 0;
        while i < records.len() {
            let place = self.place(&records[i])?;
            let mut j = i + 1;
            while j < records.len() && self.place(&records[j])? == place {
                j += 1;
            }
            let group: Vec<&SinkRecord> = records[i..j].iter().collect();
            if let Err((done, e)) = self.append_group(&place.0, &place.1, &group) {
                return Err(match sink_error(e, i + done) {
                    SinkError::Misconfigured(m) if i + done > 0 => SinkError::Unavailable {
                        message: m,
                        delivered: i + done,
                    },
                    other => other,
                });
            }
            i = j;
        }
        Ok(())
    }
}
