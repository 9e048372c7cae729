//! GKE: a Cloud Logging `LogEntry` whose `protoPayload` is an `AuditLog`
//! written by the Kubernetes API server (`serviceName` `k8s.io`,
//! `methodName` like `io.k8s.core.v1.pods.create`), as a Pub/Sub or Kafka
//! sink delivers it. It becomes one audit event:
//!
//! | audit event | from the `LogEntry` |
//! |---|---|
//! | `auditID` | `operation.id`, else `insertId` (neither: the event's id is taken from its content) |
//! | `verb` | the last part of `methodName` |
//! | `objectRef` | `resourceName` (`group/version[/namespaces/ns]/resource[/name[/subresource]]`), else `methodName` |
//! | `user.username` | `authenticationInfo.principalEmail`, else `authoritySelector` (GKE gives no groups) |
//! | `sourceIPs`, `userAgent` | `requestMetadata.callerIp`, `callerSuppliedUserAgent` |
//! | `requestObject`, `responseObject` | `request`, `response` |
//! | `responseStatus.code` | `status.code` (a `google.rpc.Code`) as HTTP; 403 when an `authorizationInfo` entry was not granted |
//! | `annotations` | `labels` (the API server's annotations, such as `authorization.k8s.io/decision`) |
//! | times | `timestamp` |
//!
//! A request for a path that is no resource (`io.k8s.readyz`) is a `get`
//! of that path, without `objectRef`.
//!
//! A `LogEntry` of another service (Deployment Manager, Compute, ...) on the
//! same sink holds no Kubernetes event: it yields none (counted as an empty
//! message, not a failure).

use serde_json::{json, Map, Value};

use super::EnvelopeReason;

pub(super) fn unwrap(payload: &[u8]) -> Result<Vec<u8>, EnvelopeReason> {
    let entry: Map<String, Value> = super::parse_json(payload)?;
    let proto = entry
        .get("protoPayload")
        .and_then(Value::as_object)
        .ok_or(EnvelopeReason::NoProtoPayload)?;
    let method = proto
        .get("methodName")
        .and_then(Value::as_str)
        .unwrap_or("");
    let Some(method) = method.strip_prefix("io.k8s.") else {
        // Another service's audit entry: no Kubernetes event in it.
        return super::event_list([]);
    };
    let event = audit_event(&entry, proto, method)?;
    Ok(serde_json::to_vec(&event).expect("JSON values serialize"))
}

fn audit_event(
    entry: &Map<String, Value>,
    proto: &Map<String, Value>,
    method: &str,
) -> Result<Value, EnvelopeReason> {
    if !method.split('.').any(is_version) {
        return Ok(non_resource_event(entry, proto, method));
    }
    let from_method = MethodName::parse(method)?;
    let object_ref = match proto.get("resourceName").and_then(Value::as_str) {
        Some(name) => ResourceName::parse(name)?.object_ref(&from_method),
        None => from_method.object_ref(),
    };
    let mut event = json!({
        "verb": from_method.verb,
        "requestURI": request_uri(&object_ref),
        "objectRef": object_ref,
    });
    add_common_fields(&mut event, entry, proto);
    Ok(event)
}

/// A request for a path that is no resource (`io.k8s.readyz`,
/// `io.k8s.healthz`, `io.k8s.version`): a `get` of that path.
fn non_resource_event(
    entry: &Map<String, Value>,
    proto: &Map<String, Value>,
    method: &str,
) -> Value {
    let mut event = json!({
        "verb": "get",
        "requestURI": format!("/{}", method.replace('.', "/")),
    });
    add_common_fields(&mut event, entry, proto);
    event
}

/// The fields every event takes from the `LogEntry`, whatever it asked.
fn add_common_fields(event: &mut Value, entry: &Map<String, Value>, proto: &Map<String, Value>) {
    let str_at = |v: &Map<String, Value>, path: &[&str]| -> Option<String> {
        let mut cur = v.get(path[0])?;
        for p in &path[1..] {
            cur = cur.get(p)?;
        }
        cur.as_str().map(str::to_string)
    };
    let audit_id = str_at(entry, &["operation", "id"]).or_else(|| str_at(entry, &["insertId"]));
    let time = str_at(entry, &["timestamp"]).map(|t| rfc3339(&t));
    let caller_ip = str_at(proto, &["requestMetadata", "callerIp"])
        .or_else(|| str_at(proto, &["requestMetadata", "callerIP"]));
    let level = if proto.contains_key("request") || proto.contains_key("response") {
        "RequestResponse"
    } else {
        "Metadata"
    };
    let fields = event.as_object_mut().expect("an object");
    fields.insert("kind".into(), json!("Event"));
    fields.insert("apiVersion".into(), json!("audit.k8s.io/v1"));
    fields.insert("level".into(), json!(level));
    fields.insert("stage".into(), json!("ResponseComplete"));
    fields.insert(
        "responseStatus".into(),
        json!({ "code": status_code(proto) }),
    );
    let mut put = |key: &str, value: Option<Value>| {
        if let Some(v) = value {
            fields.insert(key.to_string(), v);
        }
    };
    put("auditID", audit_id.map(Value::String));
    let user = str_at(proto, &["authenticationInfo", "principalEmail"])
        .or_else(|| str_at(proto, &["authenticationInfo", "authoritySelector"]));
    put("user", user.map(|u| json!({ "username": u })));
    put("sourceIPs", caller_ip.map(|ip| json!([ip])));
    put(
        "userAgent",
        str_at(proto, &["requestMetadata", "callerSuppliedUserAgent"]).map(Value::String),
    );
    put("requestObject", proto.get("request").cloned());
    put("responseObject", proto.get("response").cloned());
    put("annotations", entry.get("labels").cloned());
    put("requestReceivedTimestamp", time.clone().map(Value::String));
    put("stageTimestamp", time.map(Value::String));
}

/// `io.k8s.<group parts>.<version>.<resource>[.<subresource>].<verb>`
/// (without the `io.k8s.` prefix), e.g. `core.v1.pods.exec.create`.
struct MethodName<'a> {
    group: String,
    version: &'a str,
    resource: &'a str,
    subresource: Option<&'a str>,
    verb: &'a str,
}

impl<'a> MethodName<'a> {
    fn parse(method: &'a str) -> Result<Self, EnvelopeReason> {
        let parts: Vec<&str> = method.split('.').collect();
        let bad = || EnvelopeReason::BadMethodName(method.to_string());
        let v = parts.iter().position(|p| is_version(p)).ok_or_else(bad)?;
        let rest = &parts[v + 1..];
        let (resource, subresource, verb) = match rest {
            [resource, verb] => (*resource, None, *verb),
            [resource, sub, verb] => (*resource, Some(*sub), *verb),
            _ => return Err(bad()),
        };
        Ok(MethodName {
            group: api_group(&parts[..v]),
            version: parts[v],
            resource,
            subresource,
            verb,
        })
    }

    fn object_ref(&self) -> Value {
        object_ref(
            &self.group,
            self.version,
            self.resource,
            None,
            None,
            self.subresource,
        )
    }
}

/// `group/version[/namespaces/<ns>]/<resource>[/<name>[/<subresource>]]`,
/// with `core` for the core group.
struct ResourceName<'a> {
    group: &'a str,
    version: &'a str,
    namespace: Option<&'a str>,
    resource: &'a str,
    name: Option<&'a str>,
    subresource: Option<&'a str>,
}

impl<'a> ResourceName<'a> {
    fn parse(name: &'a str) -> Result<Self, EnvelopeReason> {
        let parts: Vec<&str> = name.split('/').collect();
        let bad = || EnvelopeReason::BadResourceName(name.to_string());
        let (group, version, rest) = match parts.as_slice() {
            [group, version, rest @ ..] if !rest.is_empty() => (*group, *version, rest),
            _ => return Err(bad()),
        };
        let (namespace, rest) = match rest {
            ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some(*ns), rest),
            _ => (None, rest),
        };
        let (resource, name, subresource) = match rest {
            [resource] => (*resource, None, None),
            [resource, name] => (*resource, Some(*name), None),
            [resource, name, sub] => (*resource, Some(*name), Some(*sub)),
            _ => return Err(bad()),
        };
        Ok(ResourceName {
            group: if group == "core" { "" } else { group },
            version,
            namespace,
            resource,
            name,
            subresource,
        })
    }

    /// The object reference, with the subresource of the method when the
    /// name does not carry one (GKE names `pods/x` for `pods.exec.create`).
    fn object_ref(&self, method: &MethodName) -> Value {
        object_ref(
            self.group,
            self.version,
            self.resource,
            self.namespace,
            self.name,
            self.subresource.or(method.subresource),
        )
    }
}

fn object_ref(
    group: &str,
    version: &str,
    resource: &str,
    namespace: Option<&str>,
    name: Option<&str>,
    subresource: Option<&str>,
) -> Value {
    let mut r = json!({ "resource": resource, "apiGroup": group, "apiVersion": version });
    let fields = r.as_object_mut().expect("an object");
    for (key, value) in [
        ("namespace", namespace),
        ("name", name),
        ("subresource", subresource),
    ] {
        if let Some(v) = value {
            fields.insert(key.into(), Value::String(v.into()));
        }
    }
    r
}

fn is_version(part: &str) -> bool {
    let Some(rest) = part.strip_prefix('v') else {
        return false;
    };
    let digits = rest.trim_start_matches(|c: char| c.is_ascii_digit());
    digits.len() < rest.len()
        && (digits.is_empty()
            || ["alpha", "beta"].iter().any(|s| {
                digits
                    .strip_prefix(s)
                    .is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
            }))
}

/// The API group of a methodName's group parts: `core` is the core group
/// (`""`); the built-in groups without a domain stay as they are; the
/// others are written reversed (`authorization.rbac` is
/// `rbac.authorization.k8s.io`).
fn api_group(parts: &[&str]) -> String {
    const PLAIN: [&str; 5] = ["apps", "batch", "autoscaling", "policy", "extensions"];
    match parts {
        ["core"] | [] => String::new(),
        [one] if PLAIN.contains(one) => one.to_string(),
        _ => {
            let mut reversed: Vec<&str> = parts.to_vec();
            reversed.reverse();
            format!("{}.k8s.io", reversed.join("."))
        }
    }
}

fn request_uri(object_ref: &Value) -> String {
    let get = |k: &str| object_ref.get(k).and_then(Value::as_str);
    let mut uri = match get("apiGroup") {
        Some("") | None => "/api".to_string(),
        Some(g) => format!("/apis/{g}"),
    };
    uri.push('/');
    uri.push_str(get("apiVersion").unwrap_or("v1"));
    if let Some(ns) = get("namespace") {
        uri.push_str(&format!("/namespaces/{ns}"));
    }
    for part in [get("resource"), get("name"), get("subresource")]
        .into_iter()
        .flatten()
    {
        uri.push('/');
        uri.push_str(part);
    }
    uri
}

/// The HTTP status of the request: `status.code` is a `google.rpc.Code`
/// (absent or 0 when it succeeded); an authorization the entry says was
/// not granted is a 403 whatever the code.
fn status_code(proto: &Map<String, Value>) -> u16 {
    let denied = proto
        .get("authorizationInfo")
        .and_then(Value::as_array)
        .is_some_and(|a| {
            a.iter()
                .any(|i| i.get("granted") == Some(&Value::Bool(false)))
        });
    if denied {
        return 403;
    }
    let code = proto
        .get("status")
        .and_then(|s| s.get("code"))
        .and_then(Value::as_i64)
        .unwrap_or(0);
    match code {
        0 => 200,
        1 => 499,
        3 | 9 | 11 => 400,
        4 => 504,
        5 => 404,
        6 | 10 => 409,
        7 => 403,
        8 => 429,
        12 => 501,
        14 => 503,
        16 => 401,
        _ => 500,
    }
}

/// Cloud Logging's timestamps are RFC 3339; some exports write a space for
/// the `T` and leave out the zone (UTC).
fn rfc3339(t: &str) -> String {
    let t = t.trim();
    if t.len() > 10 && t.as_bytes()[10] == b' ' {
        let mut s = format!("{}T{}", &t[..10], &t[11..]);
        let has_zone = s.ends_with('Z') || s[11..].contains('+') || s[11..].contains('-');
        if !has_zone {
            s.push('Z');
        }
        s
    } else {
        t.to_string()
    }
}
