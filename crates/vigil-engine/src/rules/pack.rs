//! A rule set read from layers: the shipped pack, then site overlays, so a
//! site tunes the pack without editing a shipped file and takes the next
//! release as it comes.
//!
//! Each layer is a directory that may hold:
//!
//! | path | what | a later layer |
//! |---|---|---|
//! | `**/*.sql` (not under `macros/`) | rules | adds rules; an id an earlier layer uses is an error |
//! | `lists/*.toml` | lists ([`definitions::lists`]) | replaces a list, or appends to and removes from it |
//! | `macros/*.sql` | macros ([`definitions::macros`]) | replaces a macro of the same name |
//! | `lookups/*.csv` | lookup tables ([`definitions::lookups`]) | replaces a table of the same name |
//! | `overrides.toml` | rules turned off, severities ([`overrides`]) | applies after the earlier layers' |
//! | `exceptions.toml` | allow-listed alerts ([`exceptions`]) | adds entries |
//!
//! The pack's exceptions file can be named elsewhere (`rules.exceptions`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::definitions::{Definitions, Location};
use super::exceptions::{self, Exceptions};
use super::{overrides, Rule, RuleError, RuleErrors};

/// Where a rule set comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layers {
    /// The shipped pack (`rules.dir`).
    pub base: PathBuf,
    /// Site overlays, applied in order (`rules.overlays`).
    pub overlays: Vec<PathBuf>,
    /// The pack's exceptions file, when not `<base>/exceptions.toml`
    /// (`rules.exceptions`).
    pub exceptions: Option<PathBuf>,
}

impl Layers {
    /// One directory, no overlay.
    pub fn dir(dir: &Path) -> Layers {
        Layers {
            base: dir.to_path_buf(),
            overlays: Vec::new(),
            exceptions: None,
        }
    }

    /// Every layer's directory, the pack first.
    pub fn dirs(&self) -> impl Iterator<Item = &Path> {
        std::iter::once(self.base.as_path()).chain(self.overlays.iter().map(PathBuf::as_path))
    }
}

/// What the engine compiles: rules and the definitions they use.
#[derive(Debug, Clone, Default)]
pub struct RuleSet {
    pub rules: Vec<Rule>,
    pub definitions: Arc<Definitions>,
}

impl From<Vec<Rule>> for RuleSet {
    fn from(rules: Vec<Rule>) -> RuleSet {
        RuleSet {
            rules,
            definitions: Arc::new(Definitions::none()),
        }
    }
}

/// A change a layer made to a rule of an earlier one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleChange {
    pub rule: String,
    /// `disabled`, `enabled`, `severity high (was medium)`.
    pub what: String,
    pub at: Location,
}

/// Every layer read and merged.
#[derive(Debug, Clone)]
pub struct RulePack {
    /// The enabled rules, with their effective metadata.
    pub rules: Vec<Rule>,
    /// Rules an overlay turned off.
    pub disabled: Vec<Rule>,
    pub definitions: Arc<Definitions>,
    /// The exceptions of the enabled rules.
    pub exceptions: Exceptions,
    pub changes: Vec<RuleChange>,
}

impl RulePack {
    /// The rules and definitions of one directory, with its exceptions.
    pub fn load_dir(dir: &Path) -> Result<RulePack, RuleErrors> {
        Self::load(&Layers::dir(dir))
    }

    /// Read every layer; report every problem of every layer.
    pub fn load(layers: &Layers) -> Result<RulePack, RuleErrors> {
        let mut merge = Merge::default();
        for (i, dir) in layers.dirs().enumerate() {
            let exceptions_file = match (i, &layers.exceptions) {
                (0, Some(file)) => Some(file.clone()),
                _ => Some(dir.join(exceptions::DEFAULT_FILE_NAME)).filter(|p| p.is_file()),
            };
            merge.layer(dir, i == 0, exceptions_file.as_deref());
        }
        merge.finish()
    }

    /// What the engine compiles.
    pub fn rule_set(&self) -> RuleSet {
        RuleSet {
            rules: self.rules.clone(),
            definitions: self.definitions.clone(),
        }
    }
}

/// The layers read so far.
#[derive(Default)]
struct Merge {
    /// Every rule, with whether it is enabled.
    rules: Vec<(Rule, bool)>,
    definitions: Definitions,
    exceptions: Exceptions,
    changes: Vec<RuleChange>,
    errors: Vec<RuleError>,
}

impl Merge {
    fn layer(&mut self, dir: &Path, base: bool, exceptions_file: Option<&Path>) {
        if !dir.is_dir() {
            self.errors.push(RuleError {
                path: dir.to_path_buf(),
                line: None,
                message: "not a directory".into(),
            });
            return;
        }
        let (rules, errors) = super::rules_in(dir);
        self.errors.extend(errors);
        if base && rules.is_empty() && self.errors.is_empty() {
            self.errors.push(RuleError {
                path: dir.to_path_buf(),
                line: None,
                message: "no .sql rule files found".into(),
            });
        }
        for rule in rules {
            if let Some((other, _)) = self.rules.iter().find(|(r, _)| r.meta.id == rule.meta.id) {
                let message = if base {
                    format!(
                        "rule id {:?} is also used by {}",
                        rule.meta.id,
                        other.path.display()
                    )
                } else {
                    format!(
                        "rule id {:?} is also used by {}: an overlay adds rules with ids of their own (to change a shipped rule, disable it in overrides.toml and add yours)",
                        rule.meta.id,
                        other.path.display()
                    )
                };
                self.errors.push(RuleError {
                    path: rule.path.clone(),
                    line: None,
                    message,
                });
                continue;
            }
            self.rules.push((rule, true));
        }
        if let Err(e) = self.definitions.apply_layer(dir) {
            self.errors.extend(e.0);
        }
        self.overrides(&dir.join(overrides::FILE_NAME));
        if let Some(file) = exceptions_file {
            match Exceptions::load(file) {
                Ok(e) => self.exceptions.extend(e),
                Err(e) => self.errors.extend(e.0),
            }
        }
    }

    fn overrides(&mut self, path: &Path) {
        if !path.is_file() {
            return;
        }
        let parsed = std::fs::read_to_string(path)
            .map_err(|e| {
                vec![RuleError {
                    path: path.to_path_buf(),
                    line: None,
                    message: format!("cannot read: {e}"),
                }]
            })
            .and_then(|text| overrides::parse(path, &text));
        let entries = match parsed {
            Ok(entries) => entries,
            Err(e) => return self.errors.extend(e),
        };
        for o in entries {
            let Some((rule, enabled)) = self.rules.iter_mut().find(|(r, _)| r.meta.id == o.rule)
            else {
                self.errors.push(o.at.error(format!(
                    "overrides name rule {:?}, which no layer defines",
                    o.rule
                )));
                continue;
            };
            if let Some(e) = o.enabled {
                *enabled = e;
                let what = if e { "enabled" } else { "disabled" };
                self.changes.push(change(&o, what.into()));
            }
            if let Some(s) = o.severity {
                let what = format!("severity {s} (was {})", rule.meta.severity);
                rule.meta.severity = s;
                self.changes.push(change(&o, what));
            }
        }
    }

    fn finish(mut self) -> Result<RulePack, RuleErrors> {
        if !self.errors.is_empty() {
            return Err(RuleErrors(self.errors));
        }
        let (enabled, disabled): (Vec<_>, Vec<_>) = self.rules.into_iter().partition(|(_, e)| *e);
        let disabled: Vec<Rule> = disabled.into_iter().map(|(r, _)| r).collect();
        // Exceptions of a disabled rule have nothing to apply to; an
        // exception naming no rule at all is still an error (at compile).
        self.exceptions
            .entries
            .retain(|e| !disabled.iter().any(|r| r.meta.id == e.rule));
        Ok(RulePack {
            rules: enabled.into_iter().map(|(r, _)| r).collect(),
            disabled,
            definitions: Arc::new(self.definitions),
            exceptions: self.exceptions,
            changes: self.changes,
        })
    }
}

fn change(o: &overrides::Override, what: String) -> RuleChange {
    RuleChange {
        rule: o.rule.clone(),
        what,
        at: o.at.clone(),
    }
}
