//! Kubernetes identity from a process's cgroup path: the pod uid and the container id, for the
//! systemd and cgroupfs cgroup drivers of containerd, CRI-O and Docker (cri-dockerd). These are
//! what the `k8sattributes` processor of an OpenTelemetry Collector keys on to add pod names.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct K8sIdentity {
    pub pod_uid: Option<String>,
    pub container_id: Option<String>,
}

fn is_hex64(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A pod uid as the kubelet writes it in cgroup names: `pod<uid>`, with the uid's dashes turned
/// into underscores by the systemd driver (`kubepods-besteffort-pod<uid>.slice`).
fn pod_uid(component: &str) -> Option<String> {
    let name = component.strip_suffix(".slice").unwrap_or(component);
    let at = name.rfind("pod")?;
    // `pod` must start the component or follow the QoS class's dash.
    if at != 0 && !name[..at].ends_with('-') {
        return None;
    }
    let uid = name[at + 3..].replace('_', "-");
    let valid = uid.len() == 36
        && uid.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_hexdigit(),
        });
    valid.then(|| uid.to_ascii_lowercase())
}

/// A container id in a cgroup path component: `cri-containerd-<id>.scope`, `crio-<id>.scope`,
/// `docker-<id>.scope`, or the bare id of the cgroupfs driver (`crio-<id>` for CRI-O). CRI-O's
/// `crio-conmon-<id>` is its monitor process, not the container.
fn container_id(component: &str) -> Option<String> {
    let name = component.strip_suffix(".scope").unwrap_or(component);
    if name.contains("conmon") {
        return None;
    }
    let id = name.rsplit(['-', ':']).next()?;
    is_hex64(id).then(|| id.to_ascii_lowercase())
}

/// The identity in a cgroup path (v2, or the v1 path of any controller). The kubelet's tree may
/// sit anywhere below the root (nested runtimes, test trees), so the path is searched rather
/// than matched from its start.
pub(crate) fn parse(cgroup_path: &str) -> K8sIdentity {
    let components: Vec<&str> = cgroup_path.split('/').filter(|c| !c.is_empty()).collect();
    let in_kubepods = components
        .iter()
        .position(|c| *c == "kubepods" || *c == "kubepods.slice");
    let pod_uid = in_kubepods.and_then(|at| components[at..].iter().find_map(|c| pod_uid(c)));
    let container_id = components.last().and_then(|c| container_id(c));
    K8sIdentity {
        pod_uid,
        container_id,
    }
}

/// Looks identities up per process, once, while the process is alive: a span can be released
/// after its sender exited.
#[derive(Default)]
pub(crate) struct IdentityCache {
    by_pid: HashMap<u32, (K8sIdentity, Instant)>,
}

impl IdentityCache {
    pub(crate) fn of(&mut self, pid: u32) -> &K8sIdentity {
        let entry = self
            .by_pid
            .entry(pid)
            .or_insert_with(|| (lookup(pid), Instant::now()));
        entry.1 = Instant::now();
        &entry.0
    }

    /// Whether `pid`'s identity is cached (it was looked up less than the expiry ago).
    pub(crate) fn knows(&self, pid: u32) -> bool {
        self.by_pid.contains_key(&pid)
    }

    /// Forgets processes no span mentioned for `max_age` (pids are reused).
    pub(crate) fn expire(&mut self, max_age: Duration) {
        self.by_pid.retain(|_, (_, seen)| seen.elapsed() < max_age);
    }
}

/// Whether a cgroup path names container `id`: as a whole path component, or as the id in a
/// runtime's scope name (`cri-containerd-<id>.scope`). Never a substring, so that `pod<uid>` or
/// a prefix of another container's id cannot match.
pub(crate) fn names_container(cgroup_path: &str, id: &str) -> bool {
    let id = id.to_ascii_lowercase();
    cgroup_path
        .split('/')
        .filter(|c| !c.is_empty())
        .any(|c| c.eq_ignore_ascii_case(&id) || container_id(c).is_some_and(|found| found == id))
}

/// The first process in container `id` (a full scan of /proc).
pub(crate) fn first_pid_in_container(id: &str) -> Option<u32> {
    super::procfs::all_pids().find(|&pid| {
        super::membership::memberships_of(pid)
            .iter()
            .any(|m| names_container(&m.path, id))
    })
}

/// A pod uid as a sender may write it (`k8s.pod.uid`), in the form cgroup paths give it:
/// lower case with dashes. `None` if it is not a uid.
pub(crate) fn normalize_pod_uid(uid: &str) -> Option<String> {
    pod_uid(&format!("pod{uid}"))
}

/// The first process in pod `uid` (a full scan of /proc).
pub(crate) fn first_pid_in_pod(uid: &str) -> Option<u32> {
    let uid = normalize_pod_uid(uid)?;
    super::procfs::all_pids().find(|&pid| {
        super::membership::memberships_of(pid)
            .iter()
            .any(|m| parse(&m.path).pod_uid.as_deref() == Some(uid.as_str()))
    })
}

fn lookup(pid: u32) -> K8sIdentity {
    super::membership::any_path_of(pid)
        .map(|path| parse(&path))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "6b3e5f7a-1c2d-4e5f-8a9b-0c1d2e3f4a5b";
    const UID_: &str = "6b3e5f7a_1c2d_4e5f_8a9b_0c1d2e3f4a5b";
    const ID: &str = "3f4e5d6c7b8a99887766554433221100ffeeddccbbaa00112233445566778899";

    fn both(path: &str) -> (Option<String>, Option<String>) {
        let id = parse(path);
        (id.pod_uid, id.container_id)
    }

    fn expected() -> (Option<String>, Option<String>) {
        (Some(UID.to_string()), Some(ID.to_string()))
    }

    #[test]
    fn pod_uids_are_normalized_or_refused() {
        assert_eq!(normalize_pod_uid(UID).as_deref(), Some(UID));
        assert_eq!(normalize_pod_uid(UID_).as_deref(), Some(UID));
        assert_eq!(
            normalize_pod_uid(&UID.to_ascii_uppercase()).as_deref(),
            Some(UID)
        );
        assert_eq!(normalize_pod_uid(&UID[..30]), None);
        assert_eq!(normalize_pod_uid(""), None);
        assert_eq!(normalize_pod_uid(&format!("x{UID}")), None);
    }

    #[test]
    fn a_container_is_named_whole_never_by_a_substring() {
        let path = format!("/kubepods.slice/kubepods-pod{UID_}.slice/cri-containerd-{ID}.scope");
        assert!(names_container(&path, ID));
        assert!(names_container(&path, &ID.to_ascii_uppercase()));
        assert!(names_container(
            &path,
            &format!("cri-containerd-{ID}.scope")
        ));
        // A prefix of the id, the pod, or any other piece of the path is not this container.
        assert!(!names_container(&path, &ID[..12]));
        assert!(!names_container(&path, &format!("pod{UID_}")));
        assert!(!names_container(&path, "kubepods"));
        assert!(!names_container(&path, &ID[1..]));
        // The cgroupfs driver names the container by its bare id.
        assert!(names_container(
            &format!("/kubepods/besteffort/pod{UID}/{ID}"),
            ID
        ));
    }

    #[test]
    fn containerd_with_the_systemd_driver() {
        let path = format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/cri-containerd-{ID}.scope"
        );
        assert_eq!(both(&path), expected());
        // Guaranteed pods sit right under kubepods.slice.
        let path = format!("/kubepods.slice/kubepods-pod{UID_}.slice/cri-containerd-{ID}.scope");
        assert_eq!(both(&path), expected());
    }

    #[test]
    fn containerd_with_the_cgroupfs_driver() {
        assert_eq!(
            both(&format!("/kubepods/burstable/pod{UID}/{ID}")),
            expected()
        );
        assert_eq!(both(&format!("/kubepods/pod{UID}/{ID}")), expected());
    }

    #[test]
    fn cri_o_with_both_drivers_and_its_monitor() {
        let systemd = format!(
            "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice/crio-{ID}.scope"
        );
        assert_eq!(both(&systemd), expected());
        assert_eq!(
            both(&format!("/kubepods/besteffort/pod{UID}/crio-{ID}")),
            expected()
        );
        // conmon, CRI-O's monitor, runs in the pod but is no container.
        let conmon = format!(
            "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice/crio-conmon-{ID}.scope"
        );
        assert_eq!(both(&conmon), (Some(UID.to_string()), None));
    }

    #[test]
    fn docker_in_and_out_of_kubernetes() {
        let k8s = format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/docker-{ID}.scope"
        );
        assert_eq!(both(&k8s), expected());
        assert_eq!(
            both(&format!("/kubepods/burstable/pod{UID}/{ID}")),
            expected()
        );
        // Plain Docker: a container, no pod.
        assert_eq!(
            both(&format!("/system.slice/docker-{ID}.scope")),
            (None, Some(ID.into()))
        );
        assert_eq!(both(&format!("/docker/{ID}")), (None, Some(ID.into())));
    }

    #[test]
    fn nested_trees_and_ordinary_processes() {
        // A kubelet tree below another cgroup (kind, test trees).
        let nested = format!(
            "/culprit-test-42-0/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/cri-containerd-{ID}.scope"
        );
        assert_eq!(both(&nested), expected());
        assert_eq!(
            both("/user.slice/user-0.slice/session-1.scope"),
            (None, None)
        );
        assert_eq!(both("/"), (None, None));
        assert_eq!(both(""), (None, None));
        // The pod's own cgroup (the pause process's parent) has a pod and no container.
        assert_eq!(
            both(&format!("/kubepods/burstable/pod{UID}")),
            (Some(UID.to_string()), None)
        );
        // Not a uid, not an id.
        assert_eq!(both("/kubepods/burstable/podnot-a-uid/abc"), (None, None));
        assert_eq!(both(&format!("/apod{UID}/x")), (None, None));
    }
}
