//! `k8s_audit`: Kubernetes API-server audit events (audit.k8s.io/v1
//! `Event` and `EventList`), natively or in the envelope of a managed
//! service (`crate::decode::envelope`, unwrapped before decoding).

mod decode;
pub mod pod_spec;
pub mod schema;

use vigil_model::source::SourceKind;

use crate::SourceSpec;

/// The registry entry.
pub static SPEC: SourceSpec = SourceSpec {
    kind: SourceKind::K8sAudit,
    about: "Kubernetes API-server audit events (audit.k8s.io/v1)",
    default_topic: "k8s-audit",
    example: r#"{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"RequestResponse","auditID":"a-1","stage":"ResponseComplete","requestURI":"/api/v1/namespaces/default/pods/web/exec?command=sh","verb":"create","user":{"username":"alice","groups":["dev","system:authenticated"]},"sourceIPs":["10.0.0.1"],"userAgent":"kubectl/v1.28","objectRef":{"resource":"pods","namespace":"default","name":"web","subresource":"exec","apiVersion":"v1"},"responseStatus":{"metadata":{},"code":101},"requestObject":{"kind":"Pod","spec":{"containers":[{"name":"a"}]}},"requestReceivedTimestamp":"2024-01-02T03:04:05.123456Z","stageTimestamp":"2024-01-02T03:04:06Z","annotations":{"authorization.k8s.io/decision":"allow"}}"#,
    schema: schema::k8s_audit,
    json_columns: &["request_object", "response_object"],
    rows: |messages, bytes| Box::new(decode::AuditRows::with_capacity(messages, bytes)),
};
