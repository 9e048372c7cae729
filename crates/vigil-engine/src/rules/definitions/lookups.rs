//! Lookup tables (`lookups/<name>.csv`): key → columns.
//!
//! ```csv
//! namespace,team,channel
//! payments,payments-sre,#payments-oncall
//! ```
//!
//! The first row names the columns; the first column is the key. Keys are
//! unique and non-empty. A rule reads a column with
//! `lookup('namespace_owners', 'team', object_ref.namespace)`: the value as
//! a string, or NULL when the key is not in the table. A later layer's
//! table of the same name replaces the earlier one whole.

use std::collections::HashMap;
use std::path::Path;

use super::{is_valid_name, Location, Origin};
use crate::rules::RuleError;

/// A lookup table after every layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lookup {
    pub name: String,
    /// Every column, the key first.
    pub columns: Vec<String>,
    /// key -> the other columns' values, in `columns[1..]` order.
    pub rows: HashMap<String, Vec<String>>,
    pub at: Location,
    pub origin: Origin,
}

impl Lookup {
    /// The same table, recorded as replacing an earlier layer's.
    pub fn replacing(self) -> Lookup {
        Lookup {
            origin: Origin::Replaced(self.at.clone()),
            ..self
        }
    }

    /// The value of `column` for `key`; `None` for a missing key (or a
    /// column that is not a value column).
    pub fn get(&self, key: &str, column: &str) -> Option<&str> {
        let index = self.value_column(column)?;
        self.rows.get(key).map(|values| values[index].as_str())
    }

    /// The index of a value column (not the key) in a row's values.
    pub fn value_column(&self, column: &str) -> Option<usize> {
        self.columns[1..].iter().position(|c| c == column)
    }
}

/// How `lookup(table, column, key)` (`vigil_functions::lookup`) reads a table.
impl vigil_functions::lookup::LookupTable for Lookup {
    fn value_column(&self, column: &str) -> Option<usize> {
        Lookup::value_column(self, column)
    }
    fn row(&self, key: &str) -> Option<&[String]> {
        self.rows.get(key).map(Vec::as_slice)
    }
}

/// Parse one lookup file; the table is named after the file.
pub fn parse_lookup(path: &Path, text: &str) -> Result<Lookup, Vec<RuleError>> {
    let at = |line: usize| Location::new(path, line);
    let name = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    if !is_valid_name(&name) {
        return Err(vec![at(1).error(format!(
            "invalid lookup table name {name:?} (the file name): use lower-case letters, digits and '_', starting with a letter"
        ))]);
    }
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .trim(csv::Trim::None)
        .from_reader(text.as_bytes());
    let columns: Vec<String> = match reader.headers() {
        Ok(h) => h.iter().map(str::to_string).collect(),
        Err(e) => return Err(vec![at(1).error(format!("invalid CSV header: {e}"))]),
    };
    let mut errors = Vec::new();
    if columns.len() < 2 {
        errors.push(at(1).error("a lookup table needs a key column and at least one value column"));
    }
    for (i, c) in columns.iter().enumerate() {
        if !is_valid_name(c) {
            errors.push(at(1).error(format!(
                "invalid column name {c:?}: use lower-case letters, digits and '_', starting with a letter"
            )));
        } else if columns[..i].contains(c) {
            errors.push(at(1).error(format!("column {c:?} is given twice")));
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let mut rows: HashMap<String, Vec<String>> = HashMap::new();
    let mut first_line: HashMap<String, u64> = HashMap::new();
    for record in reader.records() {
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                let line = e.position().map(|p| p.line() as usize).unwrap_or(0);
                errors.push(at(line).error(format!("invalid CSV row: {e}")));
                continue;
            }
        };
        let line = record.position().map(|p| p.line()).unwrap_or(0);
        let key = record[0].to_string();
        if key.is_empty() {
            errors.push(at(line as usize).error("empty key"));
            continue;
        }
        if let Some(first) = first_line.get(&key) {
            errors.push(at(line as usize).error(format!(
                "key {key:?} is also on line {first}: keys must be unique"
            )));
            continue;
        }
        first_line.insert(key.clone(), line);
        rows.insert(key, record.iter().skip(1).map(str::to_string).collect());
    }
    if errors.is_empty() {
        Ok(Lookup {
            name,
            columns,
            rows,
            at: at(1),
            origin: Origin::Defined(at(1)),
        })
    } else {
        Err(errors)
    }
}
