//! Bearer-token check for the TCP listener. The token is read once from a file; requests
//! are compared in constant time (over sha256 digests, so the length does not leak either).

use std::path::Path;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::routes::error_json;
use super::HooksError;

/// Paths open to anyone who can reach the TCP port (probes).
const OPEN_PATHS: &[&str] = &["/healthz", "/readyz"];

#[derive(Clone)]
pub struct Token([u8; 32]);

impl Token {
    pub fn from_file(path: &Path) -> Result<Token, HooksError> {
        let text = std::fs::read_to_string(path).map_err(|e| HooksError::Token {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        let token = text.trim();
        if token.is_empty() {
            return Err(HooksError::Token {
                path: path.to_path_buf(),
                reason: "the file is empty".into(),
            });
        }
        Ok(Token(Sha256::digest(token.as_bytes()).into()))
    }

    pub fn matches(&self, presented: &str) -> bool {
        let d: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        self.0.ct_eq(&d).into()
    }
}

/// Middleware for the TCP router.
pub async fn require_token(State(token): State<Token>, req: Request, next: Next) -> Response {
    if OPEN_PATHS.contains(&req.uri().path()) {
        return next.run(req).await;
    }
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match presented {
        Some(t) if token.matches(t.trim()) => next.run(req).await,
        Some(_) => error_json(StatusCode::UNAUTHORIZED, "invalid bearer token").into_response(),
        None => error_json(
            StatusCode::UNAUTHORIZED,
            "missing bearer token: send 'Authorization: Bearer <token from hooks.token_file>'",
        )
        .into_response(),
    }
}
