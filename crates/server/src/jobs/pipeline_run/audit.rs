//! The audit trail of a pipeline run (issue 11, "the gate"): an export is recorded as `Export` on the registry it
//! reads, one event per artifact, with the destination; an import as `Import` on the registry it writes, one event
//! per artifact, with the archive it came from. Allowed, denied and failed runs alike. A storage URI is written
//! without its query: a SAS token (which a URI could carry) never reaches an audit row.

use moat_model::audit::{AuditEvent, Operation, ResultType};
use moat_model::Registry;

/// Who and what an event of one run names.
pub struct RunAudit<'a> {
    pub registry: &'a Registry,
    pub pipeline: &'a str,
    pub run: &'a str,
}

/// A storage URI as it may be recorded or shown: no query string, no fragment.
pub fn redact(uri: &str) -> String {
    uri.split(['?', '#']).next().unwrap_or("").to_string()
}

/// A message as a run may show or record it: every URL's query cut off. Storage and HTTP errors quote the URL
/// they failed on, and an Azure URL's query can be a SAS token (`…?sv=…&sig=…`): it must reach no response, log
/// line or audit row.
pub fn scrub(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(i) = rest.find("://") {
        // The URL runs to the next whitespace; its query (if any) is dropped, and so is what follows it up to
        // the end of the URL.
        let end = rest[i..]
            .find(char::is_whitespace)
            .map(|e| i + e)
            .unwrap_or(rest.len());
        let url = &rest[..end];
        match url.find('?') {
            Some(q) => {
                out.push_str(&url[..q]);
                // Keep the punctuation a message puts after a URL (`…: why`).
                if url.ends_with(':') {
                    out.push(':');
                }
            }
            None => out.push_str(url),
        }
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// One artifact as a run names it, split into the event's columns.
pub struct ArtifactColumns {
    pub repository: Option<String>,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

impl ArtifactColumns {
    /// Columns of an artifact string of a run's request (`repo`, `repo:tag`, `repo@sha256:…`), parsed loosely:
    /// a denied run's artifacts may not exist.
    pub fn of_request(s: &str) -> ArtifactColumns {
        if let Some((repo, digest)) = s.split_once('@') {
            return ArtifactColumns {
                repository: Some(repo.into()),
                tag: None,
                digest: Some(digest.into()),
            };
        }
        // The tag is after the last ':' that follows the last '/' (a registry host's port is never in a run's name).
        let slash = s.rfind('/').map(|i| i + 1).unwrap_or(0);
        match s[slash..].rfind(':') {
            Some(i) => ArtifactColumns {
                repository: Some(s[..slash + i].into()),
                tag: Some(s[slash + i + 1..].into()),
                digest: None,
            },
            None => ArtifactColumns {
                repository: Some(s.into()),
                tag: Some("latest".into()),
                digest: None,
            },
        }
    }
}

impl RunAudit<'_> {
    fn event(&self, operation: Operation, a: ArtifactColumns) -> AuditEvent {
        AuditEvent {
            time_generated: moat_store::time_fmt::now(),
            category: operation.category().as_str().into(),
            operation_name: operation.as_str().into(),
            registry: self.registry.name.clone(),
            login_server: self.registry.login_server.clone(),
            repository: a.repository,
            tag: a.tag,
            digest: a.digest,
            // The run acts for whoever created it; the run is what the trail can name for sure.
            identity: Some(format!("pipelineRuns/{}", self.run)),
            result_type: ResultType::Success.as_str().into(),
            result_description: "200".into(),
            endpoint: Some(format!("pipeline/{}", self.pipeline)),
            ..Default::default()
        }
    }

    /// `Export` events on the registry read: one per artifact, `outcome` = how the run ended.
    pub fn export(
        &self,
        artifacts: Vec<ArtifactColumns>,
        destination: &str,
        outcome: &Outcome,
    ) -> Vec<AuditEvent> {
        let destination = redact(destination);
        artifacts
            .into_iter()
            .map(|a| {
                let mut e = self.event(Operation::Export, a);
                outcome.apply(&mut e, &format!("exported to {destination}"));
                e
            })
            .collect()
    }

    /// `Import` events on the registry written: one per artifact.
    pub fn import(
        &self,
        artifacts: Vec<ArtifactColumns>,
        source: &str,
        outcome: &Outcome,
    ) -> Vec<AuditEvent> {
        let source = redact(source);
        artifacts
            .into_iter()
            .map(|a| {
                let mut e = self.event(Operation::Import, a);
                outcome.apply(&mut e, &format!("imported from {source}"));
                e
            })
            .collect()
    }
}

/// How a run (or one artifact of it) ended, for its events.
pub enum Outcome {
    Success,
    /// Refused by the egress gate (exports disabled, the network).
    Denied(String),
    Failed(String),
}

impl Outcome {
    fn apply(&self, e: &mut AuditEvent, what: &str) {
        let (result, description) = match self {
            Outcome::Success => (ResultType::Success, format!("200: {what}")),
            Outcome::Denied(why) => (ResultType::Denied, format!("403: {why} ({what} refused)")),
            Outcome::Failed(why) => (ResultType::Failure, format!("500: {why} ({what} failed)")),
        };
        e.result_type = result.as_str().into();
        e.result_description = scrub(&description);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_artifacts_split_into_columns() {
        let a = ArtifactColumns::of_request("team/app");
        assert_eq!(
            (a.repository.as_deref(), a.tag.as_deref()),
            (Some("team/app"), Some("latest"))
        );
        let a = ArtifactColumns::of_request("team/app:v1");
        assert_eq!(
            (a.repository.as_deref(), a.tag.as_deref()),
            (Some("team/app"), Some("v1"))
        );
        let a = ArtifactColumns::of_request("app@sha256:ab");
        assert_eq!(
            (a.repository.as_deref(), a.digest.as_deref(), a.tag),
            (Some("app"), Some("sha256:ab"), None)
        );
    }

    #[test]
    fn messages_lose_every_query() {
        let m = "cannot reach the storage at http://127.0.0.1:1/acct/c/b.tar: http://127.0.0.1:1/acct/c/b.tar?se=1&sig=SECRET%3D: refused; check";
        let s = scrub(m);
        assert!(!s.contains("SECRET") && !s.contains("sig="), "{s}");
        assert_eq!(
            s,
            "cannot reach the storage at http://127.0.0.1:1/acct/c/b.tar: http://127.0.0.1:1/acct/c/b.tar: refused; check"
        );
        assert_eq!(scrub("no url here"), "no url here");
        assert_eq!(scrub("end https://a/b?sig=x"), "end https://a/b");
    }

    #[test]
    fn no_query_reaches_a_row() {
        assert_eq!(
            redact("https://a.blob.core.windows.net/c/x.tar?sv=1&sig=SECRET"),
            "https://a.blob.core.windows.net/c/x.tar"
        );
        assert_eq!(redact("file:///media/usb"), "file:///media/usb");
    }
}
