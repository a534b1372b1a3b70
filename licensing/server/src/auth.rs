//! Admin tokens: `Authorization: Bearer <token>` on `/v1/admin/*`.
//!
//! Tokens come from a file (one per line; blank lines and `#` comments ignored) and/or
//! the `OUTPOST_ADMIN_TOKENS` environment variable (comma-separated). A presented
//! token and every configured one are hashed with SHA-256 and the digests compared in
//! constant time, against all tokens without stopping at a match, so neither the
//! comparison nor the token lengths leak through timing.

use std::path::Path;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Shortest token accepted in the configuration.
pub const MIN_TOKEN_LEN: usize = 16;

/// Failure loading the tokens.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The token file cannot be read.
    #[error("cannot read the admin token file {file}: {reason}")]
    Io {
        /// The file.
        file: String,
        /// The operating-system reason.
        reason: String,
    },
    /// A token is too short to be a secret.
    #[error("admin tokens must be at least {MIN_TOKEN_LEN} characters")]
    TooShort,
}

/// The configured admin tokens, kept as SHA-256 digests.
#[derive(Debug, Clone, Default)]
pub struct AdminTokens {
    digests: Vec<[u8; 32]>,
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl AdminTokens {
    /// Tokens from an optional file and an optional comma-separated list.
    pub fn load(file: Option<&Path>, env_list: Option<&str>) -> Result<AdminTokens, TokenError> {
        let mut tokens: Vec<String> = Vec::new();
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|e| TokenError::Io {
                file: path.display().to_string(),
                reason: e.to_string(),
            })?;
            tokens.extend(
                text.lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty() && !l.starts_with('#'))
                    .map(String::from),
            );
        }
        if let Some(list) = env_list {
            tokens.extend(
                list.split(',')
                    .map(str::trim)
                    .filter(|t| !t.is_empty())
                    .map(String::from),
            );
        }
        if tokens.iter().any(|t| t.len() < MIN_TOKEN_LEN) {
            return Err(TokenError::TooShort);
        }
        Ok(AdminTokens {
            digests: tokens.iter().map(|t| digest(t)).collect(),
        })
    }

    /// True when no token is configured (the admin API then refuses everything).
    pub fn is_empty(&self) -> bool {
        self.digests.is_empty()
    }

    /// Checks a presented token. Returns the token's id (the first 8 hex of its
    /// SHA-256, for the audit trail) when it matches a configured one.
    pub fn check(&self, presented: &str) -> Option<String> {
        let d = digest(presented);
        let mut matched = subtle::Choice::from(0u8);
        for known in &self.digests {
            matched |= known.ct_eq(&d);
        }
        // Branch only on the final result.
        bool::from(matched).then(|| hex::encode(&d[..4]))
    }

    /// The token of an `Authorization` header value (`Bearer <token>`).
    pub fn bearer(header: &str) -> Option<&str> {
        let (scheme, token) = header.trim().split_once(' ')?;
        scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| token.trim())
            .filter(|t| !t.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_from_file_and_env_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("tokens");
        std::fs::write(&f, "# admins\nfile-token-0123456789\n\n").unwrap();
        let t = AdminTokens::load(
            Some(&f),
            Some("env-token-0123456789, other-token-0123456789"),
        )
        .unwrap();
        assert!(t.check("file-token-0123456789").is_some());
        assert!(t.check("other-token-0123456789").is_some());
        assert!(t.check("env-token-012345678").is_none());
        assert!(t.check("").is_none());
        assert_eq!(
            t.check("file-token-0123456789"),
            t.check("file-token-0123456789")
        );
        assert!(AdminTokens::load(None, Some("short")).is_err());
        assert!(AdminTokens::load(None, None).unwrap().is_empty());
    }

    #[test]
    fn bearer_header_parsing() {
        assert_eq!(AdminTokens::bearer("Bearer abc"), Some("abc"));
        assert_eq!(AdminTokens::bearer("bearer  abc "), Some("abc"));
        assert_eq!(AdminTokens::bearer("Basic abc"), None);
        assert_eq!(AdminTokens::bearer("Bearer"), None);
    }
}
