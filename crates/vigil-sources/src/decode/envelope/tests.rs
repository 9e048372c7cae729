use std::io::Write;

use base64::Engine;
use serde_json::Value;

use super::*;

fn shared(rel: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/data")
        .join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn line(rel: &str, n: usize) -> Vec<u8> {
    shared(rel).lines().nth(n - 1).unwrap().as_bytes().to_vec()
}

const MAX: usize = 1024 * 1024;

fn unwrapped(format: AuditFormat, payload: &[u8]) -> Result<Value, EnvelopeError> {
    unwrap(format, payload, MAX)
        .expect("not native")
        .map(|bytes| serde_json::from_slice(&bytes).expect("unwrapped JSON"))
}

fn items(v: &Value) -> &Vec<Value> {
    assert_eq!(v["kind"], "EventList");
    v["items"].as_array().unwrap()
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

#[test]
fn native_is_read_as_it_is() {
    assert!(unwrap(AuditFormat::Native, b"{}", MAX).is_none());
}

#[test]
fn format_names_round_trip_and_unknown_names_are_refused() {
    for f in AuditFormat::ALL {
        assert_eq!(f.as_str().parse::<AuditFormat>(), Ok(f));
    }
    let e = "eks".parse::<AuditFormat>().unwrap_err();
    assert_eq!(e, UnknownAuditFormat("eks".into()));
    assert_eq!(
        e.to_string(),
        "unknown audit format \"eks\": expected one of native, eks_cloudwatch, aks_event_hubs, gke_cloud_logging"
    );
}

#[test]
fn an_eks_subscription_message_carries_its_log_events_in_order() {
    let payload = line("k8s-audit/eks-cloudwatch-messages.jsonl", 1);
    let v = unwrapped(AuditFormat::EksCloudwatch, &payload).unwrap();
    let events = items(&v);
    assert_eq!(events.len(), 12);
    let message: Value = serde_json::from_slice(&payload).unwrap();
    let first: Value =
        serde_json::from_str(message["logEvents"][0]["message"].as_str().unwrap()).unwrap();
    assert_eq!(events[0], first);
    // as Kinesis delivers it (gzip), and as Firehose may (base64 of gzip)
    let gz = gzip(&payload);
    assert_eq!(unwrapped(AuditFormat::EksCloudwatch, &gz).unwrap(), v);
    let b64 = base64::engine::general_purpose::STANDARD.encode(&gz);
    assert_eq!(
        unwrapped(AuditFormat::EksCloudwatch, b64.as_bytes()).unwrap(),
        v
    );
}

#[test]
fn eks_control_messages_carry_no_events_and_other_input_is_refused() {
    let control = br#"{"messageType":"CONTROL_MESSAGE","owner":"CloudwatchLogs","logEvents":[{"id":"1","timestamp":1,"message":"CWL CONTROL MESSAGE: Checking health of destination Kinesis stream."}]}"#;
    assert!(items(&unwrapped(AuditFormat::EksCloudwatch, control).unwrap()).is_empty());
    for (payload, reason) in [
        (&br#"{"logEvents":[]}"#[..], "no messageType"),
        (
            br#"{"messageType":"DATA_MESSAGE","logEvents":[{"message":"not json"}]}"#,
            "event 0 is not a JSON object",
        ),
        (
            br#"{"messageType":"DATA_MESSAGE","logEvents":[{"message":"{\"kind\":"}]}"#,
            "event 0: invalid JSON",
        ),
        (b"%%%", "neither JSON, gzip nor base64"),
        (&gzip(b"{")[..4], "invalid gzip"),
    ] {
        let e = unwrapped(AuditFormat::EksCloudwatch, payload).unwrap_err();
        assert!(e.to_string().contains(reason), "{e}");
        assert!(
            e.to_string().starts_with("eks_cloudwatch envelope: "),
            "{e}"
        );
    }
}

#[test]
fn a_gzip_envelope_may_not_inflate_past_the_message_limit() {
    let big = format!(
        r#"{{"messageType":"DATA_MESSAGE","logEvents":[{{"message":"{{\"pad\":\"{}\"}}"}}]}}"#,
        "a".repeat(4 * MAX)
    );
    let gz = gzip(big.as_bytes());
    assert!(gz.len() < MAX / 10, "it compresses well");
    let e = unwrap(AuditFormat::EksCloudwatch, &gz, MAX)
        .unwrap()
        .unwrap_err();
    assert_eq!(
        e.reason,
        EnvelopeReason::InflatesPastLimit { limit: MAX },
        "{e}"
    );
    assert!(
        e.to_string().contains("inflates to more than the limit"),
        "{e}"
    );
}

#[test]
fn an_aks_event_hubs_message_carries_its_kube_audit_records() {
    let v = unwrapped(
        AuditFormat::AksEventHubs,
        &line("k8s-audit/aks-eventhubs-messages.jsonl", 1),
    )
    .unwrap();
    let events = items(&v);
    assert_eq!(events.len(), 22);
    // the same events as the unwrapped capture of the same cluster
    let native: Vec<Value> = shared("k8s-audit/aks-system.jsonl")
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events.len(), native.len());
    assert_eq!(events[0]["auditID"], native[0]["auditID"]);
    let v = unwrapped(
        AuditFormat::AksEventHubs,
        &line("k8s-audit/aks-eventhubs-messages.jsonl", 2),
    )
    .unwrap();
    assert_eq!(items(&v).len(), 1);
}

#[test]
fn aks_records_of_other_categories_are_skipped_and_broken_ones_refused() {
    let other = br#"{"records":[{"category":"kube-apiserver","properties":{"log":"I1203 started"}},{"category":"kube-audit-admin","properties":{"log":"{\"kind\":\"Event\",\"auditID\":\"a\"}"}}]}"#;
    let v = unwrapped(AuditFormat::AksEventHubs, other).unwrap();
    assert_eq!(items(&v).len(), 1);
    for (payload, reason) in [
        (&br#"{"value":[]}"#[..], "no \"records\" array"),
        (
            br#"{"records":[{"category":"kube-audit","properties":{}}]}"#,
            "record 0 (kube-audit) has no properties.log",
        ),
        (
            br#"{"records":[{"category":"kube-audit","properties":{"log":"oops"}}]}"#,
            "event 0 is not a JSON object",
        ),
    ] {
        let e = unwrapped(AuditFormat::AksEventHubs, payload).unwrap_err();
        assert!(e.reason.to_string().contains(reason), "{e}");
    }
    // a byte order mark before the body is accepted
    let mut bom = b"\xef\xbb\xbf".to_vec();
    bom.extend_from_slice(other);
    assert!(unwrapped(AuditFormat::AksEventHubs, &bom).is_ok());
}

#[test]
fn a_gke_log_entry_becomes_one_audit_event() {
    let v = unwrapped(
        AuditFormat::GkeCloudLogging,
        &line("k8s-audit/gke-audit-samples.jsonl", 1),
    )
    .unwrap();
    assert_eq!(v["kind"], "Event");
    assert_eq!(v["verb"], "create");
    assert_eq!(v["auditID"], "85371f7c-2383-4041-96e8-dad63d2d1990");
    assert_eq!(
        v["user"]["username"],
        "system:serviceaccount:kube-system:replicaset-controller"
    );
    assert_eq!(v["objectRef"]["resource"], "pods");
    assert_eq!(v["objectRef"]["namespace"], "1-2-deployment-update");
    assert_eq!(
        v["objectRef"]["name"],
        "nginx-deployment-surge-8655b4b8c5-xf5f4"
    );
    assert_eq!(v["objectRef"]["apiGroup"], "");
    assert_eq!(v["responseStatus"]["code"], 200);
    assert_eq!(v["annotations"]["authorization.k8s.io/decision"], "allow");
    assert_eq!(v["requestObject"]["kind"], "Pod");
    assert!(v["requestReceivedTimestamp"].is_string());
}

#[test]
fn gke_method_and_resource_names_map_to_the_object_reference() {
    let entry = |method: &str, resource: Option<&str>, extra: &str| {
        let resource = resource
            .map(|r| format!(r#","resourceName":"{r}""#))
            .unwrap_or_default();
        format!(
            r#"{{"insertId":"i1","timestamp":"2024-05-01 10:00:00.5","protoPayload":{{"methodName":"{method}"{resource},"authenticationInfo":{{"principalEmail":"a@example.com"}},"requestMetadata":{{"callerIp":"203.0.113.9","callerSuppliedUserAgent":"kubectl/v1.30"}}{extra}}}}}"#
        )
    };
    let exec = unwrapped(
        AuditFormat::GkeCloudLogging,
        entry(
            "io.k8s.core.v1.pods.exec.create",
            Some("core/v1/namespaces/prod/pods/api-0"),
            "",
        )
        .as_bytes(),
    )
    .unwrap();
    assert_eq!(exec["verb"], "create");
    assert_eq!(exec["objectRef"]["subresource"], "exec");
    assert_eq!(
        exec["requestURI"],
        "/api/v1/namespaces/prod/pods/api-0/exec"
    );
    assert_eq!(exec["sourceIPs"][0], "203.0.113.9");
    assert_eq!(exec["userAgent"], "kubectl/v1.30");
    assert_eq!(exec["requestReceivedTimestamp"], "2024-05-01T10:00:00.5Z");

    let binding = unwrapped(
        AuditFormat::GkeCloudLogging,
        entry(
            "io.k8s.authorization.rbac.v1.clusterrolebindings.create",
            None,
            r#","status":{"code":7}"#,
        )
        .as_bytes(),
    )
    .unwrap();
    assert_eq!(
        binding["objectRef"]["apiGroup"],
        "rbac.authorization.k8s.io"
    );
    assert_eq!(binding["objectRef"]["resource"], "clusterrolebindings");
    assert_eq!(binding["responseStatus"]["code"], 403);

    let denied = unwrapped(
        AuditFormat::GkeCloudLogging,
        entry(
            "io.k8s.apps.v1beta1.deployments.list",
            Some("apps/v1beta1/namespaces/default/deployments"),
            r#","authorizationInfo":[{"granted":false}]"#,
        )
        .as_bytes(),
    )
    .unwrap();
    assert_eq!(denied["objectRef"]["apiGroup"], "apps");
    assert_eq!(denied["objectRef"]["namespace"], "default");
    assert_eq!(denied["responseStatus"]["code"], 403);

    let e = unwrapped(
        AuditFormat::GkeCloudLogging,
        entry("io.k8s.core.v1.pods", None, "").as_bytes(),
    )
    .unwrap_err();
    assert_eq!(
        e.reason,
        EnvelopeReason::BadMethodName("core.v1.pods".into())
    );
    assert!(
        e.to_string().contains("not group.version.resource.verb"),
        "{e}"
    );

    let readyz = unwrapped(
        AuditFormat::GkeCloudLogging,
        entry("io.k8s.readyz", None, "").as_bytes(),
    )
    .unwrap();
    assert_eq!(readyz["verb"], "get");
    assert_eq!(readyz["requestURI"], "/readyz");
    assert!(readyz.get("objectRef").is_none());
}

#[test]
fn a_log_entry_of_another_service_carries_no_event_and_a_bare_object_is_refused() {
    let dm = br#"{"insertId":"x","protoPayload":{"methodName":"v2.deploymentmanager.deployments.insert","serviceName":"deploymentmanager.googleapis.com"}}"#;
    assert!(items(&unwrapped(AuditFormat::GkeCloudLogging, dm).unwrap()).is_empty());
    let e = unwrapped(AuditFormat::GkeCloudLogging, br#"{"operation":{"id":"x"}}"#).unwrap_err();
    assert_eq!(e.reason, EnvelopeReason::NoProtoPayload);
    assert!(e.to_string().contains("no protoPayload"), "{e}");
}
