//! The one place where management-plane failures become ARM's error envelope.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use moat_model::PolicyError;
use moat_store::meta::UpdateError;
use moat_store::StoreError;
use serde_json::json;

#[derive(Debug)]
pub struct ArmError {
    pub status: StatusCode,
    pub code: String,
    pub message: String,
    pub target: Option<String>,
}

impl ArmError {
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> ArmError {
        ArmError {
            status,
            code: code.into(),
            message: message.into(),
            target: None,
        }
    }

    pub fn with_target(mut self, target: impl Into<String>) -> ArmError {
        self.target = Some(target.into());
        self
    }

    pub fn bad_request(code: &str, message: impl Into<String>) -> ArmError {
        ArmError::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn not_found(what: &str, name: &str) -> ArmError {
        ArmError::new(
            StatusCode::NOT_FOUND,
            "ResourceNotFound",
            format!("The Resource '{what}/{name}' was not found. Check the name and resource group (`moat acr list`)."),
        )
    }

    pub fn invalid_property(path: &str, why: impl Into<String>) -> ArmError {
        ArmError::bad_request(
            "InvalidRequestContent",
            format!("The request content is invalid at '{path}': {}", why.into()),
        )
        .with_target(path)
    }

    pub fn internal(e: impl std::fmt::Display) -> ArmError {
        tracing::error!("management plane internal error: {e}");
        // Not a 500: the Azure SDK retries 5xx for seconds before surfacing them.
        ArmError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "InternalError",
            format!("internal error: {e}"),
        )
    }
}

impl From<StoreError> for ArmError {
    fn from(e: StoreError) -> ArmError {
        match e {
            StoreError::Conflict(m) => ArmError::new(StatusCode::CONFLICT, "Conflict", m),
            StoreError::NotFound => {
                ArmError::new(StatusCode::NOT_FOUND, "ResourceNotFound", "not found")
            }
            StoreError::Limit(m) => ArmError::bad_request("QuotaExceeded", m),
            other => ArmError::internal(other),
        }
    }
}

impl From<PolicyError> for ArmError {
    fn from(e: PolicyError) -> ArmError {
        ArmError::bad_request(e.code(), e.to_string()).with_target(e.target())
    }
}

impl From<UpdateError> for ArmError {
    fn from(e: UpdateError) -> ArmError {
        match e {
            UpdateError::NotFound => ArmError::new(
                StatusCode::NOT_FOUND,
                "ResourceNotFound",
                "registry not found",
            ),
            UpdateError::Policy(p) => p.into(),
            UpdateError::Rejected(m) => ArmError::new(StatusCode::CONFLICT, "Conflict", m),
            UpdateError::Store(s) => s.into(),
        }
    }
}

impl IntoResponse for ArmError {
    fn into_response(self) -> Response {
        let mut error = json!({"code": self.code, "message": self.message});
        if let Some(t) = self.target {
            error["target"] = json!(t);
        }
        (self.status, axum::Json(json!({ "error": error }))).into_response()
    }
}

pub type ArmResult<T> = Result<T, ArmError>;
