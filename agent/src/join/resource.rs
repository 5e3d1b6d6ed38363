//! The sender's identity written into its spans' resource. A verified sender's own identity
//! replaces whatever the application claimed; a claimed one only fills in what is missing.

use opentelemetry_proto::tonic::{
    common::v1::{AnyValue, KeyValue, any_value::Value},
    resource::v1::Resource,
};

use super::identity::{CONTAINER_ID, POD_UID, PROCESS_PID, Trust};
use crate::{host::k8s::K8sIdentity, otlp::string_kv};

/// The resource attribute saying how the sender was identified: `verified`, `claimed` or
/// `none`.
pub(crate) const IDENTITY_ATTRIBUTE: &str = "culprit.identity";

const NODE_NAME: &str = "k8s.node.name";

/// What the agent knows of one resource's sender.
pub(crate) struct Identity<'a> {
    pub(crate) trust: Trust,
    pub(crate) k8s: &'a K8sIdentity,
    /// The sender's pid as it sees it itself (its innermost pid namespace's), set on the resource
    /// when the application's `process.pid` contradicted the verified sender.
    pub(crate) own_pid: Option<u32>,
    /// The resource attributes the verified sender contradicted.
    pub(crate) contradicted: &'a [&'static str],
}

/// Writes `container.id`, `k8s.pod.uid`, `k8s.node.name` and `culprit.identity`. For a verified
/// sender the agent's values replace the application's, and a contradicted claim is removed
/// when the agent has no value of its own (a claim the agent cannot check, such as the
/// container id of a runtime whose layout it does not know, is kept); a contradicted
/// `process.pid` is replaced. For a claimed sender the application's values are kept.
pub(crate) fn annotate(resource: &mut Resource, identity: &Identity<'_>, node_name: Option<&str>) {
    let verified = identity.trust == Trust::Verified;
    let mut put = |key: &str, value: Option<&str>, replace: bool| {
        let at = resource.attributes.iter().position(|kv| kv.key == key);
        match (at, value) {
            (Some(i), Some(v)) if replace => resource.attributes[i] = string_kv(key, v),
            (Some(i), None) if replace => {
                resource.attributes.remove(i);
            }
            (None, Some(v)) => resource.attributes.push(string_kv(key, v)),
            _ => {}
        }
    };
    let replaces = |key: &str, own: Option<&str>| {
        verified && (own.is_some() || identity.contradicted.contains(&key))
    };
    let container = identity.k8s.container_id.as_deref();
    let pod = identity.k8s.pod_uid.as_deref();
    put(CONTAINER_ID, container, replaces(CONTAINER_ID, container));
    put(POD_UID, pod, replaces(POD_UID, pod));
    put(NODE_NAME, node_name, false);
    put(IDENTITY_ATTRIBUTE, Some(identity.trust.as_str()), true);
    if let Some(pid) = identity.own_pid
        && verified
    {
        let kv = KeyValue {
            key: PROCESS_PID.to_string(),
            value: Some(AnyValue {
                value: Some(Value::IntValue(i64::from(pid))),
            }),
            ..KeyValue::default()
        };
        match resource
            .attributes
            .iter()
            .position(|kv| kv.key == PROCESS_PID)
        {
            Some(i) => resource.attributes[i] = kv,
            None => resource.attributes.push(kv),
        }
    }
}

/// Marks a resource whose sender nobody could identify.
pub(crate) fn mark_unidentified(resource: &mut Resource) {
    if !resource
        .attributes
        .iter()
        .any(|kv| kv.key == IDENTITY_ATTRIBUTE)
    {
        resource
            .attributes
            .push(string_kv(IDENTITY_ATTRIBUTE, Trust::None.as_str()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "6b3e5f7a-1c2d-4e5f-8a9b-0c1d2e3f4a5b";
    const ID: &str = "3f4e5d6c7b8a99887766554433221100ffeeddccbbaa00112233445566778899";

    fn get(r: &Resource, k: &str) -> Vec<String> {
        r.attributes
            .iter()
            .filter(|kv| kv.key == k)
            .map(|kv| format!("{:?}", kv.value))
            .collect()
    }

    fn app_resource() -> Resource {
        let mut r = Resource::default();
        r.attributes.push(string_kv(CONTAINER_ID, "from-the-app"));
        r.attributes.push(string_kv(POD_UID, "pod-from-the-app"));
        r.attributes.push(KeyValue {
            key: PROCESS_PID.into(),
            value: Some(AnyValue {
                value: Some(Value::IntValue(1)),
            }),
            ..KeyValue::default()
        });
        r
    }

    #[test]
    fn a_claimed_sender_keeps_what_the_application_set() {
        let mut r = app_resource();
        let k8s = K8sIdentity {
            pod_uid: Some(UID.into()),
            container_id: Some(ID.into()),
        };
        let identity = Identity {
            trust: Trust::Claimed,
            k8s: &k8s,
            own_pid: Some(7),
            contradicted: &[CONTAINER_ID],
        };
        annotate(&mut r, &identity, Some("node-a"));
        assert_eq!(get(&r, CONTAINER_ID).len(), 1);
        assert!(get(&r, CONTAINER_ID)[0].contains("from-the-app"));
        assert!(get(&r, POD_UID)[0].contains("pod-from-the-app"));
        assert!(get(&r, "k8s.node.name")[0].contains("node-a"));
        assert!(get(&r, PROCESS_PID)[0].contains("IntValue(1)"));
        assert!(get(&r, IDENTITY_ATTRIBUTE)[0].contains("claimed"));
        let mut bare = Resource::default();
        let nothing = K8sIdentity::default();
        annotate(
            &mut bare,
            &Identity {
                trust: Trust::Claimed,
                k8s: &nothing,
                own_pid: None,
                contradicted: &[],
            },
            None,
        );
        assert_eq!(bare.attributes.len(), 1);
    }

    #[test]
    fn a_verified_sender_replaces_contradicted_claims() {
        let mut r = app_resource();
        let k8s = K8sIdentity {
            pod_uid: Some(UID.into()),
            container_id: None,
        };
        let identity = Identity {
            trust: Trust::Verified,
            k8s: &k8s,
            own_pid: Some(7),
            contradicted: &[CONTAINER_ID, POD_UID, PROCESS_PID],
        };
        annotate(&mut r, &identity, None);
        // The sender is in no container: the claimed one is removed.
        assert!(get(&r, CONTAINER_ID).is_empty());
        assert_eq!(get(&r, POD_UID).len(), 1);
        assert!(get(&r, POD_UID)[0].contains(UID));
        assert_eq!(get(&r, PROCESS_PID).len(), 1);
        assert!(get(&r, PROCESS_PID)[0].contains("IntValue(7)"));
        assert!(get(&r, IDENTITY_ATTRIBUTE)[0].contains("verified"));
        // Annotating twice changes nothing.
        let before = r.clone();
        annotate(&mut r, &identity, None);
        assert_eq!(r, before);
        // A claim the agent has no value to check against, and did not find contradicted, is
        // the application's to keep.
        let mut kept = app_resource();
        let nothing = K8sIdentity::default();
        annotate(
            &mut kept,
            &Identity {
                trust: Trust::Verified,
                k8s: &nothing,
                own_pid: None,
                contradicted: &[],
            },
            None,
        );
        assert!(get(&kept, CONTAINER_ID)[0].contains("from-the-app"));
        assert!(get(&kept, POD_UID)[0].contains("pod-from-the-app"));
    }

    #[test]
    fn unidentified_resources_say_so_once() {
        let mut r = Resource::default();
        mark_unidentified(&mut r);
        mark_unidentified(&mut r);
        assert_eq!(get(&r, IDENTITY_ATTRIBUTE).len(), 1);
        assert!(get(&r, IDENTITY_ATTRIBUTE)[0].contains("none"));
    }
}
