//! Macros (`macros/*.sql`): one named SQL expression per file.
//!
//! ```sql
//! -- macro: request_succeeded
//! -- description: The request completed and was not refused or failed.
//! COALESCE(stage, '') <> 'RequestReceived' AND COALESCE(response_status.code, 200) < 400
//! ```
//!
//! An optional `-- params: a, b` header names parameters; in the body each
//! stands for the expression a caller passes. A rule calls a macro like a
//! function (`request_succeeded()`, `workload_root(name)`), and the call is
//! replaced by the body, in parentheses, where the rule is planned: the
//! body's column names are the rule's. A macro may call other macros, but
//! not itself, directly or through others.

use std::path::Path;

use datafusion::sql::sqlparser::ast::Expr;
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::Parser;
use datafusion::sql::sqlparser::tokenizer::Token;

use super::{is_valid_name, Location, Origin};
use crate::rules::header::CommentHeader;
use crate::rules::RuleError;

/// A macro after every layer.
#[derive(Debug, Clone, PartialEq)]
pub struct Macro {
    pub name: String,
    pub description: String,
    pub params: Vec<String>,
    /// The body as parsed; its spans are lines of the macro's file.
    pub body: Expr,
    /// The macro's file (line 1).
    pub at: Location,
    pub origin: Origin,
}

impl Macro {
    /// The same macro, recorded as replacing an earlier layer's.
    pub fn replacing(self) -> Macro {
        Macro {
            origin: Origin::Replaced(self.at.clone()),
            ..self
        }
    }

    /// `name(a, b)`, for messages and listings.
    pub fn signature(&self) -> String {
        format!("{}({})", self.name, self.params.join(", "))
    }
}

/// Parse one macro file.
pub fn parse_macro(path: &Path, text: &str) -> Result<Macro, Vec<RuleError>> {
    let header = CommentHeader::parse(text, &["macro", "description"], &["params"]);
    let at = |line: usize| Location::new(path, line);
    let mut errors: Vec<RuleError> = header
        .errors
        .iter()
        .map(|e| at(e.line).error(e.message.clone()))
        .collect();
    let name = header.get("macro");
    if header.values.contains_key("macro") && !is_valid_name(&name) {
        errors.push(at(header.line_of("macro")).error(format!(
            "invalid macro name {name:?}: use lower-case letters, digits and '_', starting with a letter"
        )));
    }
    if header.values.contains_key("description") && header.get("description").is_empty() {
        errors.push(at(header.line_of("description")).error("the description is empty"));
    }
    let params = header.list("params");
    for (i, p) in params.iter().enumerate() {
        if !is_valid_name(p) {
            errors.push(at(header.line_of("params")).error(format!(
                "invalid parameter name {p:?}: use lower-case letters, digits and '_'"
            )));
        } else if params[..i].contains(p) {
            errors.push(
                at(header.line_of("params")).error(format!("parameter {p:?} is given twice")),
            );
        }
    }
    let body = match parse_body(text, |line| at(line.unwrap_or(header.body_line))) {
        Ok(body) => Some(body),
        Err(e) => {
            errors.push(e);
            None
        }
    };
    match body {
        Some(body) if errors.is_empty() => Ok(Macro {
            name,
            description: header.get("description"),
            params,
            body,
            at: at(1),
            origin: Origin::Defined(at(1)),
        }),
        _ => Err(errors),
    }
}

/// The file's one SQL expression (the header lines are comments). An
/// error is reported at `at(line)`: the line of the problem, when known.
fn parse_body(text: &str, at: impl Fn(Option<usize>) -> Location) -> Result<Expr, RuleError> {
    let syntax = |e: &dyn std::fmt::Display| {
        let m = e.to_string();
        at(line_in_message(&m)).error(format!("SQL syntax error in the macro body: {m}"))
    };
    let mut parser = Parser::new(&GenericDialect {})
        .try_with_sql(text)
        .map_err(|e| syntax(&e))?;
    if parser.peek_token().token == Token::EOF {
        return Err(
            at(None).error("the macro has no body: write one SQL expression after the header")
        );
    }
    let mut body = parser.parse_expr().map_err(|e| syntax(&e))?;
    let next = parser.peek_token();
    if next.token != Token::EOF {
        return Err(at(Some(next.span.start.line as usize)).error(format!(
            "the macro body must be one SQL expression; it continues with {}",
            next.token
        )));
    }
    crate::rules::balance::balance_chains(&mut body);
    Ok(body)
}

/// The line of sqlparser's "... at Line: 12, Column: 5" messages.
pub(crate) fn line_in_message(message: &str) -> Option<usize> {
    let rest = &message[message.find("Line: ")? + 6..];
    rest.split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}
