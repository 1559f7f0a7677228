//! The one place where failures become the OCI Distribution spec's error JSON.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use moat_store::StoreError;
use serde_json::json;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    BlobUnknown,
    BlobUploadInvalid,
    BlobUploadUnknown,
    DigestInvalid,
    ManifestBlobUnknown,
    ManifestInvalid,
    ManifestUnknown,
    TagUnknown,
    NameInvalid,
    NameUnknown,
    SizeInvalid,
    Unauthorized,
    Denied,
    Unsupported,
    TooManyRequests,
    RangeInvalid,
    /// A failure of the server's own (storage, database): Distribution's `UNKNOWN`, a 500.
    Unknown,
    /// The blob storage did not answer: Distribution's `UNAVAILABLE`, a 503 with `Retry-After` (it comes back by
    /// itself, and nothing acknowledged was lost).
    Unavailable,
}

/// `405 UNSUPPORTED` for a method the endpoint does not answer.
pub fn method_not_allowed(method: &axum::http::Method) -> OciError {
    OciError::new(
        Code::Unsupported,
        format!("{method} is not supported on this endpoint"),
    )
    .with_status(StatusCode::METHOD_NOT_ALLOWED)
}

impl Code {
    fn as_str(self) -> &'static str {
        match self {
            Code::BlobUnknown => "BLOB_UNKNOWN",
            Code::BlobUploadInvalid | Code::RangeInvalid => "BLOB_UPLOAD_INVALID",
            Code::BlobUploadUnknown => "BLOB_UPLOAD_UNKNOWN",
            Code::DigestInvalid => "DIGEST_INVALID",
            Code::ManifestBlobUnknown => "MANIFEST_BLOB_UNKNOWN",
            Code::ManifestInvalid => "MANIFEST_INVALID",
            Code::ManifestUnknown => "MANIFEST_UNKNOWN",
            Code::TagUnknown => "TAG_UNKNOWN",
            Code::NameInvalid => "NAME_INVALID",
            Code::NameUnknown => "NAME_UNKNOWN",
            Code::SizeInvalid => "SIZE_INVALID",
            Code::Unauthorized => "UNAUTHORIZED",
            Code::Denied => "DENIED",
            Code::Unsupported => "UNSUPPORTED",
            Code::TooManyRequests => "TOOMANYREQUESTS",
            Code::Unknown => "UNKNOWN",
            Code::Unavailable => "UNAVAILABLE",
        }
    }

    fn status(self) -> StatusCode {
        match self {
            Code::BlobUnknown
            | Code::BlobUploadUnknown
            | Code::ManifestUnknown
            | Code::TagUnknown
            | Code::NameUnknown => StatusCode::NOT_FOUND,
            Code::Unauthorized => StatusCode::UNAUTHORIZED,
            Code::Denied => StatusCode::FORBIDDEN,
            Code::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
            Code::RangeInvalid => StatusCode::RANGE_NOT_SATISFIABLE,
            Code::Unsupported => StatusCode::METHOD_NOT_ALLOWED,
            Code::Unknown => StatusCode::INTERNAL_SERVER_ERROR,
            Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

#[derive(Debug)]
pub struct OciError {
    pub code: Code,
    pub message: String,
    pub detail: serde_json::Value,
    pub status: Option<StatusCode>,
    /// `WWW-Authenticate` for 401s.
    pub challenge: Option<String>,
    /// Extra headers a client needs to recover (e.g. `Range` and `Location` on a 416).
    pub headers: Vec<(header::HeaderName, String)>,
}

impl OciError {
    pub fn new(code: Code, message: impl Into<String>) -> OciError {
        OciError {
            code,
            message: message.into(),
            detail: serde_json::Value::Null,
            status: None,
            challenge: None,
            headers: vec![],
        }
    }

    pub fn with_status(mut self, status: StatusCode) -> OciError {
        self.status = Some(status);
        self
    }

    pub fn with_detail(mut self, detail: serde_json::Value) -> OciError {
        self.detail = detail;
        self
    }

    pub fn with_header(mut self, name: header::HeaderName, value: impl Into<String>) -> OciError {
        self.headers.push((name, value.into()));
        self
    }

    pub fn status(&self) -> StatusCode {
        self.status.unwrap_or(self.code.status())
    }

    /// A failure of the server's own: `500 UNKNOWN`, not a code that blames the request. (A 503 would tell
    /// clients the service is overloaded and to come back, which a broken disk will not fix.)
    pub fn internal(what: impl std::fmt::Display) -> OciError {
        tracing::error!("internal error: {what}");
        OciError::new(Code::Unknown, format!("internal error: {what}"))
    }

    pub fn blob_unknown() -> OciError {
        OciError::new(Code::BlobUnknown, "blob unknown to registry")
    }

    pub fn manifest_unknown() -> OciError {
        OciError::new(Code::ManifestUnknown, "manifest unknown")
    }

    pub fn upload_unknown() -> OciError {
        OciError::new(Code::BlobUploadUnknown, "blob upload unknown to registry")
    }
}

impl From<StoreError> for OciError {
    fn from(e: StoreError) -> OciError {
        match e {
            StoreError::ManifestBlobUnknown(d) => OciError::new(
                Code::ManifestBlobUnknown,
                format!(
                    "manifest references {d}, which this repository does not hold: push it first"
                ),
            )
            .with_detail(json!({"digest": d.as_str()})),
            StoreError::UploadUnknown => OciError::upload_unknown(),
            StoreError::DigestMismatch { expected, actual } => OciError::new(
                Code::DigestInvalid,
                format!("provided digest {expected} does not match content digest {actual}"),
            ),
            StoreError::NotFound => OciError::new(Code::NameUnknown, "not found"),
            StoreError::Io(e) => e.into(),
            other => OciError::internal(other),
        }
    }
}

/// Seconds a client is told to wait when the blob storage is down.
pub const STORAGE_RETRY_AFTER: u32 = 5;

impl From<std::io::Error> for OciError {
    fn from(e: std::io::Error) -> OciError {
        if let Some(u) = e
            .get_ref()
            .and_then(|i| i.downcast_ref::<moat_store::StorageUnavailable>())
        {
            tracing::warn!("{u}");
            return OciError::new(
                Code::Unavailable,
                format!("blob storage {} is unavailable: try again shortly", u.store),
            )
            .with_header(header::RETRY_AFTER, STORAGE_RETRY_AFTER.to_string());
        }
        OciError::internal(e)
    }
}

impl IntoResponse for OciError {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut error = json!({"code": self.code.as_str(), "message": self.message});
        // `detail` is optional in the spec, and ACR leaves it out when there is none.
        if !self.detail.is_null() {
            error["detail"] = self.detail;
        }
        let body = json!({ "errors": [error] });
        let mut resp = (status, axum::Json(body)).into_response();
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=utf-8"),
        );
        if let Some(c) = self.challenge.and_then(|c| HeaderValue::from_str(&c).ok()) {
            h.insert(header::WWW_AUTHENTICATE, c);
        }
        for (name, value) in self.headers {
            if let Ok(v) = HeaderValue::from_str(&value) {
                h.insert(name, v);
            }
        }
        resp
    }
}

pub type OciResult<T> = Result<T, OciError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn internal_errors_are_500_unknown() {
        let resp =
            OciError::from(StoreError::Io(std::io::Error::other("a broken row"))).into_response();
        assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(resp.headers().get(header::RETRY_AFTER).is_none());
        let body = axum::body::to_bytes(resp.into_body(), 1 << 16)
            .await
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["errors"][0]["code"], "UNKNOWN");
        assert!(v["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("a broken row"));
    }
}
