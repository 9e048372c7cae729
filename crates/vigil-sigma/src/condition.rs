//! Sigma detection conditions: `and`, `or`, `not`, parentheses, and
//! `1 of` / `all of` a name pattern or `them`.

use crate::error::{Result, SigmaError};

/// A parsed condition. Quantifiers are resolved at parse time to the
/// detections they name, so every `Ref` names an existing detection.
#[derive(Debug, Clone, PartialEq)]
pub enum Cond {
    Ref(String),
    And(Box<Cond>, Box<Cond>),
    Or(Box<Cond>, Box<Cond>),
    Not(Box<Cond>),
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Word(String),
    Open,
    Close,
}

fn tokenize(s: &str) -> Vec<Tok> {
    let mut out = Vec::new();
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut Vec<Tok>| {
        if !word.is_empty() {
            out.push(Tok::Word(std::mem::take(word)));
        }
    };
    for c in s.chars() {
        match c {
            '(' | ')' => {
                flush(&mut word, &mut out);
                out.push(if c == '(' { Tok::Open } else { Tok::Close });
            }
            c if c.is_whitespace() => flush(&mut word, &mut out),
            c => word.push(c),
        }
    }
    flush(&mut word, &mut out);
    out
}

/// Parse `text` against the rule's detection `names`.
pub fn parse(text: &str, names: &[&str]) -> Result<Cond> {
    let mut p = Parser {
        toks: tokenize(text),
        pos: 0,
        text,
        names,
    };
    let c = p.or()?;
    if p.pos != p.toks.len() {
        return Err(p.err(format!("unexpected {:?}", p.toks[p.pos])));
    }
    Ok(c)
}

struct Parser<'a> {
    toks: Vec<Tok>,
    pos: usize,
    text: &'a str,
    names: &'a [&'a str],
}

impl Parser<'_> {
    fn err(&self, why: String) -> SigmaError {
        SigmaError::Condition {
            condition: self.text.into(),
            why,
        }
    }

    fn peek_word(&self, w: &str) -> bool {
        matches!(self.toks.get(self.pos), Some(Tok::Word(x)) if x.eq_ignore_ascii_case(w))
    }

    fn or(&mut self) -> Result<Cond> {
        let mut left = self.and()?;
        while self.peek_word("or") {
            self.pos += 1;
            left = Cond::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Cond> {
        let mut left = self.not()?;
        while self.peek_word("and") {
            self.pos += 1;
            left = Cond::And(Box::new(left), Box::new(self.not()?));
        }
        Ok(left)
    }

    fn not(&mut self) -> Result<Cond> {
        if self.peek_word("not") {
            self.pos += 1;
            return Ok(Cond::Not(Box::new(self.not()?)));
        }
        self.primary()
    }

    fn primary(&mut self) -> Result<Cond> {
        match self.toks.get(self.pos).cloned() {
            Some(Tok::Open) => {
                self.pos += 1;
                let c = self.or()?;
                if self.toks.get(self.pos) != Some(&Tok::Close) {
                    return Err(self.err("unbalanced parenthesis".into()));
                }
                self.pos += 1;
                Ok(c)
            }
            Some(Tok::Word(w)) => {
                self.pos += 1;
                if self.peek_word("of") {
                    self.pos += 1;
                    return self.quantifier(&w);
                }
                if ["and", "or", "not", "of", "|"].contains(&w.to_ascii_lowercase().as_str()) {
                    return Err(self.err(format!("unexpected {w:?}")));
                }
                if !self.names.contains(&w.as_str()) {
                    return Err(SigmaError::MissingSelection { name: w });
                }
                Ok(Cond::Ref(w))
            }
            Some(Tok::Close) => Err(self.err("unbalanced parenthesis".into())),
            None => Err(self.err("ends where a detection name was expected".into())),
        }
    }

    fn quantifier(&mut self, q: &str) -> Result<Cond> {
        let all = match q.to_ascii_lowercase().as_str() {
            "all" => true,
            "1" | "any" => false,
            other => return Err(self.err(format!("quantifier {other:?}: expected 1, any or all"))),
        };
        let Some(Tok::Word(pattern)) = self.toks.get(self.pos).cloned() else {
            return Err(self.err(format!("{q} of what?")));
        };
        self.pos += 1;
        let matched: Vec<&str> = if pattern == "them" {
            self.names
                .iter()
                .copied()
                .filter(|n| !n.starts_with('_'))
                .collect()
        } else {
            self.names
                .iter()
                .copied()
                .filter(|n| glob(&pattern, n))
                .collect()
        };
        let mut refs = matched.into_iter().map(|n| Cond::Ref(n.to_string()));
        let first = refs.next().ok_or_else(|| SigmaError::MissingSelection {
            name: pattern.clone(),
        })?;
        Ok(refs.fold(first, |acc, r| {
            if all {
                Cond::And(Box::new(acc), Box::new(r))
            } else {
                Cond::Or(Box::new(acc), Box::new(r))
            }
        }))
    }
}

/// `*` matches any run of characters; everything else itself.
fn glob(pattern: &str, name: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == name,
        Some((head, rest)) => {
            let Some(tail) = name.strip_prefix(head) else {
                return false;
            };
            (0..=tail.len())
                .filter(|i| tail.is_char_boundary(*i))
                .any(|i| glob(rest, &tail[i..]))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(n: &str) -> Box<Cond> {
        Box::new(Cond::Ref(n.into()))
    }

    #[test]
    fn precedence_not_and_or() {
        let c = parse("a or not b and c", &["a", "b", "c"]).unwrap();
        assert_eq!(
            c,
            Cond::Or(
                r("a"),
                Box::new(Cond::And(Box::new(Cond::Not(r("b"))), r("c")))
            )
        );
    }

    #[test]
    fn quantifiers() {
        let names = ["sel_a", "sel_b", "filter", "_x"];
        assert_eq!(
            parse("1 of sel_*", &names).unwrap(),
            Cond::Or(r("sel_a"), r("sel_b"))
        );
        assert_eq!(
            parse("all of them", &["a", "b", "_x"]).unwrap(),
            Cond::And(r("a"), r("b"))
        );
        assert_eq!(
            parse("(1 of sel_*) and not filter", &names).unwrap(),
            Cond::And(
                Box::new(Cond::Or(r("sel_a"), r("sel_b"))),
                Box::new(Cond::Not(r("filter")))
            )
        );
    }

    #[test]
    fn errors_name_the_problem() {
        assert_eq!(
            parse("sel and missing", &["sel"]),
            Err(SigmaError::MissingSelection {
                name: "missing".into()
            })
        );
        assert!(matches!(
            parse("(sel", &["sel"]),
            Err(SigmaError::Condition { .. })
        ));
        assert!(matches!(
            parse("sel |count() > 5", &["sel"]),
            Err(SigmaError::Condition { .. })
        ));
        assert_eq!(
            parse("1 of nothing_*", &["sel"]),
            Err(SigmaError::MissingSelection {
                name: "nothing_*".into()
            })
        );
    }
}
