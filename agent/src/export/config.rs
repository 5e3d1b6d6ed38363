//! Where to export, from the standard OpenTelemetry environment variables or flags.

use std::{path::PathBuf, time::Duration};

use anyhow::{Context as _, bail};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Protocol {
    Grpc,
    HttpProtobuf,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ExportConfig {
    pub protocol: Protocol,
    /// Full URLs per signal (for gRPC the same base for all).
    pub traces_endpoint: String,
    pub metrics_endpoint: String,
    pub logs_endpoint: String,
    /// Headers per signal (`OTEL_EXPORTER_OTLP_{TRACES,METRICS,LOGS}_HEADERS`, each falling
    /// back to `OTEL_EXPORTER_OTLP_HEADERS`): a backend may take each signal with its own token.
    pub headers: Vec<(String, String)>,
    pub metrics_headers: Vec<(String, String)>,
    pub logs_headers: Vec<(String, String)>,
    pub timeout: Duration,
    /// gzip request bodies (`OTEL_EXPORTER_OTLP_COMPRESSION=gzip`).
    pub gzip: bool,
    /// TLS material for an `https` endpoint, read at start-up.
    pub tls: TlsMaterial,
    /// How long one request is retried before it is dropped (`--export-max-elapsed-s`).
    pub max_elapsed: Duration,
}

/// PEM files for TLS: the CA that signs the backend's certificate (besides the bundled web
/// roots) and the agent's own certificate and key for mutual TLS.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct TlsMaterial {
    pub ca_pem: Option<Vec<u8>>,
    pub client_pem: Option<(Vec<u8>, Vec<u8>)>,
}

/// The TLS files the `OTEL_EXPORTER_OTLP_[TRACES_]CERTIFICATE`, `..._CLIENT_CERTIFICATE` and
/// `..._CLIENT_KEY` variables name.
fn tls_material(env: &impl Fn(&str) -> Option<String>) -> anyhow::Result<TlsMaterial> {
    let var = |name: &str| {
        env(&format!("OTEL_EXPORTER_OTLP_TRACES_{name}"))
            .or_else(|| env(&format!("OTEL_EXPORTER_OTLP_{name}")))
            .filter(|v| !v.trim().is_empty())
    };
    let read = |name: &str| -> anyhow::Result<Option<Vec<u8>>> {
        let Some(path) = var(name) else {
            return Ok(None);
        };
        let path = PathBuf::from(path.trim());
        let pem = std::fs::read(&path)
            .with_context(|| format!("OTEL_EXPORTER_OTLP_{name} {}", path.display()))?;
        if !pem.windows(10).any(|w| w == b"-----BEGIN") {
            bail!(
                "OTEL_EXPORTER_OTLP_{name} {}: not a PEM file",
                path.display()
            );
        }
        Ok(Some(pem))
    };
    let ca_pem = read("CERTIFICATE")?;
    let client_pem = match (read("CLIENT_CERTIFICATE")?, read("CLIENT_KEY")?) {
        (Some(cert), Some(key)) => Some((cert, key)),
        (None, None) => None,
        _ => bail!(
            "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE and OTEL_EXPORTER_OTLP_CLIENT_KEY go together"
        ),
    };
    Ok(TlsMaterial { ca_pem, client_pem })
}

fn parse_protocol(s: &str) -> anyhow::Result<Protocol> {
    match s.trim() {
        "grpc" => Ok(Protocol::Grpc),
        "http/protobuf" => Ok(Protocol::HttpProtobuf),
        other => bail!("unsupported OTLP protocol `{other}`: use grpc or http/protobuf"),
    }
}

/// `k1=v1,k2=v2`, values percent-decoded (W3C baggage format, as the specification says).
pub(crate) fn parse_headers(s: &str) -> anyhow::Result<Vec<(String, String)>> {
    s.split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|pair| {
            let Some((k, v)) = pair.split_once('=') else {
                bail!("header `{pair}` is not key=value");
            };
            Ok((k.trim().to_string(), percent_decode(v.trim())))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(hex) = s.get(i + 1..i + 3)
            && let Ok(b) = u8::from_str_radix(hex, 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Builds the export configuration: flags first, then the `OTEL_EXPORTER_OTLP_*` variables
/// (read through `env`). `None` when no endpoint is configured: the agent then prints instead.
pub(crate) fn resolve(
    env: impl Fn(&str) -> Option<String>,
    endpoint_flag: Option<&str>,
    protocol_flag: Option<&str>,
) -> anyhow::Result<Option<ExportConfig>> {
    let protocol = match protocol_flag
        .map(str::to_string)
        .or_else(|| env("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"))
        .or_else(|| env("OTEL_EXPORTER_OTLP_PROTOCOL"))
    {
        Some(p) => parse_protocol(&p)?,
        // The specification's default.
        None => Protocol::HttpProtobuf,
    };
    let insecure = match env("OTEL_EXPORTER_OTLP_TRACES_INSECURE")
        .or_else(|| env("OTEL_EXPORTER_OTLP_INSECURE"))
        .map(|v| v.trim().to_ascii_lowercase())
        .as_deref()
    {
        None | Some("" | "false") => false,
        Some("true") => true,
        Some(other) => bail!("OTEL_EXPORTER_OTLP_INSECURE `{other}`: use true or false"),
    };
    let base = endpoint_flag
        .map(str::to_string)
        .or_else(|| env("OTEL_EXPORTER_OTLP_ENDPOINT"))
        .map(|e| with_scheme(e.trim(), protocol, insecure));
    let signal = |var: &str, path: &str| -> Option<String> {
        if endpoint_flag.is_none()
            && let Some(e) = env(var)
        {
            return Some(with_scheme(e.trim(), protocol, insecure));
        }
        let base = base.as_ref()?.trim_end_matches('/');
        Some(match protocol {
            Protocol::Grpc => base.to_string(),
            Protocol::HttpProtobuf => format!("{base}/{path}"),
        })
    };
    let Some(traces_endpoint) = signal("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "v1/traces") else {
        return Ok(None);
    };
    let metrics_endpoint = signal("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "v1/metrics")
        .unwrap_or_else(|| sibling(&traces_endpoint, protocol, "v1/metrics"));
    let logs_endpoint = signal("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", "v1/logs")
        .unwrap_or_else(|| sibling(&traces_endpoint, protocol, "v1/logs"));
    let headers_of = |signal: &str| -> anyhow::Result<Vec<(String, String)>> {
        match env(&format!("OTEL_EXPORTER_OTLP_{signal}_HEADERS"))
            .or_else(|| env("OTEL_EXPORTER_OTLP_HEADERS"))
        {
            Some(h) => parse_headers(&h),
            None => Ok(Vec::new()),
        }
    };
    let (headers, metrics_headers, logs_headers) = (
        headers_of("TRACES")?,
        headers_of("METRICS")?,
        headers_of("LOGS")?,
    );
    let timeout_ms = match env("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT")
        .or_else(|| env("OTEL_EXPORTER_OTLP_TIMEOUT"))
    {
        Some(t) => t
            .trim()
            .parse::<u64>()
            .map_err(|_| anyhow::anyhow!("OTEL_EXPORTER_OTLP_TIMEOUT `{t}` is not milliseconds"))?,
        None => 10_000,
    };
    let gzip = match env("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION")
        .or_else(|| env("OTEL_EXPORTER_OTLP_COMPRESSION"))
        .as_deref()
        .map(str::trim)
    {
        None | Some("" | "none") => false,
        Some("gzip") => true,
        Some(other) => bail!("OTEL_EXPORTER_OTLP_COMPRESSION `{other}`: use gzip or none"),
    };
    let tls = tls_material(&env)?;
    // Refused at start-up rather than failing every export later.
    if traces_endpoint.starts_with("http://") && tls != TlsMaterial::default() {
        bail!(
            "export endpoint {traces_endpoint} is plaintext but TLS files are configured: use \
             https://"
        );
    }
    Ok(Some(ExportConfig {
        protocol,
        traces_endpoint,
        metrics_endpoint,
        logs_endpoint,
        headers,
        metrics_headers,
        logs_headers,
        timeout: Duration::from_millis(timeout_ms),
        gzip,
        tls,
        max_elapsed: super::retry::MAX_ELAPSED,
    }))
}

/// A gRPC endpoint given as `host:port` is TLS unless `OTEL_EXPORTER_OTLP_INSECURE` is true, as
/// the specification says; an HTTP one without a scheme is taken as plaintext HTTP. Endpoints
/// with a scheme are kept as they are.
fn with_scheme(endpoint: &str, protocol: Protocol, insecure: bool) -> String {
    if endpoint.contains("://") {
        return endpoint.to_string();
    }
    let scheme = match protocol {
        Protocol::Grpc if !insecure => "https",
        _ => "http",
    };
    format!("{scheme}://{endpoint}")
}

/// Another signal's endpoint next to a traces-only one.
fn sibling(traces: &str, protocol: Protocol, path: &str) -> String {
    match protocol {
        Protocol::Grpc => traces.to_string(),
        Protocol::HttpProtobuf => match traces.strip_suffix("v1/traces") {
            Some(base) => format!("{base}{path}"),
            None => traces.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn nothing_configured_means_no_export() {
        assert_eq!(resolve(env(&[]), None, None).unwrap(), None);
    }

    #[test]
    fn http_appends_signal_paths_to_the_base() {
        let c = resolve(
            env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318/")]),
            None,
            None,
        )
        .unwrap()
        .unwrap();
        assert_eq!(c.protocol, Protocol::HttpProtobuf);
        assert_eq!(c.traces_endpoint, "http://c:4318/v1/traces");
        assert_eq!(c.metrics_endpoint, "http://c:4318/v1/metrics");
        assert_eq!(c.logs_endpoint, "http://c:4318/v1/logs");
        assert_eq!(c.timeout, Duration::from_secs(10));
    }

    #[test]
    fn signal_variables_are_used_as_is_and_grpc_keeps_the_base() {
        let c = resolve(
            env(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
                ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://t:9999/custom"),
            ]),
            None,
            None,
        )
        .unwrap()
        .unwrap();
        assert_eq!(c.traces_endpoint, "http://t:9999/custom");
        assert_eq!(c.metrics_endpoint, "http://c:4318/v1/metrics");
        let g = resolve(
            env(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ]),
            None,
            None,
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            (g.protocol, g.traces_endpoint.as_str()),
            (Protocol::Grpc, "http://c:4317")
        );
    }

    #[test]
    fn flags_win_over_the_environment() {
        let c = resolve(
            env(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://env:4318"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ]),
            Some("http://flag:4318"),
            Some("http/protobuf"),
        )
        .unwrap()
        .unwrap();
        assert_eq!(c.traces_endpoint, "http://flag:4318/v1/traces");
    }

    #[test]
    fn headers_timeout_and_bad_values() {
        let c = resolve(
            env(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
                ("OTEL_EXPORTER_OTLP_HEADERS", "api-key=a%20b, x=1"),
                ("OTEL_EXPORTER_OTLP_TIMEOUT", "2500"),
            ]),
            None,
            None,
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            c.headers,
            vec![("api-key".into(), "a b".into()), ("x".into(), "1".into())]
        );
        assert_eq!(c.metrics_headers, c.headers);
        assert_eq!(c.timeout, Duration::from_millis(2500));
        let per_signal = resolve(
            env(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
                ("OTEL_EXPORTER_OTLP_HEADERS", "k=all"),
                ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "k=traces"),
                ("OTEL_EXPORTER_OTLP_LOGS_HEADERS", "k=logs"),
            ]),
            None,
            None,
        )
        .unwrap()
        .unwrap();
        let value = |h: &[(String, String)]| h[0].1.clone();
        assert_eq!(
            [
                &per_signal.headers,
                &per_signal.metrics_headers,
                &per_signal.logs_headers
            ]
            .map(|h| value(h)),
            ["traces", "all", "logs"]
        );
        assert!(
            resolve(
                env(&[
                    ("OTEL_EXPORTER_OTLP_ENDPOINT", "x"),
                    ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")
                ]),
                None,
                None
            )
            .is_err()
        );
        assert!(
            resolve(
                env(&[
                    ("OTEL_EXPORTER_OTLP_ENDPOINT", "x"),
                    ("OTEL_EXPORTER_OTLP_TIMEOUT", "soon")
                ]),
                None,
                None
            )
            .is_err()
        );
        assert!(parse_headers("novalue").is_err());
    }

    #[test]
    fn compression_and_unusable_endpoints() {
        let base = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318");
        let c = resolve(
            env(&[base, ("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip")]),
            None,
            None,
        );
        assert!(c.unwrap().unwrap().gzip);
        assert!(!resolve(env(&[base]), None, None).unwrap().unwrap().gzip);
        let zstd = resolve(
            env(&[base, ("OTEL_EXPORTER_OTLP_COMPRESSION", "zstd")]),
            None,
            None,
        );
        assert!(zstd.is_err());
        let tls = resolve(env(&[]), Some("https://managed:443"), None);
        assert_eq!(tls.unwrap().unwrap().tls, TlsMaterial::default());
        let dir = std::env::temp_dir().join(format!("culprit-tls-conf-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (ca, junk) = (dir.join("ca.pem"), dir.join("junk.pem"));
        std::fs::write(
            &ca,
            "-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        std::fs::write(&junk, "not pem").unwrap();
        let with = |k: &'static str, v: &std::path::Path| {
            let v = v.display().to_string();
            resolve(
                move |name: &str| (name == k).then(|| v.clone()),
                Some("https://managed:443"),
                None,
            )
        };
        let c = with("OTEL_EXPORTER_OTLP_CERTIFICATE", &ca)
            .unwrap()
            .unwrap();
        assert!(c.tls.ca_pem.is_some());
        assert!(with("OTEL_EXPORTER_OTLP_CERTIFICATE", &junk).is_err());
        assert!(with("OTEL_EXPORTER_OTLP_CERTIFICATE", &dir.join("missing.pem")).is_err());
        // A key without its certificate.
        assert!(with("OTEL_EXPORTER_OTLP_CLIENT_KEY", &ca).is_err());
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn an_endpoint_without_a_scheme_follows_insecure() {
        let grpc = |insecure: Option<&'static str>| {
            let mut vars = vec![
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4317"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ];
            vars.extend(insecure.map(|v| ("OTEL_EXPORTER_OTLP_INSECURE", v)));
            resolve(env(&vars), None, None).map(|c| c.unwrap().traces_endpoint)
        };
        assert_eq!(grpc(None).unwrap(), "https://collector:4317");
        assert_eq!(grpc(Some("false")).unwrap(), "https://collector:4317");
        assert_eq!(grpc(Some("TRUE")).unwrap(), "http://collector:4317");
        assert!(grpc(Some("yes")).is_err());
        let http = resolve(
            env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318")]),
            None,
            None,
        );
        assert_eq!(
            http.unwrap().unwrap().traces_endpoint,
            "http://collector:4318/v1/traces"
        );
        // A scheme given wins over the variable.
        let kept = resolve(
            env(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://c:4317"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
                ("OTEL_EXPORTER_OTLP_INSECURE", "true"),
            ]),
            None,
            None,
        );
        assert_eq!(kept.unwrap().unwrap().traces_endpoint, "https://c:4317");
    }
}
