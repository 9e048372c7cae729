//! The structure check 64 bytes at a time.
//!
//! Each block is classified into bit masks (bit `i` for byte `i`: quotes,
//! backslashes, brackets, control characters), with SSE2 on x86-64, or
//! AVX2 where the CPU has it (detected at run time: the release build
//! targets the x86-64 baseline). String boundaries, escapes and the
//! brackets outside strings then follow from bit arithmetic, as in
//! simdjson's first stage (Langdale and Lemire, "Parsing Gigabytes of JSON
//! per Second", 2019), and only the rare events are looked at one by one:
//! escapes, and brackets when the depth could reach the limit within the
//! block.
//!
//! It gives the same verdict as the byte-at-a-time scan in `super` (a
//! property test compares them, and the two block scans with each other),
//! on the condition that `max_string_bytes >= 64`: a string that starts
//! and ends within one block is then always short enough, so only strings
//! crossing a block boundary are measured.

use super::{string_error, string_problem, Escape, StringProblem, StructureError};

/// Bit masks of one 64-byte block.
#[derive(Default)]
struct Classes {
    quote: u64,
    backslash: u64,
    /// `{` or `[`.
    open: u64,
    /// `}` or `]`.
    close: u64,
    /// Bytes below 0x20.
    control: u64,
}

/// How a scan classifies a block and finds where strings are open; the
/// bit arithmetic of [`scan`] is the same for every instruction set.
trait Blocks {
    fn classify(block: &[u8; 64]) -> Classes;

    /// Bit `i` set where an odd number of quotes is at or before `i`:
    /// inside a string (its opening quote included, its closing quote not).
    #[inline(always)]
    fn prefix_xor(mut x: u64) -> u64 {
        x ^= x << 1;
        x ^= x << 2;
        x ^= x << 4;
        x ^= x << 8;
        x ^= x << 16;
        x ^= x << 32;
        x
    }
}

/// The x86-64 baseline (SSE2), or plain Rust elsewhere.
struct Baseline;

#[cfg(target_arch = "x86_64")]
impl Blocks for Baseline {
    #[inline(always)]
    fn classify(block: &[u8; 64]) -> Classes {
        use std::arch::x86_64::*;
        let mut c = Classes::default();
        for k in 0..4 {
            // SAFETY: SSE2 is part of the x86-64 baseline; the load reads
            // the 16 bytes of `block` at 16·k, within its 64.
            let (quote, backslash, open, close, control) = unsafe {
                let v = _mm_loadu_si128(block.as_ptr().add(16 * k) as *const __m128i);
                let mask = |m: __m128i| _mm_movemask_epi8(m) as u16 as u64;
                let is = |b: u8| _mm_cmpeq_epi8(v, _mm_set1_epi8(b as i8));
                // `[` and `{` (and `]` and `}`) differ only in bit 0x20.
                let folded = _mm_or_si128(v, _mm_set1_epi8(0x20));
                let low = _mm_set1_epi8(0x1F);
                (
                    mask(is(b'"')),
                    mask(is(b'\\')),
                    mask(_mm_cmpeq_epi8(folded, _mm_set1_epi8(b'{' as i8))),
                    mask(_mm_cmpeq_epi8(folded, _mm_set1_epi8(b'}' as i8))),
                    // Unsigned v <= 0x1F.
                    mask(_mm_cmpeq_epi8(_mm_max_epu8(v, low), low)),
                )
            };
            c.quote |= quote << (16 * k);
            c.backslash |= backslash << (16 * k);
            c.open |= open << (16 * k);
            c.close |= close << (16 * k);
            c.control |= control << (16 * k);
        }
        c
    }
}

#[cfg(not(target_arch = "x86_64"))]
impl Blocks for Baseline {
    fn classify(block: &[u8; 64]) -> Classes {
        let mut c = Classes::default();
        for (i, &b) in block.iter().enumerate() {
            let bit = 1u64 << i;
            match b {
                b'"' => c.quote |= bit,
                b'\\' => c.backslash |= bit,
                b'{' | b'[' => c.open |= bit,
                b'}' | b']' => c.close |= bit,
                0x00..=0x1F => c.control |= bit,
                _ => {}
            }
        }
        c
    }
}

/// AVX2: 32 bytes a comparison, and the prefix XOR as one carry-less
/// multiplication (PCLMULQDQ). Used only through [`check_avx2`], which is
/// compiled for these features and entered only when the CPU has them.
#[cfg(target_arch = "x86_64")]
struct Avx2;

#[cfg(target_arch = "x86_64")]
impl Blocks for Avx2 {
    #[inline(always)]
    fn classify(block: &[u8; 64]) -> Classes {
        use std::arch::x86_64::*;
        let mut c = Classes::default();
        for k in 0..2 {
            // SAFETY: reached only from `check_avx2`, so the CPU has AVX2;
            // the load reads the 32 bytes of `block` at 32·k, within its 64.
            let (quote, backslash, open, close, control) = unsafe {
                let v = _mm256_loadu_si256(block.as_ptr().add(32 * k) as *const __m256i);
                let mask = |m: __m256i| _mm256_movemask_epi8(m) as u32 as u64;
                let is = |b: u8| _mm256_cmpeq_epi8(v, _mm256_set1_epi8(b as i8));
                let folded = _mm256_or_si256(v, _mm256_set1_epi8(0x20));
                let low = _mm256_set1_epi8(0x1F);
                (
                    mask(is(b'"')),
                    mask(is(b'\\')),
                    mask(_mm256_cmpeq_epi8(folded, _mm256_set1_epi8(b'{' as i8))),
                    mask(_mm256_cmpeq_epi8(folded, _mm256_set1_epi8(b'}' as i8))),
                    mask(_mm256_cmpeq_epi8(_mm256_max_epu8(v, low), low)),
                )
            };
            c.quote |= quote << (32 * k);
            c.backslash |= backslash << (32 * k);
            c.open |= open << (32 * k);
            c.close |= close << (32 * k);
            c.control |= control << (32 * k);
        }
        c
    }

    #[inline(always)]
    fn prefix_xor(x: u64) -> u64 {
        use std::arch::x86_64::*;
        // SAFETY: reached only from `check_avx2`, so the CPU has PCLMULQDQ.
        // A carry-less product with all ones XORs each bit into every bit
        // above it.
        unsafe {
            let product = _mm_clmulepi64_si128(_mm_set_epi64x(0, x as i64), _mm_set1_epi8(-1), 0);
            _mm_cvtsi128_si64(product) as u64
        }
    }
}

/// The bytes escaped by a backslash (the byte after an odd run of them),
/// carrying a run that ends a block into the next (simdjson's
/// `find_escaped_branchless`).
fn escaped(backslash: u64, carry: &mut u64) -> u64 {
    const EVEN_BITS: u64 = 0x5555_5555_5555_5555;
    let backslash = backslash & !*carry;
    let follows_escape = (backslash << 1) | *carry;
    let odd_starts = backslash & !EVEN_BITS & !follows_escape;
    let (even_starts, overflow) = odd_starts.overflowing_add(backslash);
    *carry = overflow as u64;
    (EVEN_BITS ^ (even_starts << 1)) & follows_escape
}

pub(super) fn check(
    payload: &[u8],
    max_depth: usize,
    max_string_bytes: usize,
) -> Result<(), StructureError> {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: the CPU has the features `check_avx2` is compiled for.
        return unsafe { check_avx2(payload, max_depth, max_string_bytes) };
    }
    check_baseline(payload, max_depth, max_string_bytes)
}

/// Whether the CPU has what [`check_avx2`] is compiled for (the standard
/// library caches the detection).
#[cfg(target_arch = "x86_64")]
pub(crate) fn has_avx2() -> bool {
    std::is_x86_feature_detected!("avx2")
        && std::is_x86_feature_detected!("pclmulqdq")
        && std::is_x86_feature_detected!("popcnt")
}

/// [`check`] with the baseline instruction set.
pub(super) fn check_baseline(
    payload: &[u8],
    max_depth: usize,
    max_string_bytes: usize,
) -> Result<(), StructureError> {
    scan::<Baseline>(payload, max_depth, max_string_bytes)
}

/// [`check`] with AVX2, PCLMULQDQ and POPCNT (which counts the brackets).
///
/// # Safety
/// The CPU must have those features ([`has_avx2`]).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,pclmulqdq,popcnt")]
pub(super) unsafe fn check_avx2(
    payload: &[u8],
    max_depth: usize,
    max_string_bytes: usize,
) -> Result<(), StructureError> {
    scan::<Avx2>(payload, max_depth, max_string_bytes)
}

#[inline(always)]
fn scan<B: Blocks>(
    payload: &[u8],
    max_depth: usize,
    max_string_bytes: usize,
) -> Result<(), StructureError> {
    debug_assert!(max_string_bytes >= 64);
    let mut depth = 0usize;
    // All ones while a string is open at the end of the previous block.
    let mut in_string_carry = 0u64;
    let mut escape_carry = 0u64;
    let mut string_start = 0usize;
    let mut escapes = Escape::default();
    let full = payload.chunks_exact(64);
    let mut last = [b' '; 64];
    last[..full.remainder().len()].copy_from_slice(full.remainder());
    let last = (!full.remainder().is_empty()).then_some(&last);
    // Whole blocks are read in place; only the last, partial one is copied
    // (padded with spaces, which are neither strings nor brackets).
    let blocks = full.map(|chunk| <&[u8; 64]>::try_from(chunk).expect("64 bytes"));
    for (n, block) in blocks.chain(last).enumerate() {
        let offset = n * 64;
        let c = B::classify(block);

        let escaped = escaped(c.backslash, &mut escape_carry);
        let quotes = c.quote & !escaped;
        let was_in_string = in_string_carry != 0;
        let in_string = B::prefix_xor(quotes) ^ in_string_carry;
        in_string_carry = ((in_string as i64) >> 63) as u64;

        let control = c.control & in_string;
        if control != 0 {
            let at = offset + control.trailing_zeros() as usize;
            return Err(string_problem(StringProblem::ControlCharacter, at));
        }
        let mut inside = escaped & in_string;
        while inside != 0 {
            let at = offset + inside.trailing_zeros() as usize;
            inside &= inside - 1;
            if at < payload.len() {
                escapes
                    .check(payload, at - 1)
                    .map_err(|problem| string_problem(problem, at - 1))?;
            }
        }

        // Only strings crossing into this block can be too long.
        if was_in_string {
            let len = match quotes {
                0 => None,
                q => Some(offset + q.trailing_zeros() as usize - string_start - 1),
            };
            if let Some(len) = len.filter(|&len| len > max_string_bytes) {
                return Err(string_error(len, max_string_bytes, string_start));
            }
        }
        if in_string_carry != 0 && quotes != 0 {
            string_start = offset + 63 - quotes.leading_zeros() as usize;
        }

        let open = c.open & !in_string;
        let close = c.close & !in_string;
        let (opens, closes) = (open.count_ones() as usize, close.count_ones() as usize);
        // Within the block the depth stays below depth + opens, and cannot
        // reach zero (where the byte scan saturates) if closes <= depth.
        if depth + opens <= max_depth && closes <= depth {
            depth = depth + opens - closes;
        } else {
            let mut brackets = open | close;
            while brackets != 0 {
                let bit = brackets & brackets.wrapping_neg();
                brackets &= brackets - 1;
                if open & bit != 0 {
                    depth += 1;
                    if depth > max_depth {
                        let at = offset + bit.trailing_zeros() as usize;
                        return Err(super::depth_error(max_depth, at));
                    }
                } else {
                    depth = depth.saturating_sub(1);
                }
            }
        }
    }
    if in_string_carry != 0 {
        let len = payload.len() - string_start - 1;
        if len > max_string_bytes {
            return Err(string_error(len, max_string_bytes, string_start));
        }
    }
    Ok(())
}

/// One past the bracket closing the object or array whose opening bracket
/// is at `json[start]`, or `None` when it does not close within `json`.
///
/// Brackets inside strings are not counted; nothing else is validated, so
/// on JSON that is not valid the answer means nothing (but is still within
/// `json`, or `None`).
pub(crate) fn container_end(json: &[u8], start: usize) -> Option<usize> {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: the CPU has the features `container_end_avx2` is
        // compiled for.
        return unsafe { container_end_avx2(json, start) };
    }
    container_end_baseline(json, start)
}

/// [`container_end`] with the baseline instruction set.
pub(crate) fn container_end_baseline(json: &[u8], start: usize) -> Option<usize> {
    close_of::<Baseline>(json, start)
}

/// [`container_end`] with AVX2, PCLMULQDQ and POPCNT.
///
/// # Safety
/// The CPU must have those features ([`has_avx2`]).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,pclmulqdq,popcnt")]
pub(crate) unsafe fn container_end_avx2(json: &[u8], start: usize) -> Option<usize> {
    close_of::<Avx2>(json, start)
}

#[inline(always)]
fn close_of<B: Blocks>(json: &[u8], start: usize) -> Option<usize> {
    let bytes = json.get(start..)?;
    if !matches!(bytes.first(), Some(b'{' | b'[')) {
        return None;
    }
    let mut depth = 0usize;
    let mut in_string_carry = 0u64;
    let mut escape_carry = 0u64;
    for (n, chunk) in bytes.chunks(64).enumerate() {
        // The last, partial block padded with spaces (see `scan`).
        let mut padded = [b' '; 64];
        let block = <&[u8; 64]>::try_from(chunk).unwrap_or_else(|_| {
            padded[..chunk.len()].copy_from_slice(chunk);
            &padded
        });
        let c = B::classify(block);
        let escaped = escaped(c.backslash, &mut escape_carry);
        let in_string = B::prefix_xor(c.quote & !escaped) ^ in_string_carry;
        in_string_carry = ((in_string as i64) >> 63) as u64;
        let open = c.open & !in_string;
        let close = c.close & !in_string;
        let closes = close.count_ones() as usize;
        // Fewer closing brackets than open ones: the value cannot end here.
        if closes < depth {
            depth = depth + open.count_ones() as usize - closes;
            continue;
        }
        for (at, opens) in brackets_in_order(open, close) {
            if opens {
                depth += 1;
            } else {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    return Some(start + n * 64 + at + 1);
                }
            }
        }
    }
    None
}

/// The brackets of a block in order: each one's index, and whether it
/// opens.
#[inline(always)]
fn brackets_in_order(open: u64, close: u64) -> impl Iterator<Item = (usize, bool)> {
    let mut brackets = open | close;
    std::iter::from_fn(move || {
        if brackets == 0 {
            return None;
        }
        let bit = brackets & brackets.wrapping_neg();
        brackets ^= bit;
        Some((bit.trailing_zeros() as usize, open & bit != 0))
    })
}
