//! A cursor over JSON text the decoders have validated: where values end,
//! the members and elements of objects and arrays in order, strings
//! decoded. Such text is a raw JSON field (`requestObject`, the values of
//! each source's [`SourceSpec::json_columns`]), which the parser accepted
//! whole and which is kept byte for byte as it arrived.
//!
//! Those values are walked again after decoding (the `pod_spec` facts;
//! correlation keeping only the members its rules read of each retained
//! document). Skipping a value there needs only where it ends, which
//! brackets and string boundaries tell: no second validation, and the
//! block scan of the structure check finds them 64 bytes at a time.
//!
//! Exact on valid JSON. On other text the answers are meaningless but
//! safe: indices within the text, or `None`; never a panic.
//!
//! [`SourceSpec::json_columns`]: crate::SourceSpec::json_columns

use std::borrow::Cow;

use crate::decode::limits::blocks::container_end;
use crate::decode::limits::some_byte_is;

/// One past the end of the JSON value starting at `json[start]` (its first
/// byte, not whitespace), or `None` when it does not end within `json`.
pub fn value_end(json: &[u8], start: usize) -> Option<usize> {
    match json.get(start)? {
        b'{' | b'[' => container_end(json, start),
        b'"' => string_end(json, start),
        _ => Some(scalar_end(json, start)),
    }
}

/// Walk the members of the object (or the elements of the array) whose
/// opening bracket is at `open`: `item` is given where each starts and
/// returns one past its end. One past the closing bracket.
#[inline(always)]
pub fn for_each_item(
    json: &str,
    open: usize,
    mut item: impl FnMut(usize) -> Option<usize>,
) -> Option<usize> {
    let bytes = json.as_bytes();
    let mut i = skip_whitespace(json, open + 1);
    if matches!(bytes.get(i)?, b'}' | b']') {
        return Some(i + 1);
    }
    loop {
        i = skip_whitespace(json, item(i)?);
        match bytes.get(i)? {
            b',' => i = skip_whitespace(json, i + 1),
            b'}' | b']' => return Some(i + 1),
            _ => return None,
        }
    }
}

/// The member whose key starts at `at`: its name, decoded, and where its
/// value starts.
pub fn member_at(json: &str, at: usize) -> Option<(Cow<'_, str>, usize)> {
    let (name, key_end) = string_at(json, at)?;
    let colon = skip_whitespace(json, key_end);
    (json.as_bytes().get(colon) == Some(&b':')).then(|| (name, skip_whitespace(json, colon + 1)))
}

/// The first byte at or after `i` that is not JSON whitespace.
pub fn skip_whitespace(json: &str, mut i: usize) -> usize {
    while matches!(json.as_bytes().get(i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
        i += 1;
    }
    i
}

/// The string whose opening quote is at byte `start` of `json`, decoded
/// (borrowed unless it has escapes), and one past its closing quote.
pub fn string_at(json: &str, start: usize) -> Option<(Cow<'_, str>, usize)> {
    let bytes = json.as_bytes();
    if bytes.get(start) != Some(&b'"') {
        return None;
    }
    let first = quote_or_backslash(bytes, start + 1)?;
    if bytes[first] == b'"' {
        return Some((Cow::Borrowed(json.get(start + 1..first)?), first + 1));
    }
    let end = string_end(bytes, start)?;
    let decoded = serde_json::from_str::<String>(json.get(start..end)?).ok()?;
    Some((Cow::Owned(decoded), end))
}

/// One past the closing quote of the string whose opening quote is at
/// `start`.
fn string_end(json: &[u8], start: usize) -> Option<usize> {
    let mut i = start + 1;
    loop {
        i = quote_or_backslash(json, i)?;
        if json[i] == b'"' {
            return Some(i + 1);
        }
        // A backslash and the byte it escapes (`\u` digits are plain).
        i += 2;
    }
}

/// The index of the first quote or backslash at or after `i`.
#[inline]
fn quote_or_backslash(json: &[u8], mut i: usize) -> Option<usize> {
    // Most strings of a document (keys, names) are short: eight bytes at a
    // time over the first 64, where memchr's vector loop costs more to set
    // up than it saves; memchr for the rest of longer ones.
    let words_end = json.len().min(i.saturating_add(64));
    while let Some(chunk) = json.get(i..i + 8).filter(|_| i + 8 <= words_end) {
        let word = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
        // The lowest bit set is exact (see `some_byte_is`).
        let hits = some_byte_is(word, b'"') | some_byte_is(word, b'\\');
        if hits != 0 {
            return Some(i + hits.trailing_zeros() as usize / 8);
        }
        i += 8;
    }
    memchr::memchr2(b'"', b'\\', json.get(i..)?).map(|n| i + n)
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
    fn strings_are_decoded_where_they_have_escapes() {
        let json = r#"["name", "n\u0061me\"", "", 1]"#;
        assert_eq!(string_at(json, 1), Some((Cow::Borrowed("name"), 7)));
        assert_eq!(
            string_at(json, 9),
            Some((Cow::Owned("name\"".to_string()), 22))
        );
        assert_eq!(string_at(json, 24), Some((Cow::Borrowed(""), 26)));
        assert_eq!(string_at(json, 28), None, "not a string");
        assert_eq!(string_at(r#""\x""#, 0), None, "not a valid escape");
        assert_eq!(string_at(r#""abc"#, 0), None, "unclosed");
    }

    #[test]
    fn the_first_quote_or_backslash_is_found_at_every_position() {
        for len in 0..150 {
            for from in 0..4.min(len + 1) {
                for (at, special) in (from..len).flat_map(|at| [(at, b'"'), (at, b'\\')]) {
                    let mut text = vec![b'a'; len];
                    // Bytes a word-at-a-time test could confuse before it:
                    // neighbours of the special bytes (`#` after the quote,
                    // `[` before the backslash), a multi-byte lead byte.
                    text[from..at].iter_mut().step_by(3).for_each(|b| *b = 0x23);
                    text[from..at]
                        .iter_mut()
                        .skip(1)
                        .step_by(3)
                        .for_each(|b| *b = 0x5B);
                    text[from..at]
                        .iter_mut()
                        .skip(2)
                        .step_by(3)
                        .for_each(|b| *b = 0xC3);
                    text[at] = special;
                    assert_eq!(
                        quote_or_backslash(&text, from),
                        Some(at),
                        "{len} {from} {at}"
                    );
                }
                let plain = vec![b'!'; len];
                assert_eq!(quote_or_backslash(&plain, from), None, "{len} {from}");
            }
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
