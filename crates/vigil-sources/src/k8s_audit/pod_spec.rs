//! The `pod_spec` column of `k8s_audit`: what a workload request object
//! says about the pods it creates, read once at decode time.
//!
//! Why a column: the misconfiguration and supply-chain rules (privileged
//! pods, host namespaces, host paths, capabilities, image registries and
//! tags) all ask the same questions of the same request objects. Asked in
//! SQL with recursive JSONPath (`$..securityContext.privileged`), every rule
//! walked every workload document again; that walk was the largest cost of
//! the whole rule pack (docs/benchmarks.md). Here one pass over the
//! document answers all of them.
//!
//! Semantics, for each field, are those of a recursive-descent JSONPath
//! over the whole request object, so a pod (`spec.containers`), a
//! deployment (`spec.template.spec.containers`), a cron job
//! (`spec.jobTemplate.spec.template.spec.containers`) and a merge patch of
//! any of them answer alike:
//!
//! | field | JSONPath equivalent |
//! |---|---|
//! | `images` | `$..['containers','initContainers','ephemeralContainers'][*].image` |
//! | `privileged` | `$..securityContext.privileged` is `true` somewhere |
//! | `run_as_root` | `$..securityContext.runAsUser` is `0` somewhere |
//! | `run_as_non_root_false` | `$..securityContext.runAsNonRoot` is `false` somewhere |
//! | `added_capabilities` | `$..securityContext.capabilities.add[*]` |
//! | `host_network`, `host_pid`, `host_ipc` | `$..hostNetwork` / `$..hostPID` / `$..hostIPC` is `true` somewhere |
//! | `host_paths` | `$..volumes[*].hostPath.path` |
//!
//! Booleans also accept the strings `"true"` / `"false"` and `runAsUser`
//! the string `"0"`, as the JSONPath functions (which compare values
//! rendered as text) did. Lists keep document order.

use std::sync::Arc;

use arrow::array::{ArrayRef, BooleanBuilder, ListBuilder, NullBufferBuilder, StringBuilder};

use crate::decode::columns::struct_array;
use crate::decode::DecodeError;
use crate::json::{for_each_item, member_at, skip_whitespace, string_at, value_end};
use super::schema;

/// Resources whose request objects carry a pod specification. `pod_spec`
/// is computed only for these (and only on requests with a request object
/// and no subresource other than `ephemeralcontainers`): everything else
/// has a NULL `pod_spec`, and no work is spent walking it.
pub const WORKLOAD_RESOURCES: [&str; 9] = [
    "pods",
    "deployments",
    "daemonsets",
    "statefulsets",
    "replicasets",
    "replicationcontrollers",
    "jobs",
    "cronjobs",
    "podtemplates",
];

/// Whether an event with this object reference gets a `pod_spec`.
pub fn applies_to(resource: Option<&str>, subresource: Option<&str>) -> bool {
    resource.is_some_and(|r| WORKLOAD_RESOURCES.contains(&r))
        && matches!(subresource, None | Some("") | Some("ephemeralcontainers"))
}

/// What one request object says (see the module doc).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PodSpecFacts {
    pub images: Vec<String>,
    pub privileged: bool,
    pub run_as_root: bool,
    pub run_as_non_root_false: bool,
    pub added_capabilities: Vec<String>,
    pub host_network: bool,
    pub host_pid: bool,
    pub host_ipc: bool,
    pub host_paths: Vec<String>,
}

/// Where a value sits, as far as the facts care: the key it is under and
/// the relevant keys above it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    Other,
    SecurityContext,
    Capabilities,
    CapabilitiesAdd,
    Capability,
    Privileged,
    RunAsUser,
    RunAsNonRoot,
    ContainerList,
    Container,
    Image,
    HostNetwork,
    HostPid,
    HostIpc,
    Volumes,
    Volume,
    HostPath,
    HostPathPath,
}

/// The slot of the value under `key` of an object in slot `parent`.
fn member_slot(parent: Slot, key: &str) -> Slot {
    match (parent, key) {
        (_, "securityContext") => Slot::SecurityContext,
        (Slot::SecurityContext, "privileged") => Slot::Privileged,
        (Slot::SecurityContext, "runAsUser") => Slot::RunAsUser,
        (Slot::SecurityContext, "runAsNonRoot") => Slot::RunAsNonRoot,
        (Slot::SecurityContext, "capabilities") => Slot::Capabilities,
        (Slot::Capabilities, "add") => Slot::CapabilitiesAdd,
        (_, "containers" | "initContainers" | "ephemeralContainers") => Slot::ContainerList,
        (Slot::Container, "image") => Slot::Image,
        (_, "hostNetwork") => Slot::HostNetwork,
        (_, "hostPID") => Slot::HostPid,
        (_, "hostIPC") => Slot::HostIpc,
        (_, "volumes") => Slot::Volumes,
        (Slot::Volume, "hostPath") => Slot::HostPath,
        (Slot::HostPath, "path") => Slot::HostPathPath,
        _ => Slot::Other,
    }
}

/// The slot of an element of an array in slot `parent`.
fn element_slot(parent: Slot) -> Slot {
    match parent {
        Slot::ContainerList => Slot::Container,
        Slot::CapabilitiesAdd => Slot::Capability,
        Slot::Volumes => Slot::Volume,
        _ => Slot::Other,
    }
}

/// Read the facts of one request object: JSON text the decoder's parser
/// accepted whole (a raw field). Its members are walked once; values no
/// fact depends on are skipped by where they end ([`crate::json`]), not
/// parsed again. Nesting is bounded by the decode limits checked before
/// (`limits.max_nesting_depth`); `depth` guards the recursion regardless.
pub fn read(json: &str) -> Result<PodSpecFacts, DecodeError> {
    let mut facts = PodSpecFacts::default();
    let start = skip_whitespace(json, 0);
    walk(json, start, Slot::Other, 0, &mut facts)
        .filter(|&end| skip_whitespace(json, end) == json.len())
        .ok_or_else(|| DecodeError::UnreadableRawField {
            field: "requestObject".into(),
        })?;
    Ok(facts)
}

/// Recursion limit of the walk; deeper values are skipped (the decode
/// limits refuse such messages before they get here).
const MAX_DEPTH: usize = 256;

/// Walk the value at byte `at` of `json`, in `slot`: one past its end.
fn walk(json: &str, at: usize, slot: Slot, depth: usize, facts: &mut PodSpecFacts) -> Option<usize> {
    let bytes = json.as_bytes();
    if depth > MAX_DEPTH {
        return value_end(bytes, at);
    }
    match bytes.get(at)? {
        b'{' => for_each_item(json, at, |i| {
            let (key, value) = member_at(json, i)?;
            walk(json, value, member_slot(slot, &key), depth + 1, facts)
        }),
        b'[' => for_each_item(json, at, |i| {
            walk(json, i, element_slot(slot), depth + 1, facts)
        }),
        // Most strings of a spec (names, labels, commands, env) are no
        // fact: skipped, not decoded.
        b'"' if slot == Slot::Other => value_end(bytes, at),
        b'"' => {
            let (s, end) = string_at(json, at)?;
            match slot {
                Slot::Image => facts.images.push(s.into_owned()),
                Slot::Capability => facts.added_capabilities.push(s.into_owned()),
                Slot::HostPathPath => facts.host_paths.push(s.into_owned()),
                _ => set_flag(slot, s == "true", s == "false", s == "0", facts),
            }
            Some(end)
        }
        _ => {
            let end = value_end(bytes, at)?;
            match json.get(at..end)? {
                "true" => set_flag(slot, true, false, false, facts),
                "false" => set_flag(slot, false, true, false, facts),
                // Only `runAsUser: 0` matters of numbers: an integer zero
                // (`0.0` and `0e0` are not).
                "0" | "-0" => set_flag(slot, false, false, true, facts),
                _ => {}
            }
            Some(end)
        }
    }
}

/// Record a flag for the scalar in `slot`: `is_true` / `is_false` for the
/// booleans, `is_zero` for `runAsUser`.
fn set_flag(slot: Slot, is_true: bool, is_false: bool, is_zero: bool, facts: &mut PodSpecFacts) {
    match slot {
        Slot::Privileged => facts.privileged |= is_true,
        Slot::RunAsNonRoot => facts.run_as_non_root_false |= is_false,
        Slot::RunAsUser => facts.run_as_root |= is_zero,
        Slot::HostNetwork => facts.host_network |= is_true,
        Slot::HostPid => facts.host_pid |= is_true,
        Slot::HostIpc => facts.host_ipc |= is_true,
        _ => {}
    }
}

/// Builder of the `pod_spec` struct column.
pub struct PodSpecCols {
    images: ListBuilder<StringBuilder>,
    privileged: BooleanBuilder,
    run_as_root: BooleanBuilder,
    run_as_non_root_false: BooleanBuilder,
    added_capabilities: ListBuilder<StringBuilder>,
    host_network: BooleanBuilder,
    host_pid: BooleanBuilder,
    host_ipc: BooleanBuilder,
    host_paths: ListBuilder<StringBuilder>,
    valid: NullBufferBuilder,
}

impl PodSpecCols {
    pub fn new(cap: usize) -> Self {
        PodSpecCols {
            images: ListBuilder::new(StringBuilder::new()),
            privileged: BooleanBuilder::with_capacity(cap),
            run_as_root: BooleanBuilder::with_capacity(cap),
            run_as_non_root_false: BooleanBuilder::with_capacity(cap),
            added_capabilities: ListBuilder::new(StringBuilder::new()),
            host_network: BooleanBuilder::with_capacity(cap),
            host_pid: BooleanBuilder::with_capacity(cap),
            host_ipc: BooleanBuilder::with_capacity(cap),
            host_paths: ListBuilder::new(StringBuilder::new()),
            valid: NullBufferBuilder::new(cap),
        }
    }

    /// Append one row: the facts, or NULL when the event has no pod spec.
    pub fn append(&mut self, facts: Option<&PodSpecFacts>) {
        self.valid.append(facts.is_some());
        static NONE: PodSpecFacts = PodSpecFacts {
            images: Vec::new(),
            privileged: false,
            run_as_root: false,
            run_as_non_root_false: false,
            added_capabilities: Vec::new(),
            host_network: false,
            host_pid: false,
            host_ipc: false,
            host_paths: Vec::new(),
        };
        let f = facts.unwrap_or(&NONE);
        let list = |b: &mut ListBuilder<StringBuilder>, items: &[String]| {
            for item in items {
                b.values().append_value(item);
            }
            // An absent pod spec has NULL lists, like every child of a NULL struct.
            b.append(facts.is_some());
        };
        let flag = |b: &mut BooleanBuilder, v: bool| b.append_option(facts.map(|_| v));
        list(&mut self.images, &f.images);
        flag(&mut self.privileged, f.privileged);
        flag(&mut self.run_as_root, f.run_as_root);
        flag(&mut self.run_as_non_root_false, f.run_as_non_root_false);
        list(&mut self.added_capabilities, &f.added_capabilities);
        flag(&mut self.host_network, f.host_network);
        flag(&mut self.host_pid, f.host_pid);
        flag(&mut self.host_ipc, f.host_ipc);
        list(&mut self.host_paths, &f.host_paths);
    }

    pub fn finish(&mut self) -> ArrayRef {
        let children: Vec<ArrayRef> = vec![
            Arc::new(self.images.finish()),
            Arc::new(self.privileged.finish()),
            Arc::new(self.run_as_root.finish()),
            Arc::new(self.run_as_non_root_false.finish()),
            Arc::new(self.added_capabilities.finish()),
            Arc::new(self.host_network.finish()),
            Arc::new(self.host_pid.finish()),
            Arc::new(self.host_ipc.finish()),
            Arc::new(self.host_paths.finish()),
        ];
        struct_array(schema::pod_spec_fields(), children, &mut self.valid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiter::{Jiter, JiterResult, NumberAny, NumberInt, Peek};

    /// The walk as it was before request objects were known to be valid:
    /// every value parsed (jiter). The reference for [`read`].
    fn parsed_read(json: &str) -> Option<PodSpecFacts> {
        fn walk(j: &mut Jiter<'_>, peek: Peek, slot: Slot, f: &mut PodSpecFacts) -> JiterResult<()> {
            match peek {
                Peek::Object => {
                    let mut key = j.known_object()?.map(str::to_owned);
                    while let Some(k) = key {
                        let value = j.peek()?;
                        walk(j, value, member_slot(slot, &k), f)?;
                        key = j.next_key()?.map(str::to_owned);
                    }
                }
                Peek::Array => {
                    let mut next = j.known_array()?;
                    while let Some(value) = next {
                        walk(j, value, element_slot(slot), f)?;
                        next = j.array_step()?;
                    }
                }
                Peek::String if slot == Slot::Other => j.known_skip(peek)?,
                Peek::String => {
                    let s = j.known_str()?;
                    match slot {
                        Slot::Image => f.images.push(s.to_owned()),
                        Slot::Capability => f.added_capabilities.push(s.to_owned()),
                        Slot::HostPathPath => f.host_paths.push(s.to_owned()),
                        _ => set_flag(slot, s == "true", s == "false", s == "0", f),
                    }
                }
                Peek::True | Peek::False => {
                    let b = j.known_bool(peek)?;
                    set_flag(slot, b, !b, false, f);
                }
                Peek::Null => j.known_null()?,
                _ if slot == Slot::RunAsUser => {
                    let zero = matches!(j.known_number(peek)?, NumberAny::Int(NumberInt::Int(0)));
                    set_flag(slot, false, false, zero, f);
                }
                _ => j.known_skip(peek)?,
            }
            Ok(())
        }
        let mut facts = PodSpecFacts::default();
        let mut j = Jiter::new(json.as_bytes());
        let peek = j.peek().ok()?;
        walk(&mut j, peek, Slot::Other, &mut facts).ok()?;
        j.finish().ok()?;
        Some(facts)
    }

    /// Request objects made of the keys facts depend on (some written with
    /// escapes) and others, and the values they may take.
    fn request_object() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let key = prop_oneof![
            Just("securityContext"),
            Just("privileged"),
            Just("privil\\u0065ged"),
            Just("runAsUser"),
            Just("runAsNonRoot"),
            Just("capabilities"),
            Just("add"),
            Just("containers"),
            Just("initContainers"),
            Just("image"),
            Just("im\\u0061ge"),
            Just("hostNetwork"),
            Just("hostPID"),
            Just("volumes"),
            Just("hostPath"),
            Just("path"),
            Just("spec"),
        ];
        let leaf = prop_oneof![
            Just("true"),
            Just("false"),
            Just("null"),
            Just("0"),
            Just("-0"),
            Just("0.0"),
            Just("0e0"),
            Just("1000"),
            Just("\"true\""),
            Just("\"false\""),
            Just("\"0\""),
            Just("\"nginx:1.25\""),
            Just("\"ngin\\u0078\\\"\""),
            Just("\"SYS_ADMIN\""),
            // What a fact's parent holds, so that facts are often in place.
            Just(r#"{"runAsUser": -0, "privileged": "true"}"#),
            Just(r#"{"add": ["NET_ADMIN", "SYS_P\u0054RACE"]}"#),
            Just(r#"[{"image": "a"}, {"image": null}]"#),
            Just(r#"[{"hostPath": {"path": "/"}}]"#),
        ]
        .prop_map(str::to_string);
        leaf.prop_recursive(7, 120, 6, move |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..5)
                    .prop_map(|v| format!("[{}]", v.join(", "))),
                proptest::collection::vec((key.clone(), inner), 0..6).prop_map(|members| {
                    let members: Vec<String> = members
                        .into_iter()
                        .map(|(k, v)| format!("\"{k}\": {v}"))
                        .collect();
                    format!("{{{}}}", members.join(","))
                }),
            ]
        })
    }

    #[test]
    fn zero_is_an_integer_zero_as_the_parsed_walk_reads_it() {
        for (zero, is_root) in [("0", true), ("-0", true), ("0.0", false), ("0e0", false), ("-0.0", false)] {
            let doc = format!(r#"{{"securityContext":{{"runAsUser":{zero}}}}}"#);
            assert_eq!(read(&doc).unwrap().run_as_root, is_root, "{doc}");
            assert_eq!(parsed_read(&doc).unwrap().run_as_root, is_root, "{doc}");
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(3000))]
        /// The walk over a valid request object finds the parsed walk's facts.
        #[test]
        fn reads_the_facts_the_parsed_walk_reads(doc in request_object()) {
            proptest::prop_assert_eq!(read(&doc).ok(), parsed_read(&doc), "{}", doc);
        }
    }

    #[test]
    fn reads_a_deployment_template_and_a_pod_alike() {
        let pod = r#"{"kind":"Pod","spec":{"hostPID":true,"containers":[{"name":"a","image":"nginx:1.25",
            "securityContext":{"privileged":true,"capabilities":{"add":["SYS_ADMIN","NET_RAW"]}}}],
            "initContainers":[{"image":"busybox"}],
            "volumes":[{"name":"root","hostPath":{"path":"/"}},{"name":"cfg","configMap":{"name":"x"}}]}}"#;
        let deployment = format!(
            r#"{{"kind":"Deployment","spec":{{"replicas":2,"template":{}}}}}"#,
            pod
        );
        for doc in [pod.to_string(), deployment] {
            let f = read(&doc).unwrap();
            assert_eq!(f.images, ["nginx:1.25", "busybox"]);
            assert!(f.privileged && f.host_pid);
            assert!(!f.host_network && !f.host_ipc && !f.run_as_root && !f.run_as_non_root_false);
            assert_eq!(f.added_capabilities, ["SYS_ADMIN", "NET_RAW"]);
            assert_eq!(f.host_paths, ["/"]);
        }
    }

    #[test]
    fn keys_count_only_in_their_place() {
        // `image` outside a container list, `privileged` outside a
        // securityContext, `path` outside a hostPath, `add` outside
        // capabilities: none of them is a fact.
        let doc = r#"{"image":"evil","privileged":true,"metadata":{"annotations":{"hostNetwork":"false"}},
            "spec":{"securityContext":{"runAsUser":1000,"runAsNonRoot":true,"add":["X"]},
            "volumes":[{"path":"/etc","emptyDir":{}}],
            "containers":[{"image":"ok","env":[{"name":"image","value":"nope"}],
                "securityContext":{"privileged":false,"runAsUser":0.0}}]}}"#;
        let f = read(doc).unwrap();
        assert_eq!(
            f,
            PodSpecFacts {
                images: vec!["ok".into()],
                ..Default::default()
            }
        );
    }

    #[test]
    fn root_user_and_string_booleans_count_as_jsonpath_text_comparison_did() {
        let f = read(r#"{"spec":{"hostNetwork":"true","securityContext":{"runAsUser":0,"runAsNonRoot":false},
            "ephemeralContainers":[{"image":"debug","securityContext":{"runAsUser":"0","privileged":"true"}}]}}"#)
        .unwrap();
        assert!(f.host_network && f.run_as_root && f.run_as_non_root_false && f.privileged);
        assert_eq!(f.images, ["debug"]);
    }

    #[test]
    fn applies_only_to_workload_requests() {
        assert!(applies_to(Some("deployments"), None));
        assert!(applies_to(Some("pods"), Some("ephemeralcontainers")));
        assert!(!applies_to(Some("pods"), Some("status")));
        assert!(!applies_to(Some("configmaps"), None));
        assert!(!applies_to(None, None));
    }

    #[test]
    fn a_json_patch_array_and_scalars_read_without_error() {
        for doc in [
            r#"[{"op":"replace","path":"/spec/containers/0/image","value":"x"}]"#,
            "null",
            "42",
            r#""s""#,
        ] {
            assert_eq!(read(doc).unwrap(), PodSpecFacts::default(), "{doc}");
        }
    }
}
