//! The activation client: one `POST /v1/activate` to the vendor's server.
//!
//! - HTTP or HTTPS (rustls with the Mozilla root store, no system OpenSSL needed).
//! - Timeouts: connect and whole request, 10 s and 30 s by default.
//! - Proxy: `HTTPS_PROXY` for an `https://` server and `HTTP_PROXY` for `http://`
//!   (lower-case names too, then `ALL_PROXY`), unless `NO_PROXY` names the host.
//! - TLS trusts the Mozilla root store, plus the PEM certificates in the file named by
//!   `OUTPOST_LICENSE_CA` (a vendor's private CA, or a company's TLS-inspecting proxy).
//! - A server that cannot be reached is [`LicenseError::NoNetwork`] (2010); a refusal
//!   carries the server's code (2xxx rule or 5xxx); a reply that is not the protocol
//!   is a 5100 server error.

use std::io::Read;
use std::time::Duration;

use crate::error::{LicenseError, Result, PROTOCOL_ERROR};
use crate::license_file::{LicenseFile, MAX_FILE_BYTES};
use crate::protocol::{ActivationRequest, ActivationResponse, ErrorBody, ACTIVATE_PATH};

/// Default connect timeout.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default timeout for the whole request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Talks to one activation server.
#[derive(Debug, Clone)]
pub struct ActivationClient {
    agent: ureq::Agent,
    base: String,
}

impl ActivationClient {
    /// A client for `server` (`http://host:port` or `https://...`, with or without a
    /// trailing path), with the default timeouts and the proxy from the environment.
    pub fn new(server: &str) -> Result<ActivationClient> {
        ActivationClient::with_env(server, CONNECT_TIMEOUT, REQUEST_TIMEOUT, |k| {
            std::env::var(k).ok()
        })
    }

    /// Like [`ActivationClient::new`], with explicit timeouts and environment.
    pub fn with_env(
        server: &str,
        connect: Duration,
        total: Duration,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<ActivationClient> {
        let base = server.trim().trim_end_matches('/').to_string();
        let host = host_of(&base).ok_or_else(|| LicenseError::Server {
            code: PROTOCOL_ERROR,
            message: "the activation server URL must start with http:// or https://".into(),
        })?;
        let mut builder = ureq::AgentBuilder::new()
            .timeout_connect(connect)
            .timeout(total)
            .user_agent(concat!("outpost/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = env(CA_ENV).filter(|p| !p.trim().is_empty()) {
            builder = builder.tls_config(tls_with_extra_roots(std::path::Path::new(path.trim()))?);
        }
        if let Some(proxy) = proxy_for(&base, &host, &env) {
            let proxy = ureq::Proxy::new(&proxy).map_err(|e| LicenseError::Server {
                code: PROTOCOL_ERROR,
                message: format!("invalid proxy setting: {e}"),
            })?;
            builder = builder.proxy(proxy);
        }
        Ok(ActivationClient {
            agent: builder.build(),
            base,
        })
    }

    /// Sends the request and returns the signed licence (not yet checked against a
    /// package: the caller verifies it before installing it).
    pub fn activate(&self, request: &ActivationRequest) -> Result<LicenseFile> {
        let body = serde_json::to_vec(request).map_err(|e| LicenseError::Server {
            code: PROTOCOL_ERROR,
            message: e.to_string(),
        })?;
        let url = format!("{}{ACTIVATE_PATH}", self.base);
        let reply = self
            .agent
            .post(&url)
            .set("Content-Type", "application/json")
            .send_bytes(&body);
        let (status, response) = match reply {
            Ok(r) => (r.status(), r),
            Err(ureq::Error::Status(code, r)) => (code, r),
            Err(ureq::Error::Transport(t)) => {
                return Err(LicenseError::NoNetwork(transport_reason(&t)))
            }
        };
        let mut bytes = Vec::new();
        response
            .into_reader()
            .take(MAX_FILE_BYTES as u64 * 2)
            .read_to_end(&mut bytes)
            .map_err(|e| LicenseError::NoNetwork(format!("reply cut short: {e}")))?;
        if status == 200 {
            let ok: ActivationResponse =
                serde_json::from_slice(&bytes).map_err(|e| LicenseError::Server {
                    code: PROTOCOL_ERROR,
                    message: format!("the server's reply is not a licence: {e}"),
                })?;
            // Re-parse through the file checks so a bad licence is caught here.
            return LicenseFile::parse(&ok.license.to_json(), "server reply");
        }
        match serde_json::from_slice::<ErrorBody>(&bytes) {
            Ok(e) => Err(LicenseError::from_server(
                e.error_code,
                &e.message,
                e.detail,
            )),
            Err(_) => Err(LicenseError::Server {
                code: PROTOCOL_ERROR,
                message: format!("HTTP {status} without an Outpost error body"),
            }),
        }
    }
}

/// Environment variable naming a PEM file of extra trusted root certificates.
pub const CA_ENV: &str = "OUTPOST_LICENSE_CA";

/// rustls with the Mozilla roots and the certificates of a PEM file.
fn tls_with_extra_roots(path: &std::path::Path) -> Result<std::sync::Arc<rustls::ClientConfig>> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::CertificateDer;
    let bad = |why: String| LicenseError::Server {
        code: PROTOCOL_ERROR,
        message: format!("{CA_ENV}: {why}"),
    };
    let pem = std::fs::read(path).map_err(|e| {
        bad(format!(
            "cannot read {}: {e}",
            crate::error::file_name(path)
        ))
    })?;
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let mut added = 0;
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| bad(format!("not a PEM certificate: {e}")))?;
        roots
            .add(cert)
            .map_err(|e| bad(format!("unusable certificate: {e}")))?;
        added += 1;
    }
    if added == 0 {
        return Err(bad("no certificate in the file".into()));
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(std::sync::Arc::new(config))
}

/// A short reason for a transport failure (no URL: it may hold credentials).
fn transport_reason(t: &ureq::Transport) -> String {
    use std::error::Error as _;
    // TLS failures arrive as "connection failed" with the rustls error as the source.
    if let Some(source) = t.source().map(|s| s.to_string()) {
        if source.contains("certificate") {
            return format!(
                "TLS certificate not trusted ({source}); set {CA_ENV} for a private CA"
            );
        }
    }
    match t.kind() {
        ureq::ErrorKind::Dns => "host name not found".into(),
        ureq::ErrorKind::ConnectionFailed => match t.message() {
            Some(m) if m.starts_with("tls") => "TLS handshake failed".into(),
            _ => "connection refused or unreachable".into(),
        },
        ureq::ErrorKind::ProxyConnect | ureq::ErrorKind::ProxyUnauthorized => {
            "the proxy refused the connection".into()
        }
        ureq::ErrorKind::Io => match t.message() {
            Some(m) if m.contains("timed out") => "timed out".into(),
            _ => "connection failed".into(),
        },
        kind => kind.to_string(),
    }
}

/// `host` of `scheme://[user@]host[:port][/path]`, lower-cased.
fn host_of(url: &str) -> Option<String> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))?;
    let authority = rest.split('/').next()?;
    let host_port = authority.rsplit('@').next()?;
    let host = if let Some(v6) = host_port.strip_prefix('[') {
        v6.split(']').next()?
    } else {
        host_port.split(':').next()?
    };
    (!host.is_empty()).then(|| host.to_ascii_lowercase())
}

/// The proxy for this URL from the environment, honouring `NO_PROXY`.
fn proxy_for(url: &str, host: &str, env: &impl Fn(&str) -> Option<String>) -> Option<String> {
    let get = |k: &str| {
        env(k)
            .or_else(|| env(&k.to_ascii_lowercase()))
            .filter(|v| !v.trim().is_empty())
    };
    if let Some(no) = get("NO_PROXY") {
        let skip = no
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .any(|p| {
                let p = p.trim_start_matches('.').to_ascii_lowercase();
                p == "*" || host == p || host.ends_with(&format!(".{p}"))
            });
        if skip {
            return None;
        }
    }
    let scheme_var = if url.starts_with("https://") {
        "HTTPS_PROXY"
    } else {
        "HTTP_PROXY"
    };
    get(scheme_var).or_else(|| get("ALL_PROXY"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k: &str| m.get(k).cloned()
    }

    #[test]
    fn proxy_follows_scheme_and_no_proxy() {
        let e = env(&[
            ("HTTPS_PROXY", "http://sec:3128"),
            ("http_proxy", "http://plain:3128"),
        ]);
        assert_eq!(
            proxy_for("https://lic.acme.com", "lic.acme.com", &e).as_deref(),
            Some("http://sec:3128")
        );
        assert_eq!(
            proxy_for("http://lic.acme.com", "lic.acme.com", &e).as_deref(),
            Some("http://plain:3128")
        );
        let e = env(&[
            ("HTTP_PROXY", "http://p:1"),
            ("NO_PROXY", "localhost, .acme.com"),
        ]);
        assert_eq!(proxy_for("http://lic.acme.com", "lic.acme.com", &e), None);
        assert_eq!(proxy_for("http://localhost:8", "localhost", &e), None);
        assert_eq!(
            proxy_for("http://other.org", "other.org", &e).as_deref(),
            Some("http://p:1")
        );
        assert_eq!(
            proxy_for("http://x", "x", &env(&[("ALL_PROXY", "http://a:2")])).as_deref(),
            Some("http://a:2")
        );
        assert_eq!(proxy_for("http://x", "x", &env(&[])), None);
    }

    #[test]
    fn hosts_are_extracted() {
        assert_eq!(
            host_of("https://Lic.Acme.com:8443/base").as_deref(),
            Some("lic.acme.com")
        );
        assert_eq!(
            host_of("http://user:pw@10.0.0.1:80").as_deref(),
            Some("10.0.0.1")
        );
        assert_eq!(host_of("http://[::1]:9000").as_deref(), Some("::1"));
        assert_eq!(host_of("ftp://x"), None);
        assert!(ActivationClient::new("lic.acme.com").is_err());
    }
}
