//! The sender's Kubernetes identity written into its spans' resource, next to what the
//! application set itself (which is kept).

use opentelemetry_proto::tonic::resource::v1::Resource;

use crate::{host::k8s::K8sIdentity, otlp::string_kv};

/// Adds `container.id`, `k8s.pod.uid` and `k8s.node.name` to a resource, leaving any value the
/// application set itself.
pub(crate) fn annotate(resource: &mut Resource, identity: &K8sIdentity, node_name: Option<&str>) {
    let mut add = |key: &str, value: Option<&str>| {
        if let Some(v) = value
            && !resource.attributes.iter().any(|kv| kv.key == key)
        {
            resource.attributes.push(string_kv(key, v));
        }
    };
    add("container.id", identity.container_id.as_deref());
    add("k8s.pod.uid", identity.pod_uid.as_deref());
    add("k8s.node.name", node_name);
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "6b3e5f7a-1c2d-4e5f-8a9b-0c1d2e3f4a5b";
    const ID: &str = "3f4e5d6c7b8a99887766554433221100ffeeddccbbaa00112233445566778899";

    #[test]
    fn annotation_keeps_what_the_application_set() {
        let mut r = Resource::default();
        r.attributes.push(string_kv("container.id", "from-the-app"));
        annotate(
            &mut r,
            &K8sIdentity {
                pod_uid: Some(UID.into()),
                container_id: Some(ID.into()),
            },
            Some("node-a"),
        );
        let get = |k: &str| {
            r.attributes
                .iter()
                .filter(|kv| kv.key == k)
                .map(|kv| format!("{:?}", kv.value))
                .collect::<Vec<_>>()
        };
        assert_eq!(get("container.id").len(), 1);
        assert!(get("container.id")[0].contains("from-the-app"));
        assert!(get("k8s.pod.uid")[0].contains(UID));
        assert!(get("k8s.node.name")[0].contains("node-a"));
        let mut bare = Resource::default();
        annotate(&mut bare, &K8sIdentity::default(), None);
        assert!(bare.attributes.is_empty());
    }
}
