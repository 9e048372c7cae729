//! Matching values against lists of values and globs: the functions the
//! list forms of rules expand to (`in_list`, `any_in_list`, `all_in_list`,
//! see `rules::definitions::expand`).
//!
//! * `glob_match(value, patterns)`: `value` equals a pattern or matches a
//!   glob pattern (`*` any run of characters, `?` one byte).
//! * `glob_match_any(values, patterns)`: some element of the string list
//!   `values` does.
//! * `glob_match_all(values, patterns)`: every element does (TRUE for an
//!   empty list).
//!
//! All three are FALSE, never NULL, when the value or list is NULL; NULL
//! elements of a list match nothing. `patterns` is a list of strings, in
//! practice a literal: it is compiled once per plan and kept.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use datafusion::arrow::array::{Array, ArrayRef, AsArray, BooleanBuilder, GenericListArray};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::{exec_err, Result, ScalarValue};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};

/// Glob match: `*` matches any run of bytes, `?` one byte, anything else itself.
pub fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && (pattern[p] == b'?' || pattern[p] == text[t]) {
            p += 1;
            t += 1;
        } else if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if let Some((sp, st)) = star {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|c| *c == b'*')
}

/// The patterns of a list: plain values in a hash set, globs compiled
/// into one regular expression (an alternation the regex crate searches
/// for all globs at once, with a literal prefilter), so a value is tested
/// against every glob in one pass rather than glob by glob.
#[derive(Debug, Default)]
pub struct Patterns {
    plain: HashSet<String, foldhash::fast::RandomState>,
    globs: Option<regex::bytes::Regex>,
}

impl Patterns {
    pub fn new<'a>(items: impl IntoIterator<Item = &'a str>) -> Patterns {
        let mut plain = HashSet::default();
        let mut globs = Vec::new();
        for item in items {
            if item.contains(['*', '?']) {
                globs.push(glob_regex(item));
            } else {
                plain.insert(item.to_string());
            }
        }
        let globs = (!globs.is_empty()).then(|| {
            regex::bytes::RegexBuilder::new(&globs.join("|"))
                .unicode(false)
                .build()
                .expect("escaped globs form a valid regular expression")
        });
        Patterns { plain, globs }
    }

    pub fn matches(&self, value: &str) -> bool {
        self.plain.contains(value)
            || self
                .globs
                .as_ref()
                .is_some_and(|g| g.is_match(value.as_bytes()))
    }
}

/// A glob as a regular expression matching the whole value: `*` any run of
/// bytes, `?` one byte. A leading or trailing `*` becomes a missing anchor,
/// which lets the regex crate search the literal inside.
fn glob_regex(glob: &str) -> String {
    let starts = glob.starts_with('*');
    let ends = glob.ends_with('*') && glob.len() > 1;
    let core = glob.trim_start_matches('*').trim_end_matches('*');
    let mut out = String::from("(?s-u:");
    if !starts {
        out.push('^');
    }
    for c in core.chars() {
        match c {
            '*' => out.push_str("(?:.*)"),
            '?' => out.push_str("(?:.)"),
            c => out.push_str(&regex::escape(&c.to_string())),
        }
    }
    if !ends {
        out.push('$');
    }
    out.push(')');
    out
}

/// Which of the three functions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Mode {
    One,
    Any,
    All,
}

/// Compiled patterns by the address of the literal list they came from:
/// a plan's literal is the same array at every evaluation, so each list
/// is compiled once. The array is kept alive beside its patterns, so an
/// address is never reused for another list while it is cached.
type Compiled = Mutex<HashMap<usize, (ArrayRef, Arc<Patterns>)>>;

/// Entries at most; past it the cache starts over.
const MAX_CACHED: usize = 1024;

#[derive(Debug)]
pub struct GlobMatch {
    name: &'static str,
    mode: Mode,
    signature: Signature,
    compiled: Compiled,
}

impl PartialEq for GlobMatch {
    fn eq(&self, other: &Self) -> bool {
        self.mode == other.mode
    }
}
impl Eq for GlobMatch {}
impl std::hash::Hash for GlobMatch {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.mode.hash(state)
    }
}

impl GlobMatch {
    pub fn one() -> Self {
        Self::new("glob_match", Mode::One, DataType::Utf8)
    }
    pub fn any() -> Self {
        Self::new(
            "glob_match_any",
            Mode::Any,
            DataType::new_list(DataType::Utf8, true),
        )
    }
    pub fn all() -> Self {
        Self::new(
            "glob_match_all",
            Mode::All,
            DataType::new_list(DataType::Utf8, true),
        )
    }
    fn new(name: &'static str, mode: Mode, value: DataType) -> Self {
        let patterns = DataType::new_list(DataType::Utf8, true);
        GlobMatch {
            name,
            mode,
            signature: Signature::exact(vec![value, patterns], Volatility::Immutable),
            compiled: Mutex::default(),
        }
    }

    fn patterns(&self, arg: &ColumnarValue) -> Result<Arc<Patterns>> {
        let ColumnarValue::Scalar(ScalarValue::List(list)) = arg else {
            return exec_err!(
                "{}: the patterns must be a list literal (list('name') or make_array(...))",
                self.name
            );
        };
        let key = Arc::as_ptr(list) as *const () as usize;
        let mut compiled = self.compiled.lock().expect("pattern cache lock");
        if let Some((_, p)) = compiled.get(&key) {
            return Ok(p.clone());
        }
        let patterns = Arc::new(if list.is_valid(0) {
            let values = list.value(0);
            Patterns::new(values.as_string::<i32>().iter().flatten())
        } else {
            Patterns::default()
        });
        if compiled.len() >= MAX_CACHED {
            compiled.clear();
        }
        compiled.insert(key, (list.clone() as ArrayRef, patterns.clone()));
        Ok(patterns)
    }
}

impl ScalarUDFImpl for GlobMatch {
    fn name(&self) -> &str {
        self.name
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Boolean)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let patterns = self.patterns(&args.args[1])?;
        let (values, scalar) = match &args.args[0] {
            ColumnarValue::Array(a) => (a.clone(), false),
            ColumnarValue::Scalar(s) => (s.to_array_of_size(1)?, true),
        };
        let mut out = BooleanBuilder::with_capacity(values.len());
        match self.mode {
            Mode::One => {
                let values = values.as_string::<i32>();
                for i in 0..values.len() {
                    out.append_value(values.is_valid(i) && patterns.matches(values.value(i)));
                }
            }
            Mode::Any | Mode::All => {
                let lists: &GenericListArray<i32> = values.as_list::<i32>();
                for i in 0..lists.len() {
                    out.append_value(
                        lists.is_valid(i) && self.list_matches(&lists.value(i), &patterns),
                    );
                }
            }
        }
        let out: ArrayRef = Arc::new(out.finish());
        if scalar {
            Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(&out, 0)?))
        } else {
            Ok(ColumnarValue::Array(out))
        }
    }
}

impl GlobMatch {
    fn list_matches(&self, elements: &ArrayRef, patterns: &Patterns) -> bool {
        let elements = elements.as_string::<i32>();
        let matches = |i: usize| elements.is_valid(i) && patterns.matches(elements.value(i));
        match self.mode {
            Mode::Any => (0..elements.len()).any(matches),
            _ => (0..elements.len()).all(matches),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_matching() {
        assert!(glob_match(b"a*c", b"abbbc"));
        assert!(glob_match(b"a*c", b"ac"));
        assert!(!glob_match(b"a*c", b"abd"));
        assert!(glob_match(b"*-controller", b"kube-controller"));
        assert!(glob_match(b"a?c", b"abc"));
        assert!(!glob_match(b"a?c", b"ac"));
    }

    #[test]
    fn patterns_match_plain_values_exactly_and_globs_as_globs() {
        let p = Patterns::new(["docker.io", "*.gcr.io", "registry-?.example"]);
        assert!(p.matches("docker.io"));
        assert!(!p.matches("docker.io.evil"));
        assert!(p.matches("eu.gcr.io"));
        assert!(!p.matches("gcr.io"), "*.gcr.io needs a subdomain");
        assert!(p.matches("registry-1.example"));
        assert!(!p.matches("registry-12.example"));
    }

    /// The compiled globs agree with `glob_match`, the reference.
    #[test]
    fn compiled_globs_match_as_glob_match_does() {
        let globs = [
            "*peirates*",
            "kubelet/*",
            "*-controller",
            "a*b?c",
            "*",
            "x?",
            "*.gcr.io",
            "a.b",
            "(x)*[y]",
        ];
        let values = [
            "peirates",
            "curl peirates/1.0",
            "kubelet/v1.30",
            "kubelet",
            "kube-controller",
            "kube-controller-x",
            "aXXbZc",
            "abc",
            "",
            "x1",
            "x12",
            "eu.gcr.io",
            "gcr.io",
            "aXb",
            "(x)zz[y]",
            "(x)[y]",
            "a\nb",
        ];
        for g in globs {
            let compiled = Patterns::new([g]);
            for v in values {
                assert_eq!(
                    compiled.matches(v),
                    glob_match(g.as_bytes(), v.as_bytes()),
                    "{g:?} on {v:?}"
                );
            }
        }
    }
}
