//! Named lists (`lists/*.toml`): one table per list.
//!
//! ```toml
//! [approved_registries]
//! description = "Registry hosts workload images may come from"
//! items = ["docker.io", "registry.k8s.io", "*.gcr.io"]
//! ```
//!
//! An item is a value, or a glob when it holds `*` (any run of characters)
//! or `?` (one character). A later layer replaces a list by giving `items`,
//! or changes it with `append` and `remove` (a list it does not define is an
//! error there). `description` is required where a list is first defined.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;
use toml::Spanned;

use super::{is_valid_name, Location, Origin};
use crate::rules::RuleError;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListIn {
    description: Option<String>,
    items: Option<Vec<Spanned<String>>>,
    append: Option<Vec<Spanned<String>>>,
    remove: Option<Vec<Spanned<String>>>,
}

/// One item and where it was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    pub value: String,
    pub at: Location,
}

impl Item {
    /// Whether the item is a glob (`*` or `?`) rather than a plain value.
    pub fn is_glob(&self) -> bool {
        self.value.contains(['*', '?'])
    }
}

/// A list after every layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct List {
    pub name: String,
    pub description: String,
    pub items: Vec<Item>,
    /// Where it was defined, then what each later layer did to it.
    pub origins: Vec<Origin>,
}

/// One list table of a layer, with the place of each item.
#[derive(Debug)]
struct Table {
    at: Location,
    description: Option<String>,
    items: Option<Vec<Item>>,
    append: Option<Vec<Item>>,
    remove: Option<Vec<Item>>,
}

/// One layer's list tables, read from its files before they are applied.
#[derive(Debug, Default)]
pub(super) struct LayerLists {
    tables: BTreeMap<String, Table>,
}

impl LayerLists {
    /// Read one file of the layer.
    pub fn read(&mut self, path: &Path, text: &str) -> Result<(), Vec<RuleError>> {
        let line_of = |offset: usize| text[..offset.min(text.len())].matches('\n').count() + 1;
        let file: BTreeMap<String, Spanned<ListIn>> = toml::from_str(text).map_err(|e| {
            vec![RuleError {
                path: path.to_path_buf(),
                line: e.span().map(|s| line_of(s.start)),
                message: format!("invalid list file: {}", e.message()),
            }]
        })?;
        let mut errors = Vec::new();
        for (name, table) in file {
            let line = line_of(table.span().start);
            let at = Location::new(path, line);
            if !is_valid_name(&name) {
                errors.push(at.error(format!(
                    "invalid list name {name:?}: use lower-case letters, digits and '_', starting with a letter"
                )));
                continue;
            }
            if let Some(other) = self.tables.get(&name) {
                errors.push(at.error(format!(
                    "list {name:?} is also defined at {} (one layer defines a list once)",
                    other.at
                )));
                continue;
            }
            let table = table.into_inner();
            let items = |v: Option<Vec<Spanned<String>>>| {
                v.map(|v| {
                    v.into_iter()
                        .map(|s| Item {
                            at: Location::new(path, line_of(s.span().start)),
                            value: s.into_inner(),
                        })
                        .collect::<Vec<Item>>()
                })
            };
            let table = Table {
                at,
                description: table.description,
                items: items(table.items),
                append: items(table.append),
                remove: items(table.remove),
            };
            errors.extend(check_items(&table));
            self.tables.insert(name, table);
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    /// Apply the layer's tables to the lists of the earlier layers.
    pub fn apply(
        self,
        lists: &mut BTreeMap<String, List>,
        notes: &mut Vec<String>,
    ) -> Result<(), Vec<RuleError>> {
        let mut errors = Vec::new();
        for (name, table) in self.tables {
            let at = table.at.clone();
            let changes = table.append.is_some() || table.remove.is_some();
            let result = match (table.items.is_some(), lists.get_mut(&name)) {
                (true, _) if changes => Err(at.error(format!(
                    "list {name:?} gives items and append/remove: give items to replace the list, or append/remove to change it"
                ))),
                (true, existing) => replace(&name, table, existing.map(|l| &*l))
                    .map(|list| drop(lists.insert(name.clone(), list))),
                (false, None) => Err(at.error(format!(
                    "list {name:?} is not defined by an earlier layer: give its items (and a description) to define it"
                ))),
                (false, Some(_)) if !changes => Err(at.error(format!(
                    "list {name:?} has nothing to do: give items, append or remove"
                ))),
                (false, Some(list)) => {
                    change(list, table, notes);
                    Ok(())
                }
            };
            if let Err(e) = result {
                errors.push(e);
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }
}

/// A table with `items`: the list it defines, or replaces `existing` with.
/// A list must have a description (its own or the one it replaces).
fn replace(name: &str, table: Table, existing: Option<&List>) -> Result<List, RuleError> {
    let description = table
        .description
        .or_else(|| existing.map(|l| l.description.clone()))
        .filter(|d| !d.trim().is_empty())
        .ok_or_else(|| table.at.error(format!("list {name:?} needs a description")))?;
    let mut origins = existing.map(|l| l.origins.clone()).unwrap_or_default();
    origins.push(if origins.is_empty() {
        Origin::Defined(table.at)
    } else {
        Origin::Replaced(table.at)
    });
    Ok(List {
        name: name.to_string(),
        description,
        items: table.items.unwrap_or_default(),
        origins,
    })
}

/// A table with `append` and/or `remove`: change `list` (noting appended
/// items it already had and removed items it did not).
fn change(list: &mut List, table: Table, notes: &mut Vec<String>) {
    let name = list.name.clone();
    if let Some(d) = table.description {
        list.description = d;
    }
    if let Some(added) = table.append {
        let mut n = 0;
        for item in added {
            if list.items.iter().any(|i| i.value == item.value) {
                notes.push(format!(
                    "{}: list {name:?} already has {:?}",
                    item.at, item.value
                ));
            } else {
                list.items.push(item);
                n += 1;
            }
        }
        list.origins.push(Origin::Appended(table.at.clone(), n));
    }
    if let Some(removed) = table.remove {
        let before = list.items.len();
        for item in removed
            .iter()
            .filter(|r| !list.items.iter().any(|i| i.value == r.value))
        {
            notes.push(format!(
                "{}: list {name:?} has no item {:?} to remove",
                item.at, item.value
            ));
        }
        list.items
            .retain(|i| !removed.iter().any(|r| r.value == i.value));
        list.origins
            .push(Origin::Removed(table.at, before - list.items.len()));
    }
}

/// Items must be non-empty, without surrounding whitespace, not a bare
/// `*`, and not repeat within one array.
fn check_items(table: &Table) -> Vec<RuleError> {
    let mut errors = Vec::new();
    for array in [&table.items, &table.append, &table.remove]
        .into_iter()
        .flatten()
    {
        let mut seen: Vec<&str> = Vec::new();
        for item in array {
            let v = item.value.as_str();
            if v.is_empty() {
                errors.push(item.at.error("empty list item"));
            } else if v.trim() != v {
                errors.push(item.at.error(format!(
                    "list item {v:?} has leading or trailing whitespace"
                )));
            } else if v.chars().all(|c| c == '*') {
                errors.push(item.at.error(
                    "a bare \"*\" item matches everything: disable the rule instead (overrides.toml)",
                ));
            } else if seen.contains(&v) {
                errors.push(item.at.error(format!("list item {v:?} is given twice")));
            }
            seen.push(v);
        }
    }
    errors
}
