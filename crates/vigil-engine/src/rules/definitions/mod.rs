//! Definitions that rules share by name, kept as data beside the rules:
//!
//! * **lists** (`lists/*.toml`): named lists of values: principals,
//!   namespaces, registries, images, networks. Rules test membership with
//!   `in_list(x, 'name')`, `any_in_list(xs, 'name')`,
//!   `all_in_list(xs, 'name')`, or take the items as a list literal with
//!   `list('name')`.
//! * **macros** (`macros/*.sql`): named SQL expressions, optionally with
//!   parameters, called like functions: `request_succeeded()`,
//!   `workload_root(object_ref.name)`.
//! * **lookup tables** (`lookups/*.csv`): key → columns, read with
//!   `lookup('table', 'column', key)`.
//!
//! A rule set is read from layers: the shipped pack, then site overlays in
//! order ([`super::pack`]). A later layer replaces a list, macro or lookup
//! table of the same name, or appends to and removes from a list; every
//! definition remembers the files it came from ([`Origin`]).
//!
//! Lists and macros are expanded into the rule's SQL when the rule is
//! planned ([`expand`]), so a rule costs what the inlined form costs:
//! `in_list(x, 'name')` over plain values becomes `x IN ('a', 'b', ...)`,
//! which DataFusion evaluates with a hash set built once at planning.
//! Lookup tables are read by the `lookup` function through a hash map
//! built once per rule set.

pub mod expand;
pub mod lists;
pub mod lookups;
pub mod macros;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

pub use lists::List;
pub use lookups::Lookup;
pub use macros::Macro;

use super::{RuleError, RuleErrors};

/// A place in a definition file: `path:line`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Location {
    pub path: PathBuf,
    /// 1-based.
    pub line: usize,
}

impl Location {
    pub fn new(path: &Path, line: usize) -> Location {
        Location {
            path: path.to_path_buf(),
            line,
        }
    }

    /// A problem at this place.
    pub fn error(&self, message: impl Into<String>) -> RuleError {
        RuleError {
            path: self.path.clone(),
            line: Some(self.line),
            message: message.into(),
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.path.display(), self.line)
    }
}

/// How one layer changed a definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// Defined where no earlier layer had it.
    Defined(Location),
    /// Replaced an earlier layer's definition.
    Replaced(Location),
    /// Items added to a list.
    Appended(Location, usize),
    /// Items removed from a list.
    Removed(Location, usize),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Defined(at) => write!(f, "{at}"),
            Origin::Replaced(at) => write!(f, "replaced by {at}"),
            Origin::Appended(at, n) => write!(f, "{n} appended by {at}"),
            Origin::Removed(at, n) => write!(f, "{n} removed by {at}"),
        }
    }
}

/// The lists, macros and lookup tables of a rule set, after every layer.
#[derive(Debug, Clone, Default)]
pub struct Definitions {
    pub lists: BTreeMap<String, List>,
    pub macros: BTreeMap<String, Macro>,
    pub lookups: BTreeMap<String, Lookup>,
    /// Things worth telling whoever maintains the overlay (an append of an
    /// item the list already had, ...): printed by `vigil rules validate`.
    pub notes: Vec<String>,
}

/// The subdirectories of a layer that hold definitions rather than rules.
pub const LISTS_DIR: &str = "lists";
pub const MACROS_DIR: &str = "macros";
pub const LOOKUPS_DIR: &str = "lookups";

impl Definitions {
    /// No definitions (a set of rules that uses none).
    pub fn none() -> Definitions {
        Definitions::default()
    }

    /// Read one layer's definitions on top of the earlier layers' (`self`).
    pub fn apply_layer(&mut self, dir: &Path) -> Result<(), RuleErrors> {
        let mut errors = Vec::new();
        let mut read = |sub: &str, ext: &str| -> Vec<(PathBuf, String)> {
            match files_with_extension(&dir.join(sub), ext) {
                Ok(files) => files
                    .into_iter()
                    .filter_map(|path| match std::fs::read_to_string(&path) {
                        Ok(text) => Some((path, text)),
                        Err(e) => {
                            errors.push(RuleError {
                                path,
                                line: None,
                                message: format!("cannot read: {e}"),
                            });
                            None
                        }
                    })
                    .collect(),
                Err(e) => {
                    errors.push(RuleError {
                        path: dir.join(sub),
                        line: None,
                        message: format!("cannot read: {e}"),
                    });
                    Vec::new()
                }
            }
        };
        let list_files = read(LISTS_DIR, "toml");
        let macro_files = read(MACROS_DIR, "sql");
        let lookup_files = read(LOOKUPS_DIR, "csv");
        let mut layer = lists::LayerLists::default();
        for (path, text) in &list_files {
            if let Err(e) = layer.read(path, text) {
                errors.extend(e);
            }
        }
        if let Err(e) = layer.apply(&mut self.lists, &mut self.notes) {
            errors.extend(e);
        }
        let mut defined_here: BTreeMap<String, PathBuf> = BTreeMap::new();
        for (path, text) in &macro_files {
            match macros::parse_macro(path, text) {
                Ok(m) => {
                    if let Some(other) = defined_here.insert(m.name.clone(), path.clone()) {
                        errors.push(m.at.error(format!(
                            "macro {:?} is also defined in {}",
                            m.name,
                            other.display()
                        )));
                        continue;
                    }
                    let m = match self.macros.get(&m.name) {
                        Some(_) => m.replacing(),
                        None => m,
                    };
                    self.macros.insert(m.name.clone(), m);
                }
                Err(e) => errors.extend(e),
            }
        }
        for (path, text) in &lookup_files {
            match lookups::parse_lookup(path, text) {
                Ok(l) => {
                    let l = match self.lookups.get(&l.name) {
                        Some(_) => l.replacing(),
                        None => l,
                    };
                    self.lookups.insert(l.name.clone(), l);
                }
                Err(e) => errors.extend(e),
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(RuleErrors(errors))
        }
    }

    /// Whether any list, macro or lookup table is defined.
    pub fn is_empty(&self) -> bool {
        self.lists.is_empty() && self.macros.is_empty() && self.lookups.is_empty()
    }
}

/// The files directly in `dir` ending in `.<ext>`, in name order; none when
/// `dir` does not exist. Hidden entries are skipped (a ConfigMap volume's
/// `..data` links).
fn files_with_extension(dir: &Path, ext: &str) -> std::io::Result<Vec<PathBuf>> {
    if !dir.is_dir() {
        return Ok(Vec::new());
    }
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let hidden = path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with('.'));
        if !hidden && path.is_file() && path.extension().is_some_and(|e| e == ext) {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// A definition name: a lower-case letter, then lower-case letters, digits
/// and underscores (so it reads the same in SQL, where unquoted names are
/// folded to lower case).
pub fn is_valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// One line per effective list, macro and lookup table, with the files it
/// came from, then the notes (for `vigil rules validate`).
pub fn describe(defs: &Definitions) -> String {
    let origins = |o: &[Origin]| {
        o.iter()
            .map(Origin::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    };
    let mut out = String::new();
    for l in defs.lists.values() {
        out.push_str(&format!(
            "list {} ({} items): {}\n",
            l.name,
            l.items.len(),
            origins(&l.origins)
        ));
    }
    for m in defs.macros.values() {
        out.push_str(&format!("macro {}: {}\n", m.signature(), m.origin));
    }
    for t in defs.lookups.values() {
        out.push_str(&format!(
            "lookup {} ({} rows; key {}, columns {}): {}\n",
            t.name,
            t.rows.len(),
            t.columns[0],
            t.columns[1..].join(", "),
            t.origin
        ));
    }
    for n in &defs.notes {
        out.push_str(&format!("note: {n}\n"));
    }
    out
}

#[cfg(test)]
mod tests;
