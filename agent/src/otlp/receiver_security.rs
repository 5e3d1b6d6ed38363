//! What a sender must show before its requests are read: TLS (the agent's certificate, and with
//! a client CA the sender's own: mutual TLS) and a bearer token. Both apply to the TCP
//! receivers, which pods reach over the network; the unix sockets are reached only by pods that
//! mount them, and name their sender from the kernel.

use std::{path::Path, sync::Arc};

use anyhow::{Context as _, bail};
use axum::{
    extract::Request,
    http::{HeaderValue, StatusCode, header},
    middleware::Next,
    response::{IntoResponse as _, Response},
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _};
use tokio_rustls::TlsAcceptor;

/// The TLS and token the TCP receivers require; none by default.
#[derive(Clone, Default)]
pub struct ReceiverSecurity {
    pub(crate) tls: Option<TlsAcceptor>,
    /// Whether senders must present a certificate of the client CA.
    mutual: bool,
    bearer: Option<Arc<str>>,
}

/// Where the receivers' TLS material and token come from (`culprit agent --otlp-tls-*`).
#[derive(Debug, Default, Clone, Copy)]
pub struct SecurityFiles<'a> {
    pub cert: Option<&'a Path>,
    pub key: Option<&'a Path>,
    pub client_ca: Option<&'a Path>,
    pub bearer_token: Option<&'a Path>,
}

fn certificates(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("reading the certificates in {}", path.display()))?;
    if certs.is_empty() {
        bail!("{}: no PEM certificate in it", path.display());
    }
    Ok(certs)
}

impl ReceiverSecurity {
    /// Reads and checks every file at start-up: a receiver that cannot serve what it was asked
    /// to fails the agent's start with the reason, never at the first sender.
    pub fn from_files(files: SecurityFiles<'_>) -> anyhow::Result<Self> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = match (files.cert, files.key) {
            (None, None) => {
                if files.client_ca.is_some() {
                    bail!("--otlp-tls-client-ca needs --otlp-tls-cert and --otlp-tls-key");
                }
                None
            }
            (Some(cert), Some(key)) => {
                let chain = certificates(cert)?;
                let key = PrivateKeyDer::from_pem_file(key)
                    .with_context(|| format!("reading the private key in {}", key.display()))?;
                let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
                    .with_safe_default_protocol_versions()?;
                let builder = match files.client_ca {
                    Some(ca) => {
                        let mut roots = rustls::RootCertStore::empty();
                        for cert in certificates(ca)? {
                            roots.add(cert).with_context(|| {
                                format!("{}: not a usable CA certificate", ca.display())
                            })?;
                        }
                        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                            Arc::new(roots),
                            provider,
                        )
                        .build()?;
                        builder.with_client_cert_verifier(verifier)
                    }
                    None => builder.with_no_client_auth(),
                };
                let mut config = builder.with_single_cert(chain, key).with_context(|| {
                    format!(
                        "{} and {}: the key does not match the certificate",
                        cert.display(),
                        files.key.unwrap_or(cert).display()
                    )
                })?;
                // gRPC clients insist on negotiating HTTP/2; OTLP/HTTP SDKs speak HTTP/1.1.
                config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
                Some(TlsAcceptor::from(Arc::new(config)))
            }
            _ => bail!("--otlp-tls-cert and --otlp-tls-key go together"),
        };
        let bearer = match files.bearer_token {
            Some(path) => {
                let token = std::fs::read_to_string(path)
                    .with_context(|| format!("reading the bearer token in {}", path.display()))?;
                let token = token.trim();
                if token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()) {
                    bail!(
                        "{}: the bearer token must be one line of printable characters",
                        path.display()
                    );
                }
                Some(Arc::from(token))
            }
            None => None,
        };
        Ok(Self {
            mutual: files.client_ca.is_some() && tls.is_some(),
            tls,
            bearer,
        })
    }

    /// How the receivers are protected, as `culprit status` shows it next to their address.
    pub(crate) fn describe(&self) -> String {
        let tls = match (&self.tls, self.mutual) {
            (Some(_), true) => Some("mTLS"),
            (Some(_), false) => Some("TLS"),
            (None, _) => None,
        };
        let token = self.bearer.is_some().then_some("bearer token");
        match (tls, token) {
            (Some(t), Some(b)) => format!(" ({t}, {b})"),
            (Some(t), None) | (None, Some(t)) => format!(" ({t})"),
            (None, None) => String::new(),
        }
    }

    /// `router` answering only requests that carry the token, when one is required; each
    /// refusal is reported to `on_refused`.
    pub(crate) fn guard(
        &self,
        router: axum::Router,
        on_refused: impl Fn() + Clone + Send + Sync + 'static,
    ) -> axum::Router {
        let Some(token) = self.bearer.clone() else {
            return router;
        };
        router.layer(axum::middleware::from_fn(
            move |req: Request, next: Next| {
                let (token, on_refused) = (token.clone(), on_refused.clone());
                async move {
                    if carries_token(&req, &token) {
                        next.run(req).await
                    } else {
                        on_refused();
                        unauthenticated(is_grpc(&req))
                    }
                }
            },
        ))
    }
}

fn is_grpc(req: &Request) -> bool {
    req.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"))
}

/// Whether `Authorization` is `Bearer <token>` (the scheme in any case), compared in constant
/// time so that the answer's timing does not reveal how much of a guess was right.
fn carries_token(req: &Request, token: &str) -> bool {
    let Some(value) = req.headers().get(header::AUTHORIZATION) else {
        return false;
    };
    let value = value.as_bytes();
    let (scheme, presented) = value.split_at(value.len().min(7));
    scheme.eq_ignore_ascii_case(b"bearer ") && constant_time_eq(presented, token.as_bytes())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The refusal each protocol's clients understand: gRPC's UNAUTHENTICATED (which SDKs do not
/// retry), or HTTP 401 with the scheme to use.
fn unauthenticated(grpc: bool) -> Response {
    if grpc {
        let mut res = StatusCode::OK.into_response();
        let headers = res.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        headers.insert("grpc-status", HeaderValue::from_static("16"));
        headers.insert(
            "grpc-message",
            HeaderValue::from_static("missing%20or%20wrong%20bearer%20token"),
        );
        res
    } else {
        let mut res = (StatusCode::UNAUTHORIZED, "missing or wrong bearer token\n").into_response();
        res.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        res
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(auth: Option<&str>, content_type: &str) -> Request {
        let mut b = Request::builder().header(header::CONTENT_TYPE, content_type);
        if let Some(a) = auth {
            b = b.header(header::AUTHORIZATION, a);
        }
        b.body(axum::body::Body::empty()).unwrap()
    }

    #[test]
    fn only_the_exact_token_passes() {
        let t = "s3cret-token";
        let ok = |a: Option<&str>| carries_token(&request(a, "x"), t);
        assert!(ok(Some("Bearer s3cret-token")));
        assert!(ok(Some("bearer s3cret-token")));
        assert!(!ok(Some("Bearer s3cret-tokeN")));
        assert!(!ok(Some("Bearer s3cret-token ")));
        assert!(!ok(Some("Bearer s3cret")));
        assert!(!ok(Some("Basic s3cret-token")));
        assert!(!ok(Some("Bearer")));
        assert!(!ok(Some("")));
        assert!(!ok(None));
    }

    #[test]
    fn refusals_speak_each_protocol() {
        let grpc = unauthenticated(is_grpc(&request(None, "application/grpc+proto")));
        assert_eq!(grpc.status(), StatusCode::OK);
        assert_eq!(grpc.headers()["grpc-status"], "16");
        let http = unauthenticated(is_grpc(&request(None, "application/x-protobuf")));
        assert_eq!(http.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(http.headers()[header::WWW_AUTHENTICATE], "Bearer");
    }

    #[test]
    fn bad_files_fail_at_start_with_the_reason() {
        let dir = std::env::temp_dir().join(format!("culprit-rsec-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (junk, empty, token) = (dir.join("junk"), dir.join("empty"), dir.join("token"));
        std::fs::write(&junk, "not pem").unwrap();
        std::fs::write(&empty, "\n").unwrap();
        std::fs::write(&token, "abc\n").unwrap();
        let err = |files: SecurityFiles<'_>| {
            ReceiverSecurity::from_files(files)
                .err()
                .map(|e| format!("{e:#}"))
                .unwrap_or_default()
        };
        let only_cert = SecurityFiles {
            cert: Some(&junk),
            ..SecurityFiles::default()
        };
        assert!(err(only_cert).contains("go together"));
        let junk_pair = SecurityFiles {
            cert: Some(&junk),
            key: Some(&junk),
            ..SecurityFiles::default()
        };
        assert!(
            err(junk_pair).contains("no PEM certificate"),
            "{}",
            err(junk_pair)
        );
        let ca_alone = SecurityFiles {
            client_ca: Some(&junk),
            ..SecurityFiles::default()
        };
        assert!(err(ca_alone).contains("needs --otlp-tls-cert"));
        let no_token = SecurityFiles {
            bearer_token: Some(&empty),
            ..SecurityFiles::default()
        };
        assert!(err(no_token).contains("printable"));
        let good = ReceiverSecurity::from_files(SecurityFiles {
            bearer_token: Some(&token),
            ..SecurityFiles::default()
        })
        .unwrap();
        assert_eq!(good.bearer.as_deref(), Some("abc"));
        assert_eq!(good.describe(), " (bearer token)");
        assert_eq!(ReceiverSecurity::default().describe(), "");
        std::fs::remove_dir_all(&dir).ok();
    }
}
