//! `moat jobs list|show|cancel`: the durable jobs of a data directory (remote imports, pipeline runs), read from
//! its metadata store. Payloads are shown as stored: credentials in them are sealed, never in clear.

use crate::{emit, Common, Output};
use anyhow::Context;
use moat_store::meta::{JobFilter, JobRecord, JobState};
use moat_store::MetadataStore;

#[derive(clap::Subcommand)]
pub enum JobsCommand {
    /// Jobs, newest first.
    List {
        #[command(flatten)]
        common: Common,
        /// Only this registry's jobs.
        #[arg(long)]
        registry: Option<String>,
        /// Only jobs of this kind (remote-import, pipeline-run, …).
        #[arg(long)]
        kind: Option<String>,
        /// Only jobs in this state: queued, running, succeeded, failed.
        #[arg(long, value_parser = parse_state)]
        state: Option<JobState>,
        #[arg(long, short = 'n', default_value_t = 50)]
        limit: i64,
        #[arg(long, short = 'o', value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// One job with its payload, checkpoint, progress and result (JSON).
    Show {
        #[command(flatten)]
        common: Common,
        id: String,
    },
    /// Asks a job to stop: a queued job fails at once, a running one at its next checkpoint.
    Cancel {
        #[command(flatten)]
        common: Common,
        id: String,
    },
    /// Records a job for the running server to claim (tests: kinds enabled by MOAT_TEST_JOB_KINDS).
    #[command(hide = true)]
    Submit {
        #[command(flatten)]
        common: Common,
        #[arg(long)]
        kind: String,
        #[arg(long, default_value = "")]
        registry_id: String,
        #[arg(long, default_value = "{}")]
        payload: String,
    },
}

fn parse_state(s: &str) -> Result<JobState, String> {
    match s.to_ascii_lowercase().as_str() {
        "queued" => Ok(JobState::Queued),
        "running" => Ok(JobState::Running),
        "succeeded" => Ok(JobState::Succeeded),
        "failed" => Ok(JobState::Failed),
        _ => Err(format!(
            "'{s}' is not a job state: queued, running, succeeded or failed"
        )),
    }
}

async fn open(common: &Common) -> anyhow::Result<MetadataStore> {
    Ok(moat_server::operator::open(crate::config(common))
        .await?
        .meta)
}

fn summary(j: &JobRecord) -> serde_json::Value {
    serde_json::json!({
        "id": j.id, "kind": j.kind, "registryId": j.registry_id, "state": j.state.as_str(),
        "attempts": j.attempts, "created": j.created, "started": j.started, "finished": j.finished,
        "progress": j.progress, "error": j.error,
    })
}

pub async fn run(command: JobsCommand) -> anyhow::Result<()> {
    match command {
        JobsCommand::List {
            common,
            registry,
            kind,
            state,
            limit,
            output,
        } => {
            let meta = open(&common).await?;
            let registry_id = match registry {
                None => None,
                Some(name) => Some(
                    meta.registry_by_name(&name.to_ascii_lowercase())
                        .await?
                        .with_context(|| format!("no registry '{name}' in this data directory"))?
                        .id,
                ),
            };
            let jobs = meta
                .jobs(&JobFilter {
                    registry_id,
                    kind,
                    state,
                    limit: Some(limit),
                })
                .await?;
            match output {
                Output::Json => {
                    for j in &jobs {
                        emit(format_args!("{}", summary(j)));
                    }
                }
                Output::Table => {
                    emit(format_args!(
                        "{:<36}  {:<14}  {:<9}  {:>3}  {:<27}  ERROR",
                        "ID", "KIND", "STATE", "TRY", "CREATED"
                    ));
                    for j in &jobs {
                        let error: String = j
                            .error
                            .as_deref()
                            .unwrap_or("")
                            .chars()
                            .map(|c| if c.is_control() { ' ' } else { c })
                            .take(100)
                            .collect();
                        emit(format_args!(
                            "{:<36}  {:<14}  {:<9}  {:>3}  {:<27}  {error}",
                            j.id,
                            j.kind,
                            j.state.as_str(),
                            j.attempts,
                            j.created
                        ));
                    }
                }
            }
            Ok(())
        }
        JobsCommand::Show { common, id } => {
            let meta = open(&common).await?;
            let job = meta
                .job(&id)
                .await?
                .with_context(|| format!("no job '{id}' (see `moat jobs list`)"))?;
            emit(format_args!("{}", serde_json::to_string_pretty(&job)?));
            Ok(())
        }
        JobsCommand::Cancel { common, id } => {
            let meta = open(&common).await?;
            if !meta.cancel_job(&id).await? {
                anyhow::bail!("no queued or running job '{id}' (see `moat jobs list`)");
            }
            emit(format_args!("cancellation of job {id} requested"));
            Ok(())
        }
        JobsCommand::Submit {
            common,
            kind,
            registry_id,
            payload,
        } => {
            let meta = open(&common).await?;
            let payload: serde_json::Value =
                serde_json::from_str(&payload).context("--payload is not JSON")?;
            let id = meta.insert_job(&kind, &registry_id, &payload, None).await?;
            emit(format_args!("{id}"));
            Ok(())
        }
    }
}
