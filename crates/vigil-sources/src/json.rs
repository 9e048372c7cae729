//! Where values end in JSON text the decoders have validated: the raw JSON
//! columns of each source ([`SourceSpec::json_columns`]), which hold
//! values the parser accepted whole, byte for byte as they arrived.
//!
//! Those values are walked again downstream (correlation keeps only the
//! members its rules read of each retained document). Skipping a member
//! there needs only where it ends, which brackets and string boundaries
//! tell: no second validation, and the block scan of the structure check
//! finds them 64 bytes at a time.
//!
//! Exact on valid JSON. On other text the answer is meaningless but safe:
//! an index within the text, or `None`; never a panic.
//!
//! [`SourceSpec::json_columns`]: crate::SourceSpec::json_columns

use crate::decode::limits::blocks::container_end;

/// One past the end of the JSON value starting at `json[start]` (its first
/// byte, not whitespace), or `None` when it does not end within `json`.
pub fn value_end(json: &[u8], start: usize) -> Option<usize> {
    match json.get(start)? {
        b'{' | b'[' => container_end(json, start),
        b'"' => string_end(json, start),
        _ => Some(scalar_end(json, start)),
    }
}

/// One past the closing quote of the string whose opening quote is at
/// `start`.
fn string_end(json: &[u8], start: usize) -> Option<usize> {
    let mut i = start + 1;
    loop {
        i += memchr::memchr2(b'"', b'\\', json.get(i..)?)?;
        if json[i] == b'"' {
            return Some(i + 1);
        }
        // A backslash and the byte it escapes (`\u` digits are plain).
        i += 2;
    }
}

/// The end of a number, `true`, `false` or `null`: the first byte that
/// may follow a value.
fn scalar_end(json: &[u8], start: usize) -> usize {
    json[start..]
        .iter()
        .position(|b| matches!(b, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r'))
        .map_or(json.len(), |n| start + n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::limits::blocks::container_end_baseline;

    type ContainerEnd = fn(&[u8], usize) -> Option<usize>;

    /// Every container scan this CPU can run.
    fn container_scans() -> Vec<(&'static str, ContainerEnd)> {
        #[allow(unused_mut)]
        let mut scans: Vec<(&'static str, ContainerEnd)> =
            vec![("baseline", container_end_baseline)];
        #[cfg(target_arch = "x86_64")]
        if crate::decode::limits::blocks::has_avx2() {
            scans.push(("avx2", |json, start| {
                // SAFETY: the CPU has the features (checked above).
                unsafe { crate::decode::limits::blocks::container_end_avx2(json, start) }
            }));
        }
        scans
    }

    #[test]
    fn values_end_where_their_text_ends() {
        for (value, end) in [
            (r#""a\"b\\" , 1"#, 8),
            (r#""\\\\"]"#, 6),
            ("12.5e3, 2", 6),
            ("true}", 4),
            ("null", 4),
            (r#"{"a": "}", "b": [1, {"c": "]\"["}]} , 2"#, 35),
            ("[[], {}, [[]]]]", 14),
        ] {
            assert_eq!(value_end(value.as_bytes(), 0), Some(end), "{value}");
        }
    }

    #[test]
    fn unclosed_values_have_no_end() {
        for text in [r#"{"a": [1, 2]"#, r#"["]"#, r#""abc\""#, "{", r#""\"#] {
            assert_eq!(value_end(text.as_bytes(), 0), None, "{text}");
        }
        assert_eq!(value_end(b"[1]", 3), None);
    }

    /// Arbitrary JSON values (as `serde_json::Value`), strings with quotes,
    /// backslashes, brackets and multi-byte characters among them.
    fn json_value() -> impl proptest::strategy::Strategy<Value = serde_json::Value> {
        use proptest::prelude::*;
        let text = proptest::string::string_regex(r#"([a-z\\"{}\[\]é]|\\u00e9){0,80}"#).unwrap();
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            text.prop_map(serde_json::Value::from),
        ];
        leaf.prop_recursive(6, 120, 8, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..8).prop_map(serde_json::Value::from),
                proptest::collection::btree_map("[a-z\"]{0,70}", inner, 0..8)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]
        /// Placed after any prefix and before more values, every value is
        /// found to end where its text does, by every scan.
        #[test]
        fn a_value_ends_where_its_text_does(
            value in json_value(),
            lead in 0usize..70,
            pretty in proptest::bool::ANY,
        ) {
            let text = if pretty {
                serde_json::to_string_pretty(&value).unwrap()
            } else {
                serde_json::to_string(&value).unwrap()
            };
            let json = format!("[{}{text}, {text}]", " ".repeat(lead));
            let start = 1 + lead;
            let end = start + text.len();
            proptest::prop_assert_eq!(value_end(json.as_bytes(), start), Some(end));
            if matches!(value, serde_json::Value::Array(_) | serde_json::Value::Object(_)) {
                for (name, scan) in container_scans() {
                    proptest::prop_assert_eq!(scan(json.as_bytes(), start), Some(end), "{}", name);
                    proptest::prop_assert_eq!(scan(&json.as_bytes()[..end - 1], start), None, "{}", name);
                }
            }
        }
    }
}
