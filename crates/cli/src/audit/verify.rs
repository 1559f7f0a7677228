//! `moat audit verify`: recomputes the hash chains of the audit and activity logs and checks their heads and the
//! newest signed checkpoints (signatures by the data directory's `audit` keys). Exit 0 when the trail is intact;
//! otherwise each problem names the first record it concerns, and the exit status is 1.

use crate::Output;
use moat_server::keys::{KeyFiles, Purpose};
use moat_store::meta::{TrailProblem, TrailReport};
use moat_store::MetadataStore;
use std::path::Path;

#[derive(clap::Args)]
pub struct VerifyArgs {
    /// Only this registry's chains (any case).
    #[arg(long)]
    registry: Option<String>,
    /// table: a summary and one line per problem. json: one object (records, chains, checkpoints, problems).
    #[arg(long, short, value_enum, default_value_t = Output::Table)]
    output: Output,
}

/// Checks each newest checkpoint's signature; a problem for each that does not verify.
fn check_signatures(data_dir: &Path, report: &TrailReport) -> anyhow::Result<Vec<TrailProblem>> {
    let keys = KeyFiles::new(data_dir).load(Purpose::Audit)?;
    let mut problems = Vec::new();
    for c in &report.checkpoints {
        let problem = |what: String| TrailProblem {
            log: c.log.clone(),
            chain: c.chain.clone(),
            seq: c.last_seq,
            what,
        };
        let Some(key) = keys.iter().find(|k| k.kid == c.key_id) else {
            problems.push(problem(format!(
                "its checkpoint is signed by key {} which is not among the audit keys",
                c.key_id
            )));
            continue;
        };
        let signer = moat_server::keys::transfer_signer(key);
        let valid = hex::decode(&c.signature)
            .map(|sig| signer.public_key().verify(&c.message(), &sig))
            .unwrap_or(false);
        if !valid {
            problems.push(problem(
                "its signed checkpoint's signature does not verify (the checkpoint was edited)"
                    .into(),
            ));
        }
    }
    Ok(problems)
}

pub async fn run(meta: &MetadataStore, data_dir: &Path, a: VerifyArgs) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let mut report = meta.verify_trail(a.registry.as_deref()).await?;
    report.problems.extend(check_signatures(data_dir, &report)?);
    let secs = started.elapsed().as_secs_f64();
    match a.output {
        Output::Json => crate::emit(format_args!(
            "{}",
            serde_json::json!({
                "intact": report.problems.is_empty(),
                "auditRecords": report.audit_records,
                "activityRecords": report.activity_records,
                "chains": report.chains,
                "checkpoints": report.checkpoints.len(),
                "problems": report.problems,
                "seconds": secs,
            })
        )),
        Output::Table => {
            for p in &report.problems {
                crate::emit(format_args!(
                    "{} log, chain {}, record {}: {}",
                    p.log,
                    moat_model::text::escape(&p.chain),
                    p.seq,
                    p.what
                ));
            }
            crate::emit(format_args!(
                "{}: {} audit and {} activity records in {} chains, {} signed checkpoints checked ({secs:.2} s)",
                if report.problems.is_empty() {
                    "the audit trail is intact"
                } else {
                    "the audit trail was altered"
                },
                report.audit_records,
                report.activity_records,
                report.chains,
                report.checkpoints.len()
            ));
        }
    }
    if !report.problems.is_empty() {
        std::process::exit(1);
    }
    Ok(())
}

/// `moat serve`'s hidden flags for the trail's upkeep (tests run them in seconds).
#[derive(clap::Args, Clone, Debug)]
pub struct TrailFlags {
    /// Seconds between signed checkpoints of the audit trail's chain heads; 0 turns them off.
    #[arg(
        long,
        env = "MOAT_TRAIL_CHECKPOINT_INTERVAL_SECS",
        default_value_t = 300,
        hide = true
    )]
    trail_checkpoint_interval_secs: u64,
    /// Seconds between runs of audit-trail retention; 0 turns it off.
    #[arg(
        long,
        env = "MOAT_TRAIL_RETENTION_INTERVAL_SECS",
        default_value_t = 3600,
        hide = true
    )]
    trail_retention_interval_secs: u64,
}

impl TrailFlags {
    pub fn apply(&self, c: &mut moat_server::monitor::trail::AuditSection) {
        c.checkpoint_interval = std::time::Duration::from_secs(self.trail_checkpoint_interval_secs);
        c.retention_interval = std::time::Duration::from_secs(self.trail_retention_interval_secs);
    }
}
