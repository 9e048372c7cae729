//! Structural limits checked on a message's bytes before it is parsed.
//!
//! One linear pass over the payload, independent of the source's format:
//! it bounds how deep objects and arrays nest and how long any JSON string
//! is. serde_json has its own recursion limit (128) for the typed part of a
//! message, but the parts kept as raw JSON text (`requestObject`,
//! `output_fields`, Tetragon `args`, ...) are only skipped over by the
//! parser and then handed to the rules' JSON functions: this pass is what
//! bounds those. It never allocates.

pub(crate) mod blocks;

use super::{DecodeError, StringProblem, StructureError};

/// Check nesting depth, string lengths and string escapes of a JSON payload.
///
/// The scan tracks string boundaries and brackets outside strings; it does
/// not otherwise validate JSON (the parser does, afterwards), so its verdict
/// on invalid JSON only changes which reason is reported. Inside strings it
/// checks what the parser does not when it skips a value (unknown fields)
/// or keeps it as raw text (`requestObject`, ...): escapes must be valid
/// and `\u` surrogates paired, and no raw control characters. Otherwise
/// such a part would reach the rules' JSON functions, which refuse it, and
/// a rule reading it would silently see nothing.
pub(crate) fn check_structure(
    payload: &[u8],
    max_depth: usize,
    max_string_bytes: usize,
) -> Result<(), StructureError> {
    // The block scan measures only strings that cross a block boundary,
    // which is exact when no string within one block can exceed the limit.
    if max_string_bytes >= 64 {
        blocks::check(payload, max_depth, max_string_bytes)
    } else {
        check_bytewise(payload, max_depth, max_string_bytes)
    }
}

/// The reference scan, one byte (or eight plain string bytes) at a time:
/// for limits on strings shorter than a block, and what the block scan is
/// tested against.
fn check_bytewise(
    payload: &[u8],
    max_depth: usize,
    max_string_bytes: usize,
) -> Result<(), StructureError> {
    let mut depth = 0usize;
    let mut i = 0usize;
    while i < payload.len() {
        match payload[i] {
            b'"' => {
                let start = i;
                i = string_end(payload, i + 1)?;
                // Raw bytes between the quotes: escapes make the decoded
                // string shorter, never longer, so this bounds it.
                let len = i.min(payload.len()) - start - 1;
                if len > max_string_bytes {
                    return Err(string_error(len, max_string_bytes, start));
                }
            }
            b'{' | b'[' => {
                depth += 1;
                if depth > max_depth {
                    return Err(depth_error(max_depth, i));
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    Ok(())
}

fn depth_error(max_depth: usize, at: usize) -> StructureError {
    StructureError::TooDeep {
        limit: max_depth,
        at,
    }
}

/// Index of the quote closing the string whose content starts at `i` (or
/// the payload's length when it is unterminated: the parser reports that).
fn string_end(payload: &[u8], mut i: usize) -> Result<usize, StructureError> {
    loop {
        i = skip_plain_string_bytes(payload, i);
        if i >= payload.len() {
            break;
        }
        match payload[i] {
            b'"' => return Ok(i),
            b'\\' => match Escape::default().check(payload, i) {
                Ok(Some(len)) => i += len,
                Ok(None) => return Ok(payload.len()),
                Err(problem) => return Err(string_problem(problem, i)),
            },
            0x00..=0x1F => return Err(string_problem(StringProblem::ControlCharacter, i)),
            _ => i += 1,
        }
    }
    Ok(payload.len())
}

fn string_problem(problem: StringProblem, at: usize) -> StructureError {
    StructureError::BadString { problem, at }
}

/// Checks escapes in order of position.
#[derive(Default)]
struct Escape {
    /// Position of the backslash of a low surrogate escape already checked
    /// as the second half of a pair.
    paired_low_at: Option<usize>,
}

impl Escape {
    /// Check the escape whose backslash is at `at`: its length in bytes, or
    /// `None` when the payload ends within it (the parser reports that).
    fn check(&mut self, payload: &[u8], at: usize) -> Result<Option<usize>, StringProblem> {
        if self.paired_low_at == Some(at) {
            return Ok(Some(6));
        }
        match payload.get(at + 1).copied() {
            Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => Ok(Some(2)),
            Some(b'u') => {
                let unit = hex4(payload, at + 2).ok_or(StringProblem::InvalidUnicodeEscape)?;
                match unit {
                    0xD800..=0xDBFF => {
                        let low = (payload.get(at + 6) == Some(&b'\\')
                            && payload.get(at + 7) == Some(&b'u'))
                        .then(|| hex4(payload, at + 8))
                        .flatten();
                        if !matches!(low, Some(0xDC00..=0xDFFF)) {
                            return Err(StringProblem::UnpairedSurrogate);
                        }
                        self.paired_low_at = Some(at + 6);
                        Ok(Some(12))
                    }
                    0xDC00..=0xDFFF => Err(StringProblem::UnpairedSurrogate),
                    _ => Ok(Some(6)),
                }
            }
            None => Ok(None),
            Some(_) => Err(StringProblem::InvalidEscape),
        }
    }
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGH_BITS: u64 = 0x8080_8080_8080_8080;

/// Non-zero when some byte of `word` is below `n` (`n` <= 128). Exact as to
/// whether there is one; which bits are set beyond the first is not.
#[inline]
fn some_byte_below(word: u64, n: u8) -> u64 {
    word.wrapping_sub(ONES * n as u64) & !word & HIGH_BITS
}

/// Non-zero when some byte of `word` equals `b`; its lowest set bit is in
/// the lowest such byte.
#[inline]
pub(crate) fn some_byte_is(word: u64, b: u8) -> u64 {
    some_byte_below(word ^ (ONES * b as u64), 1)
}

/// The index of the first byte at or after `i` that is a quote, a
/// backslash or a control character, or the payload's length: the bytes
/// `string_end` has nothing to do with, skipped eight at a time (strings
/// are most of a message, and this scan is on every message's path).
#[inline]
fn skip_plain_string_bytes(payload: &[u8], mut i: usize) -> usize {
    while let Some(chunk) = payload.get(i..i + 8) {
        let word = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
        if some_byte_is(word, b'"') | some_byte_is(word, b'\\') | some_byte_below(word, 0x20) != 0 {
            break;
        }
        i += 8;
    }
    while i < payload.len() && !matches!(payload[i], b'"' | b'\\' | 0x00..=0x1F) {
        i += 1;
    }
    i
}

fn hex4(payload: &[u8], at: usize) -> Option<u32> {
    let digits = payload.get(at..at + 4)?;
    let text = std::str::from_utf8(digits).ok()?;
    if !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u32::from_str_radix(text, 16).ok()
}

fn string_error(len: usize, max: usize, at: usize) -> StructureError {
    StructureError::StringTooLong {
        bytes: len,
        at,
        limit: max,
    }
}

/// Check the size of a field kept as raw JSON text.
pub(crate) fn check_raw_field(
    field: &str,
    raw: Option<&serde_json::value::RawValue>,
    max_bytes: usize,
) -> Result<(), DecodeError> {
    match raw {
        Some(raw) if raw.get().len() > max_bytes => Err(DecodeError::FieldTooLarge {
            field: field.to_string(),
            bytes: raw.get().len(),
            limit: max_bytes,
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depth_counts_brackets_outside_strings_only() {
        assert!(check_structure(br#"{"a":[{"b":1}]}"#, 3, 100).is_ok());
        let e = check_structure(br#"{"a":[{"b":[1]}]}"#, 3, 100).unwrap_err();
        assert_eq!(e, StructureError::TooDeep { limit: 3, at: 11 });
        assert!(
            e.to_string().contains("nesting deeper than the limit of 3"),
            "{e}"
        );
        // Brackets inside strings, also after escaped quotes, do not count.
        assert!(check_structure(br#"{"a":"[[[[{{{{\"[[[[["}"#, 1, 100).is_ok());
        assert!(check_structure(&[b'['; 1000], 999, 10).is_err());
        assert!(check_structure(&[b'['; 1000], 1000, 10).is_ok());
    }

    #[test]
    fn string_length_is_bounded_including_keys_and_unterminated_strings() {
        assert!(check_structure(br#"{"abcd":"efgh"}"#, 2, 4).is_ok());
        let e = check_structure(br#"{"abcd":"efghi"}"#, 2, 4).unwrap_err();
        assert_eq!(
            e,
            StructureError::StringTooLong {
                bytes: 5,
                at: 8,
                limit: 4
            }
        );
        let e = e.to_string();
        assert!(
            e.contains("string of 5 bytes") && e.contains("limit of 4"),
            "{e}"
        );
        assert!(check_structure(br#"{"abcde":1}"#, 2, 4).is_err());
        assert!(check_structure(br#"{"a":"abcdefgh"#, 2, 4).is_err());
        // An escaped backslash ends the escape: the quote after it closes.
        assert!(check_structure(br#"{"a":"\\","b":"x"}"#, 2, 4).is_ok());
    }

    #[test]
    fn the_word_at_a_time_scan_finds_every_special_byte_at_every_position() {
        for special in [b'"', b'\\', 0x00, 0x1F] {
            for len in 0..20 {
                for at in 0..len {
                    let mut bytes = vec![b'a'; len];
                    bytes[at] = special;
                    assert_eq!(
                        skip_plain_string_bytes(&bytes, 0),
                        at,
                        "byte {special:#x} at {at} of {len}"
                    );
                }
                assert_eq!(
                    skip_plain_string_bytes(&vec![0xC3u8; len], 0),
                    len,
                    "UTF-8 bytes are plain"
                );
                assert_eq!(skip_plain_string_bytes(&vec![b' '; len], 0), len);
            }
        }
    }

    #[test]
    fn escapes_the_parser_would_skip_are_checked() {
        assert!(check_structure(br#"{"a":"\u00e9\ud83d\ude00\n\/"}"#, 2, 100).is_ok());
        for bad in [
            &br#"{"a":"\ud800"}"#[..],
            br#"{"a":"\udc00\ud800"}"#,
            br#"{"a":"\ud800\u0041"}"#,
            br#"{"a":"\x41"}"#,
            br#"{"a":"\u12G4"}"#,
            b"{\"a\":\"tab\there\"}",
        ] {
            assert!(
                check_structure(bad, 2, 100).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    /// Content of a string: escapes (valid and not; surrogate pairs and
    /// runs of backslashes fall across block boundaries too), control and
    /// multi-byte characters, filler.
    fn string_piece() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
        use proptest::prelude::*;
        prop_oneof![
            Just(b"\\\"".to_vec()),
            Just(b"\\\\".to_vec()),
            Just(b"\\ud83d\\ude00".to_vec()),
            Just(b"\\ud83d".to_vec()),
            Just(b"\\ude00".to_vec()),
            Just(b"\\u00e9".to_vec()),
            Just(b"\\u12G4".to_vec()),
            Just(b"\\x".to_vec()),
            Just(b"\\n".to_vec()),
            Just(b"[{}]".to_vec()),
            Just(vec![0x01]),
            Just("é".as_bytes().to_vec()),
            (1usize..70).prop_map(|n| vec![b'a'; n]),
        ]
    }

    /// What a payload is made of: brackets and filler outside strings, and
    /// strings (the last one possibly unterminated). Backslashes occur only
    /// inside strings, as in any JSON the parser accepts; outside, the two
    /// scans may differ on what invalid JSON they refuse, and the parser
    /// refuses it anyway.
    fn token() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
        use proptest::prelude::*;
        prop_oneof![
            Just(b"{".to_vec()),
            Just(b"[".to_vec()),
            Just(b"}".to_vec()),
            Just(b"]".to_vec()),
            Just(b", \n".to_vec()),
            (1usize..70).prop_map(|n| vec![b'1'; n]),
            proptest::collection::vec(string_piece(), 0..12).prop_map(|pieces| {
                let mut s = vec![b'"'];
                s.extend(pieces.concat());
                s.push(b'"');
                s
            }),
        ]
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(4000))]
        /// The block scan gives the byte scan's verdict.
        #[test]
        fn the_block_scan_agrees_with_the_byte_scan(
            tokens in proptest::collection::vec(token(), 0..40),
            unterminated in proptest::collection::vec(string_piece(), 0..6),
            cut in proptest::bool::ANY,
            max_depth in 0usize..8,
            max_string in 64usize..140,
        ) {
            let mut payload: Vec<u8> = tokens.concat();
            if cut {
                payload.push(b'"');
                payload.extend(unterminated.concat());
            }
            let bytewise = check_bytewise(&payload, max_depth, max_string);
            let block = blocks::check_baseline(&payload, max_depth, max_string);
            proptest::prop_assert_eq!(
                bytewise.is_ok(),
                block.is_ok(),
                "{:?}: bytewise {:?}, blocks {:?}",
                String::from_utf8_lossy(&payload),
                bytewise,
                block
            );
            // The other instruction sets find the same problem at the same
            // byte.
            for (name, scan) in block_scans() {
                proptest::prop_assert_eq!(
                    &scan(&payload, max_depth, max_string),
                    &block,
                    "{}: {:?}",
                    name,
                    String::from_utf8_lossy(&payload)
                );
            }
        }
    }

    type Scan = fn(&[u8], usize, usize) -> Result<(), StructureError>;

    /// Every block scan this CPU can run.
    fn block_scans() -> Vec<(&'static str, Scan)> {
        #[allow(unused_mut)]
        let mut scans: Vec<(&'static str, Scan)> = vec![("baseline", blocks::check_baseline)];
        #[cfg(target_arch = "x86_64")]
        if blocks::has_avx2() {
            scans.push(("avx2", avx2));
        }
        scans
    }

    #[cfg(target_arch = "x86_64")]
    fn avx2(payload: &[u8], max_depth: usize, max_string: usize) -> Result<(), StructureError> {
        assert!(blocks::has_avx2());
        // SAFETY: the CPU has the features (asserted above).
        unsafe { blocks::check_avx2(payload, max_depth, max_string) }
    }

    #[test]
    fn the_block_scans_measure_strings_across_blocks() {
        for (name, check) in block_scans() {
            measures_strings_across_blocks(name, check);
        }
    }

    fn measures_strings_across_blocks(name: &str, check: Scan) {
        for len in [31usize, 32, 33, 63, 64, 65, 127, 128, 129, 300] {
            for lead in [0usize, 1, 30, 31, 32, 33, 62, 63, 64] {
                let payload = format!("{}\"{}\"", " ".repeat(lead), "a".repeat(len));
                for max in [64usize, 100, 128, 200] {
                    let verdict = check(payload.as_bytes(), 4, max);
                    assert_eq!(
                        verdict.is_ok(),
                        len <= max,
                        "{name}: {lead} + {len} vs {max}: {verdict:?}"
                    );
                    if let Err(e) = verdict {
                        assert!(
                            e.to_string()
                                .contains(&format!("string of {len} bytes (at byte {lead})")),
                            "{e}"
                        );
                    }
                }
            }
        }
        // Unterminated: measured to the end.
        assert!(check(format!("\"{}", "a".repeat(200)).as_bytes(), 4, 150).is_err());
        assert!(check(format!("\"{}", "a".repeat(100)).as_bytes(), 4, 150).is_ok());
    }
}
