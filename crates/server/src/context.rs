//! The edge: each request is classified once into the registry it is for, its [`Origin`] and its [`Principal`].
//! Handlers receive a [`RequestCtx`] and never read raw addresses or credentials themselves.

use crate::endpoints::{ConnInfo, ListenerKind};
use crate::identities;
use crate::oci::error::{Code, OciError, OciResult};
use crate::state::AppState;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};
use base64::Engine;
use moat_model::audit::{AuditEvent, Operation, ResultType};
use moat_model::{
    decide, decide_network, Access, Action, Decision, DenyReason, Egress, NetworkDecision, Origin,
    Permit, PrivateEndpointOrigin, Registry, RepositoryName,
};
use std::time::Instant;

#[derive(Clone, Debug)]
pub struct Principal {
    /// `None` for anonymous callers.
    pub identity: Option<String>,
    pub access: Access,
    /// Whether the caller presented credentials at all (decides `error="insufficient_scope"` in challenges).
    pub presented: bool,
}

#[derive(Clone, Debug)]
pub struct RequestCtx {
    pub registry: std::sync::Arc<Registry>,
    pub origin: Origin,
    pub principal: Principal,
    pub user_agent: Option<String>,
    pub correlation_id: String,
    pub started: Instant,
    /// `https` or `http`, for the token realm.
    pub scheme: &'static str,
    /// The request came to the registry's dedicated data endpoint, not its login server.
    pub data_endpoint: bool,
    /// What the request does, from its route: every event it causes, allowed or refused, carries this name.
    pub operation: Operation,
}

/// The caller's `x-ms-correlation-request-id`, else a new one: it ties the audit events of one request together.
pub fn correlation_id(headers: &HeaderMap) -> String {
    headers
        .get("x-ms-correlation-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string())
}

/// The authority the request names: the edge ([`crate::edge`]) leaves exactly one `Host`, the target's authority
/// when it has one.
pub fn host_of(headers: &HeaderMap, uri: &axum::http::Uri) -> String {
    headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .or_else(|| uri.authority().map(|a| a.to_string()))
        .unwrap_or_default()
}

/// Decodes `Authorization: Basic` into user and password.
pub fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let b64 = v
        .strip_prefix("Basic ")
        .or_else(|| v.strip_prefix("basic "))?;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()?;
    let s = String::from_utf8(raw).ok()?;
    let (u, p) = s.split_once(':')?;
    Some((u.to_string(), p.to_string()))
}

fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    v.strip_prefix("Bearer ")
        .or_else(|| v.strip_prefix("bearer "))
        .map(str::trim)
}

impl RequestCtx {
    /// Classifies a request: registry by Host, origin from the connection, principal from the credentials.
    pub async fn classify(
        state: &AppState,
        parts: &Parts,
        operation: Operation,
    ) -> OciResult<RequestCtx> {
        let mut ctx = Self::classify_unauthenticated(state, parts, operation).await?;
        if let Some(token) = bearer_token(&parts.headers) {
            ctx.principal.presented = true;
            let refused = match state
                .tokens
                .verify_access(token, &ctx.registry.login_server, &ctx.registry.id)
            {
                Ok(claims) if identities::is_current(&state.meta, &claims.subject()).await? => {
                    ctx.principal.access = claims.access();
                    ctx.principal.identity = Some(claims.sub);
                    None
                }
                Ok(claims) => Some(format!(
                    "the token was revoked: service principal {} was deleted or its credentials were reset after it was issued",
                    claims.sub
                )),
                Err(e) => Some(e.to_string()),
            };
            if let Some(why) = refused {
                let mut err = ctx.challenge(None, Some("invalid_token"));
                err.message = format!("{why}: fetch a new token from the realm and retry");
                ctx.audit_denied(state, None, "401", &why);
                return Err(err);
            }
        } else if let Some((user, password)) = basic_credentials(&parts.headers) {
            ctx.principal.presented = true;
            let Some(identity) = identities::authenticate(
                state,
                &ctx.registry,
                ctx.origin.client_ip,
                &user,
                &password,
            )
            .await?
            else {
                ctx.audit_denied(state, None, "401", "invalid username or password");
                let mut err = ctx.challenge(None, None);
                err.message = "invalid username or password".into();
                return Err(err);
            };
            let may = identities::permissions(state, &ctx.registry, &identity.name).await?;
            ctx.principal.access = Access {
                any_repository: may,
                grants: vec![],
            };
            ctx.principal.identity = Some(identity.name);
        }
        Ok(ctx)
    }

    /// The registry and origin, without looking at credentials (the token endpoint reads its own). Requests
    /// to a data endpoint are refused here: it serves only the signed links of [`crate::data_endpoint`].
    pub async fn classify_unauthenticated(
        state: &AppState,
        parts: &Parts,
        operation: Operation,
    ) -> OciResult<RequestCtx> {
        let ctx = Self::classify_origin(state, parts, operation).await?;
        if ctx.data_endpoint {
            return Err(OciError::new(
                Code::Unsupported,
                "this is a data endpoint: it serves only blob download links issued by the login server; send registry requests to the login server",
            )
            .with_status(axum::http::StatusCode::NOT_FOUND));
        }
        Ok(ctx)
    }

    /// The registry (by login server or data endpoint) and the origin, checked against the registry's network
    /// rules before anything else is looked at.
    pub async fn classify_origin(
        state: &AppState,
        parts: &Parts,
        operation: Operation,
    ) -> OciResult<RequestCtx> {
        let host = host_of(&parts.headers, &parts.uri);
        let routed = state.registries.for_host(&host).await?.ok_or_else(|| {
            OciError::new(
                Code::NameUnknown,
                format!("no registry is served at '{host}'"),
            )
        })?;
        let conn = parts.extensions.get::<ConnInfo>().cloned();
        let (listener, private_endpoint) = match conn.map(|c| c.kind) {
            Some(ListenerKind::PrivateEndpoint(id)) => {
                match state.registries.endpoint(&id).await? {
                    Some(pe) => (
                        format!("privateEndpoint/{}", pe.name),
                        Some(PrivateEndpointOrigin {
                            name: pe.name.clone(),
                            registry_id: pe.registry_id.clone(),
                            approved: pe.is_approved(),
                        }),
                    ),
                    // Deleted while its listener was still draining: carries no traffic.
                    None => (
                        "privateEndpoint/(deleted)".to_string(),
                        Some(PrivateEndpointOrigin {
                            name: String::new(),
                            registry_id: String::new(),
                            approved: false,
                        }),
                    ),
                }
            }
            _ => ("public".to_string(), None),
        };
        let origin = Origin {
            client_ip: crate::edge::ClientAddr::of(&parts.extensions),
            listener,
            private_endpoint,
            trusted_service: false,
        };
        let ctx = RequestCtx {
            registry: routed.registry,
            origin,
            principal: Principal {
                identity: None,
                access: Access::default(),
                presented: false,
            },
            user_agent: parts
                .headers
                .get(header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
            correlation_id: correlation_id(&parts.headers),
            started: Instant::now(),
            scheme: if state.config.insecure_http {
                "http"
            } else {
                "https"
            },
            data_endpoint: routed.data_endpoint,
            operation,
        };
        // The network comes before credentials: a refused origin learns nothing, not even whether its
        // password was right.
        if let NetworkDecision::Denied(why) =
            decide_network(&ctx.registry.id, &ctx.registry.settings, &ctx.origin)
        {
            ctx.audit_denied(state, None, "403", &why.to_string());
            return Err(ctx.network_denied());
        }
        Ok(ctx)
    }

    /// ACR's answer to a refused origin, word for word: `az` and people recognise it.
    pub fn network_denied(&self) -> OciError {
        OciError::new(
            Code::Denied,
            format!("client with IP '{}' is not allowed access. Refer https://aka.ms/acr/firewall to grant access.", self.origin.client_ip),
        )
    }

    pub fn realm(&self) -> String {
        format!(
            "{}://{}/oauth2/token",
            self.scheme, self.registry.login_server
        )
    }

    /// A 401 with the Docker token challenge. `scope` is the scope the client must ask for.
    pub fn challenge(&self, scope: Option<&str>, error: Option<&str>) -> OciError {
        let mut c = format!(
            r#"Bearer realm="{}",service="{}""#,
            self.realm(),
            self.registry.login_server
        );
        if let Some(s) = scope {
            c.push_str(&format!(r#",scope="{s}""#));
        }
        if let Some(e) = error {
            c.push_str(&format!(r#",error="{e}""#));
        }
        let mut err = OciError::new(
            Code::Unauthorized,
            "authentication required, visit https://aka.ms/acr/authorization for more information.",
        );
        err.challenge = Some(c);
        err
    }

    fn repo_challenge(&self, repo: &RepositoryName, action: Action) -> OciError {
        let actions = match action {
            Action::Push => "pull,push",
            Action::Delete => "delete",
            Action::MetadataRead => "metadata_read",
            Action::MetadataWrite => "metadata_write",
            Action::DeletedRead => "deleted_read",
            Action::DeletedRestore => "deleted_read,deleted_restore",
            _ => "pull",
        };
        let scope = format!("repository:{repo}:{actions}");
        let mut err = self.challenge(
            Some(&scope),
            self.principal.presented.then_some("insufficient_scope"),
        );
        err.detail = serde_json::json!([{"Type": "repository", "Name": repo.as_str(), "Action": action.as_str()}]);
        err
    }

    /// For actions that write or delete (not egress): the caller's token must carry the action.
    pub fn require(
        &self,
        state: &AppState,
        repo: &RepositoryName,
        action: Action,
    ) -> OciResult<()> {
        if self.principal.access.allows_repo(repo, action) {
            return Ok(());
        }
        if self.principal.presented {
            self.audit_denied(state, Some(repo), "401", "insufficient scope");
        }
        Err(self.repo_challenge(repo, action))
    }

    /// Asks the egress gate. A denial is audited and answered: a missing permission with a challenge (so
    /// the client can fetch a token with the right scope), anything else with `DENIED`.
    pub fn gate(&self, state: &AppState, egress: &Egress) -> OciResult<()> {
        match decide(&self.registry, &self.origin, &self.principal.access, egress) {
            Decision::Allow => Ok(()),
            Decision::Deny(reason) => {
                let repo = egress.repository();
                match &reason {
                    DenyReason::MissingPermission { repository, action } => {
                        if self.principal.presented {
                            self.audit_denied(state, repo, "401", &reason.to_string());
                        }
                        Err(self.repo_challenge(repository, *action))
                    }
                    _ => {
                        self.audit_denied(state, repo, "403", &reason.to_string());
                        Err(match reason {
                            DenyReason::Network(_) => self.network_denied(),
                            _ => OciError::new(Code::Denied, reason.to_string()),
                        })
                    }
                }
            }
        }
    }

    /// [`gate`](Self::gate) for an egress that links blobs (a mount): the gate's `Allow` as the permit the store
    /// writes the link with (DESIGN principle 6).
    pub fn permit(&self, state: &AppState, egress: &Egress) -> OciResult<Permit> {
        self.gate(state, egress)?;
        moat_model::permit(&self.registry, &self.origin, &self.principal.access, egress)
            .map_err(|why| OciError::new(Code::Denied, why.to_string()))
    }

    /// The event of this request (named by its [`operation`](Self::operation)), to be completed by the caller.
    pub fn event(&self, repo: Option<&RepositoryName>, status: u16) -> AuditEvent {
        AuditEvent {
            time_generated: moat_store::time_fmt::now(),
            category: self.operation.category().as_str().into(),
            operation_name: self.operation.as_str().into(),
            registry: self.registry.name.clone(),
            login_server: self.registry.login_server.clone(),
            repository: repo.map(|r| r.to_string()),
            identity: self.principal.identity.clone(),
            caller_ip_address: Some(self.origin.client_ip.to_string()),
            user_agent: self.user_agent.clone(),
            duration_ms: Some(self.started.elapsed().as_millis() as i64),
            result_type: ResultType::of_status(status).as_str().into(),
            result_description: status.to_string(),
            correlation_id: Some(self.correlation_id.clone()),
            endpoint: Some(if self.data_endpoint {
                format!("dataEndpoint ({})", self.origin.listener)
            } else {
                self.origin.listener.clone()
            }),
            ..Default::default()
        }
    }

    /// Records a refusal of this request, under the request's own operation.
    pub fn audit_denied(
        &self,
        state: &AppState,
        repo: Option<&RepositoryName>,
        status: &str,
        why: &str,
    ) {
        let mut e = self.event(repo, 403);
        e.result_type = ResultType::Denied.as_str().into();
        e.result_description = format!("{status}: {why}");
        state.audit.record(e);
    }
}
