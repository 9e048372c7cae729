//! Long chains of `AND` or `OR` as balanced trees.
//!
//! The parser reads `a OR b OR c OR ...` as a tree as deep as the chain is
//! long. Planning walks such a tree by recursion (DataFusion's planner and
//! optimizer, derived `Clone` and `Drop`, evaluation), one stack frame per
//! level: a rule with a few thousand alternatives (a Sigma value list, say)
//! overflows a thread's stack and aborts the process. Both operators are
//! associative in SQL's three-valued logic, so the same operands in the
//! same order, paired as a balanced tree, have the same value, at a depth
//! of log2 of the chain's length.
//!
//! Only chains longer than [`LONGEST_KEPT`] are rebuilt: the conditions of
//! ordinary rules keep the plans and text they have as written.

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{BinaryOperator, Expr, Value, VisitMut, VisitorMut};

/// The longest chain left as the parser built it.
pub(crate) const LONGEST_KEPT: usize = 64;

/// Balance every long `AND` or `OR` chain in `node` (a statement or an
/// expression), wherever it is.
pub(crate) fn balance_chains<T: VisitMut>(node: &mut T) {
    let _ = node.visit(&mut Balance);
}

struct Balance;

impl VisitorMut for Balance {
    type Break = ();

    // Before the children: the visitor then descends the balanced tree,
    // whose spines are short, rather than the chain.
    fn pre_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<()> {
        balance(expr);
        ControlFlow::Continue(())
    }
}

/// Rebuild `expr` as a balanced tree if it heads a chain of more than
/// [`LONGEST_KEPT`] operands of one of `AND` and `OR`.
fn balance(expr: &mut Expr) {
    let op = match expr {
        Expr::BinaryOp {
            op: op @ (BinaryOperator::And | BinaryOperator::Or),
            ..
        } => op.clone(),
        _ => return,
    };
    if left_spine(expr, &op) < LONGEST_KEPT {
        return;
    }
    // Take the chain apart from its head down, without recursion: each
    // node handed back is one operand.
    let mut operands = Vec::new();
    let mut node = std::mem::replace(expr, Expr::value(Value::Null));
    loop {
        match node {
            Expr::BinaryOp { left, op: o, right } if o == op => {
                operands.push(*right);
                node = *left;
            }
            first => {
                operands.push(first);
                break;
            }
        }
    }
    operands.reverse();
    *expr = balanced(operands, &op);
}

/// How many `op` nodes lead down the left of `expr` (a chain of n operands
/// has n - 1).
fn left_spine(expr: &Expr, op: &BinaryOperator) -> usize {
    let mut depth = 0;
    let mut node = expr;
    while let Expr::BinaryOp { left, op: o, .. } = node {
        if o != op {
            break;
        }
        depth += 1;
        node = left;
    }
    depth
}

/// `operands` (at least one), in order, joined by `op` as a balanced tree.
fn balanced(mut operands: Vec<Expr>, op: &BinaryOperator) -> Expr {
    if operands.len() == 1 {
        return operands.pop().expect("one operand");
    }
    let right = operands.split_off(operands.len() / 2);
    Expr::BinaryOp {
        left: Box::new(balanced(operands, op)),
        op: op.clone(),
        right: Box::new(balanced(right, op)),
    }
}

#[cfg(test)]
mod tests {
    use datafusion::sql::sqlparser::ast::Statement;
    use datafusion::sql::sqlparser::dialect::GenericDialect;
    use datafusion::sql::sqlparser::parser::Parser;

    use super::*;

    fn parse(sql: &str) -> Statement {
        Parser::parse_sql(&GenericDialect {}, sql)
            .unwrap()
            .remove(0)
    }

    fn chain(n: usize, op: &str) -> String {
        (0..n)
            .map(|i| format!("c{i}"))
            .collect::<Vec<_>>()
            .join(&format!(" {op} "))
    }

    /// The depth of the deepest `op` node below `expr` (explicitly, so a
    /// chain the rewrite missed cannot overflow the test).
    fn depth(expr: &Expr) -> usize {
        let mut deepest = 0;
        let mut stack = vec![(expr, 0)];
        while let Some((e, d)) = stack.pop() {
            deepest = deepest.max(d);
            match e {
                Expr::BinaryOp { left, right, .. } => {
                    stack.push((left, d + 1));
                    stack.push((right, d + 1));
                }
                Expr::Nested(inner) | Expr::UnaryOp { expr: inner, .. } => stack.push((inner, d)),
                _ => {}
            }
        }
        deepest
    }

    fn selection(statement: &Statement) -> &Expr {
        let Statement::Query(q) = statement else {
            panic!("a query")
        };
        let datafusion::sql::sqlparser::ast::SetExpr::Select(s) = q.body.as_ref() else {
            panic!("a select")
        };
        s.selection.as_ref().expect("a WHERE")
    }

    /// The operands in order, left to right.
    fn operands(expr: &Expr) -> Vec<String> {
        let mut out = Vec::new();
        let mut stack = vec![expr];
        while let Some(e) = stack.pop() {
            match e {
                Expr::BinaryOp { left, right, .. } => {
                    stack.push(right);
                    stack.push(left);
                }
                other => out.push(other.to_string()),
            }
        }
        out
    }

    #[test]
    fn a_long_chain_becomes_a_balanced_tree_of_the_same_operands_in_order() {
        for op in ["OR", "AND"] {
            let mut statement = parse(&format!("SELECT 1 FROM t WHERE {}", chain(5000, op)));
            let before = operands(selection(&statement));
            balance_chains(&mut statement);
            let after = selection(&statement);
            assert_eq!(operands(after), before);
            // 5000 operands: 13 levels (2^13 = 8192).
            assert_eq!(depth(after), 13, "{op}");
        }
    }

    #[test]
    fn short_chains_and_other_operators_stay_as_written() {
        let short = format!("SELECT 1 FROM t WHERE {}", chain(LONGEST_KEPT, "OR"));
        let mut statement = parse(&short);
        balance_chains(&mut statement);
        assert_eq!(statement, parse(&short));
        let sum = format!("SELECT 1 FROM t WHERE {} > 0", chain(200, "+"));
        let mut statement = parse(&sum);
        balance_chains(&mut statement);
        assert_eq!(statement, parse(&sum));
    }

    #[test]
    fn chains_inside_other_expressions_are_balanced() {
        // A long OR inside an AND's operand, inside parentheses, and a
        // chain of ANDs each of whose operands is an OR.
        let ors = chain(300, "OR");
        let mut statement = parse(&format!(
            "SELECT 1 FROM t WHERE x = 1 AND ({ors}) AND NOT ({ors})"
        ));
        balance_chains(&mut statement);
        // The ANDs (two levels), `=` or the ORs (nine levels: 2^9 = 512).
        assert_eq!(depth(selection(&statement)), 2 + 9);
        let mut statement = parse(&format!(
            "SELECT 1 FROM t WHERE {}",
            (0..100)
                .map(|i| format!("(a{i} OR b{i})"))
                .collect::<Vec<_>>()
                .join(" AND ")
        ));
        balance_chains(&mut statement);
        // 100 ANDs: 7 levels; each operand one OR more.
        assert_eq!(depth(selection(&statement)), 8);
    }
}
