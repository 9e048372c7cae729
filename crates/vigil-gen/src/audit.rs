//! Background Kubernetes audit events, shaped on real API-server output
//! (audit.k8s.io/v1, `Request` or `RequestResponse` level for writes, so
//! writes carry their request object).
//!
//! The mix is typical of a busy cluster: controllers and kubelets reading
//! and watching, API discovery (non-resource requests, no `objectRef`),
//! node lease renewals, kubelet pod status patches, and people
//! or CI applying deployments and config maps. None of it matches a shipped
//! rule: images are tagged and on approved registries, pods run as non-root
//! with no host access, writers to system namespaces are control-plane
//! components, source addresses are private.

use serde_json::{json, Value};

use crate::{rfc3339_micros, Built, Cluster, Rng};

const READ_RESOURCES: [(&str, &str); 6] = [
    ("pods", ""),
    ("configmaps", ""),
    ("services", ""),
    ("endpoints", ""),
    ("deployments", "apps"),
    ("replicasets", "apps"),
];

/// The workload controllers that create pods, and the kind of owner each
/// creates them for.
const POD_CONTROLLERS: [(&str, &str); 5] = [
    ("replicaset-controller", "ReplicaSet"),
    ("daemon-set-controller", "DaemonSet"),
    ("statefulset-controller", "StatefulSet"),
    ("job-controller", "Job"),
    ("replication-controller", "ReplicationController"),
];

const REGISTRIES: [&str; 4] = [
    "ghcr.io/acme",
    "quay.io/acme",
    "123456789012.dkr.ecr.eu-west-1.amazonaws.com/acme",
    "registry.k8s.io",
];

/// Common fields of every audit event; `extra` is merged over them.
#[allow(clippy::too_many_arguments)]
fn event(
    rng: &mut Rng,
    time_ns: i64,
    level: &str,
    verb: &str,
    user: Value,
    user_agent: &str,
    source_ip: String,
    object_ref: Value,
    request_uri: String,
    code: i32,
    extra: Value,
) -> (String, Value) {
    let audit_id = rng.uuid();
    let received = rfc3339_micros(time_ns);
    let stage_at = rfc3339_micros(time_ns + 1_000_000 + rng.below(20_000_000) as i64);
    let mut e = json!({
        "kind": "Event",
        "apiVersion": "audit.k8s.io/v1",
        "level": level,
        "auditID": audit_id,
        "stage": "ResponseComplete",
        "requestURI": request_uri,
        "verb": verb,
        "user": user,
        "sourceIPs": [source_ip],
        "userAgent": user_agent,
        "objectRef": object_ref,
        "responseStatus": {"metadata": {}, "code": code},
        "requestReceivedTimestamp": received,
        "stageTimestamp": stage_at,
        "annotations": {
            "authorization.k8s.io/decision": "allow",
            "authorization.k8s.io/reason": "RBAC: allowed by ClusterRoleBinding \"system:controller\" of ClusterRole \"edit\" to Group \"developers\""
        }
    });
    if let (Value::Object(base), Value::Object(extra)) = (&mut e, extra) {
        base.extend(extra);
        // Non-resource requests (discovery, /version) have no objectRef.
        if base.get("objectRef").is_some_and(Value::is_null) {
            base.remove("objectRef");
        }
    }
    (format!("{audit_id}/ResponseComplete"), e)
}

fn private_ip(rng: &mut Rng) -> String {
    format!(
        "10.{}.{}.{}",
        rng.below(256),
        rng.below(256),
        1 + rng.below(254)
    )
}

fn human(cluster: &Cluster, rng: &mut Rng) -> (String, Value) {
    let name = cluster.user(rng);
    let user = json!({
        "username": name,
        "uid": rng.uuid(),
        "groups": ["developers", "system:authenticated"],
        "extra": {"authentication.kubernetes.io/credential-id": [format!("X509SHA256={}", rng.hex(64))]}
    });
    (name, user)
}

fn service_account(namespace: &str, app: &str, rng: &mut Rng) -> (String, Value) {
    let name = format!("system:serviceaccount:{namespace}:{app}");
    let user = json!({
        "username": name,
        "uid": rng.uuid(),
        "groups": ["system:serviceaccounts", format!("system:serviceaccounts:{namespace}"), "system:authenticated"],
        "extra": {
            "authentication.kubernetes.io/pod-name": [format!("{app}-{}", rng.hex(5))],
            "authentication.kubernetes.io/pod-uid": [rng.uuid()]
        }
    });
    (name, user)
}

fn to_built(key: String, (event_id, value): (String, Value)) -> Built {
    Built {
        key,
        event_id,
        payload: serde_json::to_vec(&value).expect("JSON values serialize"),
    }
}

/// One benign audit event.
pub(crate) fn background(rng: &mut Rng, cluster: &Cluster, time_ns: i64) -> Built {
    match rng.weighted(&[30, 20, 15, 15, 10, 5, 5]) {
        0 => controller_read(rng, cluster, time_ns),
        6 => discovery(rng, cluster, time_ns),
        1 => lease_renewal(rng, cluster, time_ns),
        2 => pod_status_patch(rng, cluster, time_ns),
        3 => deployment_apply(rng, cluster, time_ns),
        4 => configmap_write(rng, cluster, time_ns),
        _ => controller_pod_create(rng, cluster, time_ns),
    }
}

fn controller_read(rng: &mut Rng, cluster: &Cluster, time_ns: i64) -> Built {
    let pod = cluster.pod(rng);
    let (resource, group) = *rng.pick(&READ_RESOURCES);
    let verb = *rng.pick(&["get", "list", "watch"]);
    let (name, user) = service_account(&pod.namespace, pod.app, rng);
    let prefix = if group.is_empty() {
        "/api/v1".to_string()
    } else {
        format!("/apis/{group}/v1")
    };
    let (uri, object_ref) = if verb == "get" {
        (
            format!(
                "{prefix}/namespaces/{}/{resource}/{}",
                pod.namespace, pod.name
            ),
            json!({"resource": resource, "namespace": pod.namespace, "name": pod.name, "apiGroup": group, "apiVersion": "v1"}),
        )
    } else {
        (
            format!("{prefix}/namespaces/{}/{resource}?labelSelector=app%3D{}&resourceVersion={}&watch={}", pod.namespace, pod.app, rng.below(90_000_000), verb == "watch"),
            json!({"resource": resource, "namespace": pod.namespace, "apiGroup": group, "apiVersion": "v1"}),
        )
    };
    let ua = format!("{}/v0.0.0 (linux/amd64) kubernetes/$Format", pod.app);
    let ip = private_ip(rng);
    to_built(
        name.clone(),
        event(
            rng,
            time_ns,
            "Metadata",
            verb,
            user,
            &ua,
            ip,
            object_ref,
            uri,
            200,
            json!({}),
        ),
    )
}

/// API discovery by a workload's client library: a non-resource request.
fn discovery(rng: &mut Rng, cluster: &Cluster, time_ns: i64) -> Built {
    let pod = cluster.pod(rng);
    let (name, user) = service_account(&pod.namespace, pod.app, rng);
    let uri = *rng.pick(&[
        "/api?timeout=32s",
        "/apis?timeout=32s",
        "/version",
        "/openapi/v3?timeout=32s",
        "/apis/apps/v1?timeout=32s",
    ]);
    let ua = format!("{}/v0.0.0 (linux/amd64) kubernetes/$Format", pod.app);
    let ip = private_ip(rng);
    to_built(
        name.clone(),
        event(
            rng,
            time_ns,
            "Metadata",
            "get",
            user,
            &ua,
            ip,
            Value::Null,
            uri.into(),
            200,
            json!({}),
        ),
    )
}

fn lease_renewal(rng: &mut Rng, cluster: &Cluster, time_ns: i64) -> Built {
    let node = cluster.node(rng);
    let name = format!("system:node:{node}");
    let user = json!({"username": name, "groups": ["system:nodes", "system:authenticated"]});
    let renew = rfc3339_micros(time_ns);
    let request = json!({
        "kind": "Lease", "apiVersion": "coordination.k8s.io/v1",
        "metadata": {
            "name": node, "namespace": "kube-node-lease", "uid": rng.uuid(),
            "resourceVersion": rng.below(90_000_000).to_string(), "creationTimestamp": "2025-11-02T08:14:51Z",
            "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": node, "uid": rng.uuid()}],
            "managedFields": [{"manager": "kubelet", "operation": "Update", "apiVersion": "coordination.k8s.io/v1", "time": renew, "fieldsType": "FieldsV1",
                "fieldsV1": {"f:metadata": {"f:ownerReferences": {".": {}}}, "f:spec": {"f:holderIdentity": {}, "f:leaseDurationSeconds": {}, "f:renewTime": {}}}}]
        },
        "spec": {"holderIdentity": node, "leaseDurationSeconds": 40, "renewTime": renew}
    });
    let object_ref = json!({"resource": "leases", "namespace": "kube-node-lease", "name": node, "uid": rng.uuid(), "apiGroup": "coordination.k8s.io", "apiVersion": "v1", "resourceVersion": rng.below(90_000_000).to_string()});
    let uri = format!(
        "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{node}?timeout=10s"
    );
    let ip = private_ip(rng);
    to_built(
        name.clone(),
        event(
            rng,
            time_ns,
            "RequestResponse",
            "update",
            user,
            "kubelet/v1.30.4 (linux/amd64) kubernetes/a51b3b7",
            ip,
            object_ref,
            uri,
            200,
            json!({"requestObject": request}),
        ),
    )
}

fn pod_status_patch(rng: &mut Rng, cluster: &Cluster, time_ns: i64) -> Built {
    let pod = cluster.pod(rng);
    let name = format!("system:node:{}", pod.node);
    let user = json!({"username": name, "groups": ["system:nodes", "system:authenticated"]});
    let now = rfc3339_micros(time_ns);
    let request = json!({
        "metadata": {"uid": rng.uuid()},
        "status": {
            "$setElementOrder/conditions": [{"type": "PodReadyToStartContainers"}, {"type": "Initialized"}, {"type": "Ready"}, {"type": "ContainersReady"}, {"type": "PodScheduled"}],
            "conditions": [{"lastTransitionTime": now, "status": "True", "type": "Ready"}, {"lastTransitionTime": now, "status": "True", "type": "ContainersReady"}],
            "containerStatuses": [{
                "containerID": format!("containerd://{}", rng.hex(64)),
                "image": format!("ghcr.io/acme/{}:1.{}.{}", pod.app, rng.below(20), rng.below(10)),
                "imageID": format!("ghcr.io/acme/{}@sha256:{}", pod.app, rng.hex(64)),
                "lastState": {}, "name": pod.app, "ready": true, "restartCount": rng.below(3), "started": true,
                "state": {"running": {"startedAt": now}}
            }]
        }
    });
    let object_ref = json!({"resource": "pods", "subresource": "status", "namespace": pod.namespace, "name": pod.name, "apiVersion": "v1"});
    let uri = format!(
        "/api/v1/namespaces/{}/pods/{}/status",
        pod.namespace, pod.name
    );
    let ip = private_ip(rng);
    to_built(
        name.clone(),
        event(
            rng,
            time_ns,
            "Request",
            "patch",
            user,
            "kubelet/v1.30.4 (linux/amd64) kubernetes/a51b3b7",
            ip,
            object_ref,
            uri,
            200,
            json!({"requestObject": request}),
        ),
    )
}

/// A pod template as controllers and people write them: tagged image on an
/// approved registry, non-root, read-only root, no host access.
fn pod_spec(rng: &mut Rng, app: &str) -> Value {
    let registry = *rng.pick(&REGISTRIES);
    json!({
        "serviceAccountName": app,
        "securityContext": {"runAsNonRoot": true, "runAsUser": 10001, "fsGroup": 10001, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [{
            "name": app,
            "image": format!("{registry}/{app}:v1.{}.{}", rng.below(30), rng.below(10)),
            "ports": [{"containerPort": 8080, "name": "http", "protocol": "TCP"}],
            "env": [{"name": "LOG_LEVEL", "value": "info"}, {"name": "OTEL_EXPORTER_OTLP_ENDPOINT", "value": "http://otel-collector.observability:4317"}],
            "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"cpu": "500m", "memory": "512Mi"}},
            "readinessProbe": {"httpGet": {"path": "/healthz", "port": 8080}, "periodSeconds": 10},
            "securityContext": {"allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true, "capabilities": {"drop": ["ALL"]}}
        }],
        "volumes": [{"name": "config", "configMap": {"name": format!("{app}-config")}}]
    })
}

fn deployment_apply(rng: &mut Rng, cluster: &Cluster, time_ns: i64) -> Built {
    let pod = cluster.pod(rng);
    let (name, user) = human(cluster, rng);
    let verb = *rng.pick(&["create", "update", "patch"]);
    let request = json!({
        "kind": "Deployment", "apiVersion": "apps/v1",
        "metadata": {"name": pod.app, "namespace": pod.namespace, "labels": {"app": pod.app, "team": pod.namespace},
            "annotations": {"deployment.kubernetes.io/revision": rng.below(50).to_string()}},
        "spec": {
            "replicas": 1 + rng.below(5),
            "selector": {"matchLabels": {"app": pod.app}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
            "template": {"metadata": {"labels": {"app": pod.app}}, "spec": pod_spec(rng, pod.app)}
        }
    });
    let object_ref = json!({"resource": "deployments", "namespace": pod.namespace, "name": pod.app, "apiGroup": "apps", "apiVersion": "v1"});
    let uri = if verb == "create" {
        format!("/apis/apps/v1/namespaces/{}/deployments?fieldManager=kubectl-client-side-apply&fieldValidation=Strict", pod.namespace)
    } else {
        format!(
            "/apis/apps/v1/namespaces/{}/deployments/{}?fieldManager=kubectl-client-side-apply",
            pod.namespace, pod.app
        )
    };
    let ip = private_ip(rng);
    let code = if verb == "create" { 201 } else { 200 };
    to_built(
        name.clone(),
        event(
            rng,
            time_ns,
            "Request",
            verb,
            user,
            "kubectl/v1.30.2 (linux/amd64) kubernetes/3968350",
            ip,
            object_ref,
            uri,
            code,
            json!({"requestObject": request}),
        ),
    )
}

fn configmap_write(rng: &mut Rng, cluster: &Cluster, time_ns: i64) -> Built {
    let pod = cluster.pod(rng);
    let (name, user) = human(cluster, rng);
    let cm = format!("{}-config", pod.app);
    let request = json!({
        "kind": "ConfigMap", "apiVersion": "v1",
        "metadata": {"name": cm, "namespace": pod.namespace, "labels": {"app": pod.app}},
        "data": {
            "application.yaml": format!("server:\n  port: 8080\nfeatures:\n  flag_{}: true\n  cache_ttl_seconds: {}\nupstream: http://{}.{}.svc.cluster.local:8080\n", rng.hex(6), rng.below(600), pod.app, pod.namespace),
            "LOG_FORMAT": "json"
        }
    });
    let object_ref = json!({"resource": "configmaps", "namespace": pod.namespace, "name": cm, "apiVersion": "v1"});
    let uri = format!(
        "/api/v1/namespaces/{}/configmaps?fieldManager=kubectl-client-side-apply",
        pod.namespace
    );
    let ip = private_ip(rng);
    to_built(
        name.clone(),
        event(
            rng,
            time_ns,
            "Request",
            "create",
            user,
            "kubectl/v1.30.2 (linux/amd64) kubernetes/3968350",
            ip,
            object_ref,
            uri,
            201,
            json!({"requestObject": request}),
        ),
    )
}

fn controller_pod_create(rng: &mut Rng, cluster: &Cluster, time_ns: i64) -> Built {
    let pod = cluster.pod(rng);
    let (controller, owner_kind) = *rng.pick(&POD_CONTROLLERS);
    let name = format!("system:serviceaccount:kube-system:{controller}");
    let user = json!({"username": name, "uid": rng.uuid(), "groups": ["system:serviceaccounts", "system:serviceaccounts:kube-system", "system:authenticated"]});
    let request = json!({
        "kind": "Pod", "apiVersion": "v1",
        "metadata": {"generateName": format!("{}-{}-", pod.app, rng.hex(10)), "namespace": pod.namespace, "labels": {"app": pod.app, "pod-template-hash": rng.hex(10)},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": owner_kind, "name": format!("{}-{}", pod.app, rng.hex(10)), "uid": rng.uuid(), "controller": true, "blockOwnerDeletion": true}]},
        "spec": pod_spec(rng, pod.app)
    });
    let object_ref = json!({"resource": "pods", "namespace": pod.namespace, "name": pod.name, "apiVersion": "v1"});
    let uri = format!("/api/v1/namespaces/{}/pods", pod.namespace);
    let ip = private_ip(rng);
    to_built(
        name.clone(),
        event(
            rng,
            time_ns,
            "Request",
            "create",
            user,
            &format!("kube-controller-manager/v1.30.4 (linux/amd64) kubernetes/a51b3b7/{name}"),
            ip,
            object_ref,
            uri,
            201,
            json!({"requestObject": request}),
        ),
    )
}

// --- attacks -------------------------------------------------------------

/// A human user's request, for attack templates.
#[allow(clippy::too_many_arguments)]
pub(crate) fn human_request(
    rng: &mut Rng,
    cluster: &Cluster,
    time_ns: i64,
    verb: &str,
    user_agent: &str,
    object_ref: Value,
    uri: String,
    code: i32,
    extra: Value,
) -> Built {
    let (name, user) = human(cluster, rng);
    let ip = private_ip(rng);
    to_built(
        name.clone(),
        event(
            rng, time_ns, "Request", verb, user, user_agent, ip, object_ref, uri, code, extra,
        ),
    )
}

pub(crate) fn attack_pod_exec_shell(rng: &mut Rng, cluster: &Cluster, time_ns: i64) -> Built {
    let pod = cluster.pod(rng);
    let object_ref = json!({"resource": "pods", "subresource": "exec", "namespace": pod.namespace, "name": pod.name, "apiVersion": "v1"});
    let uri = format!("/api/v1/namespaces/{}/pods/{}/exec?command=sh&container={}&stdin=true&stdout=true&tty=true", pod.namespace, pod.name, pod.app);
    human_request(
        rng,
        cluster,
        time_ns,
        "create",
        "kubectl/v1.30.2 (linux/amd64) kubernetes/3968350",
        object_ref,
        uri,
        101,
        json!({}),
    )
}

pub(crate) fn attack_privileged_pod(rng: &mut Rng, cluster: &Cluster, time_ns: i64) -> Built {
    let pod = cluster.pod(rng);
    let mut spec = pod_spec(rng, pod.app);
    spec["securityContext"] = json!({"runAsNonRoot": true, "runAsUser": 10001});
    spec["containers"][0]["securityContext"] = json!({"privileged": true});
    let name = format!("{}-debug-{}", pod.app, rng.hex(5));
    let request = json!({"kind": "Pod", "apiVersion": "v1", "metadata": {"name": name, "namespace": pod.namespace}, "spec": spec});
    let object_ref =
        json!({"resource": "pods", "namespace": pod.namespace, "name": name, "apiVersion": "v1"});
    let uri = format!("/api/v1/namespaces/{}/pods", pod.namespace);
    human_request(
        rng,
        cluster,
        time_ns,
        "create",
        "kubectl/v1.30.2 (linux/amd64) kubernetes/3968350",
        object_ref,
        uri,
        201,
        json!({"requestObject": request}),
    )
}

pub(crate) fn attack_cluster_admin_binding(
    rng: &mut Rng,
    cluster: &Cluster,
    time_ns: i64,
) -> Built {
    let binding = format!("ops-{}", rng.hex(6));
    let sa = cluster.namespace_of(rng.below(1000)).to_string();
    let request = json!({
        "kind": "ClusterRoleBinding", "apiVersion": "rbac.authorization.k8s.io/v1",
        "metadata": {"name": binding},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
        "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": sa}]
    });
    let object_ref = json!({"resource": "clusterrolebindings", "name": binding, "apiGroup": "rbac.authorization.k8s.io", "apiVersion": "v1"});
    human_request(
        rng,
        cluster,
        time_ns,
        "create",
        "kubectl/v1.30.2 (linux/amd64) kubernetes/3968350",
        object_ref,
        "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings?fieldManager=kubectl-create".into(),
        201,
        json!({"requestObject": request}),
    )
}

pub(crate) fn attack_secrets_dump(rng: &mut Rng, cluster: &Cluster, time_ns: i64) -> Built {
    let object_ref = json!({"resource": "secrets", "apiVersion": "v1"});
    human_request(
        rng,
        cluster,
        time_ns,
        "list",
        "kubectl/v1.30.2 (linux/amd64) kubernetes/3968350",
        object_ref,
        "/api/v1/secrets?limit=500".into(),
        200,
        json!({}),
    )
}

pub(crate) fn attack_offensive_tool(rng: &mut Rng, cluster: &Cluster, time_ns: i64) -> Built {
    let pod = cluster.pod(rng);
    let object_ref = json!({"resource": "pods", "namespace": pod.namespace, "apiVersion": "v1"});
    human_request(
        rng,
        cluster,
        time_ns,
        "list",
        "peirates/v1.1.20",
        object_ref,
        format!("/api/v1/namespaces/{}/pods", pod.namespace),
        200,
        json!({}),
    )
}
