//! The local API's contract: each endpoint's JSON for a fixed picture of what an agent saw,
//! compared with the golden files in `tests/golden/` (tools and scripts depend on these
//! shapes). `CULPRIT_UPDATE_GOLDEN=1 cargo test -p culprit --test api_contract` rewrites them
//! after an intended change; review the diff. Then the same answers over the unix socket.

mod common;

use std::{os::unix::fs::PermissionsExt as _, path::PathBuf};

use common::{NOW_MS, SLOW_SPAN, SLOW_TRACE, view};
use culprit::live::{
    api,
    client::{self, Endpoint},
    view::RequestView,
};
use serde_json::Value;

fn golden(name: &str, actual: &impl serde::Serialize) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(format!("{name}.json"));
    let actual = serde_json::to_string_pretty(actual).expect("serializable") + "\n";
    if std::env::var_os("CULPRIT_UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &actual).expect("writing the golden file");
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|_| {
        panic!(
            "{} is missing: run with CULPRIT_UPDATE_GOLDEN=1",
            path.display()
        )
    });
    assert_eq!(
        actual,
        expected,
        "{name} differs from {}; if the change is intended, rerun with CULPRIT_UPDATE_GOLDEN=1",
        path.display()
    );
}

const WINDOW_MS: u64 = 60_000;

#[test]
fn health_matches_its_golden_file() {
    golden("health", &view(false).health(NOW_MS));
    golden("health_degraded", &view(true).health(NOW_MS));
}

#[test]
fn requests_match_their_golden_files() {
    let v = view(false);
    golden("requests", &v.requests(100, 0.0));
    golden("requests_min_50ms", &v.requests(100, 50.0));
    golden("request_by_trace", &v.request(SLOW_TRACE));
    // Span ids work too, in any case.
    assert_eq!(v.request(&SLOW_SPAN.to_uppercase()), v.request(SLOW_TRACE));
    assert!(v.request("ffff").is_empty());
}

#[test]
fn summaries_match_their_golden_files() {
    let v = view(false);
    golden("services", &v.services(NOW_MS, WINDOW_MS));
    golden("containers", &v.containers(NOW_MS, WINDOW_MS));
    golden("neighbours", &v.neighbours(NOW_MS, WINDOW_MS));
    golden("throttled", &v.throttled(NOW_MS, WINDOW_MS));
    golden("retransmits", &v.retransmits(NOW_MS, WINDOW_MS));
    golden("snapshot", &v.snapshot(NOW_MS, WINDOW_MS, 5));
}

#[test]
fn the_services_dominant_causes_are_the_injected_ones() {
    let services = view(false).services(NOW_MS, WINDOW_MS);
    let by: std::collections::BTreeMap<&str, &str> = services
        .iter()
        .map(|s| (s.key.as_str(), s.dominant_cause.as_str()))
        .collect();
    assert_eq!(by["checkout"], "cpu.contention");
    assert_eq!(by["payments"], "tcp.retransmit");
    // The worst tail comes first.
    assert_eq!(services[0].key, "payments");
}

#[test]
fn old_requests_leave_the_summaries_but_not_the_lookups() {
    let v = view(false);
    let later = NOW_MS + 10 * 60_000;
    assert!(v.services(later, WINDOW_MS).is_empty());
    assert!(v.snapshot(later, WINDOW_MS, 5).slow_requests.is_empty());
    assert_eq!(v.request(SLOW_TRACE).len(), 1);
}

#[tokio::test(flavor = "current_thread")]
async fn the_unix_socket_serves_the_same_answers_root_only() -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("culprit-api-{}", std::process::id()));
    let path = dir.join("culprit.sock");
    let _ = std::fs::remove_dir_all(&dir);
    let shared = std::sync::Arc::new(std::sync::Mutex::new(view(false)));
    let listener = api::bind_unix(&path)?;
    let mode = std::fs::metadata(&path)?.permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the socket must be root-only");
    // A second agent must not take over a live socket.
    let err = api::bind_unix(&path).unwrap_err().to_string();
    assert!(err.contains("another agent already serves"), "{err}");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(api::serve_unix(
        path.clone(),
        listener,
        shared.clone(),
        async {
            let _ = stopped.await;
        },
    ));
    let ep = Endpoint::Unix(path.clone());

    let requests: Vec<RequestView> = client::get(&ep, "/v1/requests").await?.expect("200");
    assert_eq!(requests, shared.lock().unwrap().requests(100, 0.0));
    let one: Vec<RequestView> = client::get(&ep, &format!("/v1/requests/{SLOW_TRACE}"))
        .await?
        .expect("200");
    assert_eq!(one[0].span_id, SLOW_SPAN);
    let health: Value = client::get(&ep, "/v1/health").await?.expect("200");
    assert_eq!(health["probes_attached"], 3);
    for path in [
        "/v1/services",
        "/v1/containers",
        "/v1/snapshot?window_s=5",
        "/v1/throttled",
    ] {
        let v: Option<Value> = client::get(&ep, path).await?;
        assert!(v.is_some(), "{path}");
    }
    // Unknown ids and paths are 404s; malformed ids are rejected with the reason.
    let missing: Option<Value> = client::get(&ep, "/v1/requests/abcdef0123456789").await?;
    assert!(missing.is_none());
    let nowhere: Option<Value> = client::get(&ep, "/v1/nowhere").await?;
    assert!(nowhere.is_none());
    let bad = client::get::<Value>(&ep, "/v1/requests/not-hex")
        .await
        .unwrap_err();
    assert!(bad.to_string().contains("400"), "{bad:#}");

    let _ = stop.send(());
    server.await??;
    assert!(!path.exists(), "the socket is removed at shutdown");
    // A stale socket file (nobody listening) is replaced.
    let stale = std::os::unix::net::UnixListener::bind(&path)?;
    drop(stale);
    assert!(path.exists());
    drop(api::bind_unix(&path)?);
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

#[tokio::test(flavor = "current_thread")]
async fn no_agent_and_no_permission_are_told_apart() {
    let missing = Endpoint::Unix("/nonexistent/culprit.sock".into());
    let err = client::get::<Value>(&missing, "/v1/health")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no agent is running"), "{err:#}");
    // A socket file nobody listens on.
    let dir = std::env::temp_dir().join(format!("culprit-api-stale-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("s.sock");
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    let err = client::get::<Value>(&Endpoint::Unix(path), "/v1/health")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no agent answers"), "{err:#}");
    std::fs::remove_dir_all(&dir).unwrap();
}
