//! Planning a filter onto the indexed columns of `scim_users` / `scim_groups`, so that a
//! filter never needs a whole workspace in memory: SQL narrows, Rust confirms, paging
//! streams.
//!
//! Columns (see [`super::resource::IndexColumns`], which computes them with the same
//! [`fold_case`] the evaluator uses):
//!
//! | column               | table  | from                                  |
//! |----------------------|--------|---------------------------------------|
//! | `id`                 | both   | `id` (caseExact)                      |
//! | `external_id`        | both   | `externalId` (caseExact)              |
//! | `user_name_lower`    | users  | `userName`, folded                    |
//! | `display_name_lower` | both   | `displayName`, folded                 |
//! | `work_email_lower`   | users  | the (primary) work email, folded      |
//! | `email_overflow`     | users  | some email differs from the work one  |
//! | `active`             | users  | `active`, NULL when unassigned        |
//!
//! How the caller uses a plan (`workspace_id` and paging are the caller's):
//!
//! - `None`: nothing indexable. Stream the workspace's rows in batches by key
//!   (`WHERE workspace_id = ? AND id > ? ORDER BY id LIMIT n`), run
//!   [`super::eval::matches`] on each, and feed matches to a
//!   [`super::list::PageWindow`].
//! - `Some(plan)` with `exact: true`: the SQL selects exactly the matching rows. Use
//!   `WHERE workspace_id = ? AND (<where_sql>)` with `COUNT(*)` for `totalResults` and
//!   `LIMIT/OFFSET` (or [`sort_column`]) for the page; no re-check needed.
//! - `Some(plan)` with `exact: false`: the SQL selects a superset. Stream those rows as
//!   for `None` and re-check each with [`super::eval::matches`].
//!
//! Placeholders are `?`, in the order of `binds`; [`SqlPlan::numbered`] renders them as
//! `$n` for Postgres. The SQL holds no literal other than `ESCAPE '\'`.
//!
//! Negation is pushed down to the columns with explicit NULL handling, so `not (…)`
//! over a nullable column means what the evaluator means (absent ⇒ `ne` matches).
//! Ordering operators (`gt`…) on strings are never planned: SQL collations disagree with
//! Rust's code-point order.

use super::eval::{resolve, Resolved, Scope};
use super::filter::{CompValue, CompareOp, Filter};
use super::list::{Sort, SortOrder};
use super::path::AttrPath;
use super::schema::{Location, ResourceKind};
use super::value::fold_case;

/// A value bound to a `?` placeholder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SqlBind {
    Text(String),
    Bool(bool),
}

/// A WHERE fragment over the indexed columns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqlPlan {
    /// A parenthesised boolean expression with `?` placeholders.
    pub where_sql: String,
    pub binds: Vec<SqlBind>,
    /// true: exactly the matching rows; false: a superset to re-check in Rust.
    pub exact: bool,
}

impl SqlPlan {
    /// `where_sql` with its placeholders numbered `$first`, `$first+1`, … (Postgres).
    pub fn numbered(&self, first: usize) -> String {
        let mut out = String::with_capacity(self.where_sql.len() + 8);
        let mut n = first;
        for c in self.where_sql.chars() {
            if c == '?' {
                out.push('$');
                out.push_str(&n.to_string());
                n += 1;
            } else {
                out.push(c);
            }
        }
        out
    }
}

/// Plans a [`super::eval::compile`]d filter for resources of `kind`.
pub fn plan(filter: &Filter, kind: ResourceKind) -> Option<SqlPlan> {
    let (expr, exact) = match plan_node(filter, kind) {
        Planned::All => return None,
        Planned::Exact(e) => (e, true),
        Planned::Superset(e) => (e, false),
    };
    let mut where_sql = String::new();
    let mut binds = Vec::new();
    render(&expr, &mut where_sql, &mut binds);
    Some(SqlPlan {
        where_sql,
        binds,
        exact,
    })
}

/// An ORDER BY column for a sort the database can do itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SortColumn {
    pub column: &'static str,
    pub descending: bool,
}

/// The indexed column to `ORDER BY` for `sort`, if any. Render it as
/// `column ASC NULLS LAST, id ASC` (descending: `DESC NULLS FIRST, id DESC`) to match
/// [`Sort::compare`]; on Postgres add `COLLATE "C"` so strings order by code point as
/// in Rust (SQLite's default BINARY collation already does). Without a column, the
/// caller streams and sorts through a [`super::list::PageWindow`].
pub fn sort_column(sort: &Sort, kind: ResourceKind) -> Option<SortColumn> {
    let r = resolve(Scope::Resource(kind.resource_type()), &sort.by)?;
    let col = column(&r, kind)?;
    matches!(col.kind, ColKind::Folded | ColKind::Exact).then_some(SortColumn {
        column: col.name,
        descending: sort.order == SortOrder::Descending,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ColKind {
    /// Holds `fold_case(value)`: eq and LIKE on folded binds are exact.
    Folded,
    /// Holds the value as is (caseExact): eq is exact, LIKE only a superset (SQLite's
    /// LIKE ignores ASCII case).
    Exact,
    Bool,
}

#[derive(Debug, Clone, Copy)]
struct Column {
    name: &'static str,
    kind: ColKind,
}

fn column(r: &Resolved, kind: ResourceKind) -> Option<Column> {
    if r.location != Location::Core || r.sub.is_some() {
        return None;
    }
    let (name, ck) = match (kind, r.attr.name) {
        (_, "id") => ("id", ColKind::Exact),
        (_, "externalId") => ("external_id", ColKind::Exact),
        (_, "displayName") => ("display_name_lower", ColKind::Folded),
        (ResourceKind::User, "userName") => ("user_name_lower", ColKind::Folded),
        (ResourceKind::User, "active") => ("active", ColKind::Bool),
        _ => return None,
    };
    Some(Column { name, kind: ck })
}

#[derive(Debug, Clone, PartialEq)]
enum Test {
    Eq(SqlBind),
    /// `LIKE ? ESCAPE '\'` with an escaped pattern.
    Like(String),
    /// Assigned: not NULL, and for text not empty (as the evaluator's `pr`).
    Present {
        text: bool,
    },
}

#[derive(Debug, Clone, PartialEq)]
struct Leaf {
    col: &'static str,
    test: Test,
    negated: bool,
}

/// A boolean expression in negation normal form.
#[derive(Debug, Clone, PartialEq)]
enum Expr {
    Leaf(Leaf),
    And(Vec<Expr>),
    Or(Vec<Expr>),
}

enum Planned {
    Exact(Expr),
    Superset(Expr),
    /// No constraint the columns can express.
    All,
}

fn leaf(col: &'static str, test: Test) -> Expr {
    Expr::Leaf(Leaf {
        col,
        test,
        negated: false,
    })
}

fn negate(e: Expr) -> Expr {
    match e {
        Expr::Leaf(mut l) => {
            l.negated = !l.negated;
            Expr::Leaf(l)
        }
        Expr::And(v) => Expr::Or(v.into_iter().map(negate).collect()),
        Expr::Or(v) => Expr::And(v.into_iter().map(negate).collect()),
    }
}

fn plan_node(f: &Filter, kind: ResourceKind) -> Planned {
    let rt = kind.resource_type();
    match f {
        Filter::Not(inner) => match plan_node(inner, kind) {
            Planned::Exact(e) => Planned::Exact(negate(e)),
            // The complement of a superset is not a superset of the complement.
            _ => Planned::All,
        },
        Filter::And(items) => {
            let mut exact = true;
            let mut parts = Vec::new();
            for p in items.iter().map(|i| plan_node(i, kind)) {
                match p {
                    Planned::Exact(e) => parts.push(e),
                    Planned::Superset(e) => {
                        exact = false;
                        parts.push(e);
                    }
                    Planned::All => exact = false,
                }
            }
            match (parts.is_empty(), exact) {
                (true, _) => Planned::All,
                (false, true) => Planned::Exact(Expr::And(parts)),
                (false, false) => Planned::Superset(Expr::And(parts)),
            }
        }
        Filter::Or(items) => {
            let mut exact = true;
            let mut parts = Vec::new();
            for p in items.iter().map(|i| plan_node(i, kind)) {
                match p {
                    Planned::Exact(e) => parts.push(e),
                    Planned::Superset(e) => {
                        exact = false;
                        parts.push(e);
                    }
                    Planned::All => return Planned::All,
                }
            }
            if exact {
                Planned::Exact(Expr::Or(parts))
            } else {
                Planned::Superset(Expr::Or(parts))
            }
        }
        Filter::Present(path) => {
            let Some(col) = resolve(Scope::Resource(rt), path).and_then(|r| column(&r, kind))
            else {
                return Planned::All;
            };
            Planned::Exact(leaf(
                col.name,
                Test::Present {
                    text: col.kind != ColKind::Bool,
                },
            ))
        }
        Filter::Compare { path, op, value } => compare(path, *op, value, kind),
        Filter::ValuePath { attr, filter } => value_path(attr, filter, kind),
    }
}

fn compare(path: &AttrPath, op: CompareOp, value: &CompValue, kind: ResourceKind) -> Planned {
    let Some(r) = resolve(Scope::Resource(kind.resource_type()), path) else {
        return Planned::All;
    };
    if is_email_value(&r, kind) {
        return email(op, value);
    }
    let Some(col) = column(&r, kind) else {
        return Planned::All;
    };
    let present = || {
        leaf(
            col.name,
            Test::Present {
                text: col.kind != ColKind::Bool,
            },
        )
    };
    match (col.kind, op, value) {
        (_, CompareOp::Eq, CompValue::Null) => Planned::Exact(negate(present())),
        (_, CompareOp::Ne, CompValue::Null) => Planned::Exact(present()),
        (ColKind::Bool, CompareOp::Eq, CompValue::Bool(b)) => {
            Planned::Exact(leaf(col.name, Test::Eq(SqlBind::Bool(*b))))
        }
        (ColKind::Bool, CompareOp::Ne, CompValue::Bool(b)) => {
            Planned::Exact(negate(leaf(col.name, Test::Eq(SqlBind::Bool(*b)))))
        }
        (ColKind::Folded | ColKind::Exact, _, CompValue::Str(s)) => {
            let s = if col.kind == ColKind::Folded {
                fold_case(s)
            } else {
                s.clone()
            };
            let t = match op {
                CompareOp::Eq | CompareOp::Ne => Test::Eq(SqlBind::Text(s)),
                CompareOp::Sw | CompareOp::Ew | CompareOp::Co => Test::Like(like_pattern(op, &s)),
                _ => return Planned::All,
            };
            let like = matches!(t, Test::Like(_));
            let e = leaf(col.name, t);
            match (op, col.kind, like) {
                (CompareOp::Ne, _, _) => Planned::Exact(negate(e)),
                (_, ColKind::Exact, true) => Planned::Superset(e),
                _ => Planned::Exact(e),
            }
        }
        _ => Planned::All,
    }
}

fn is_email_value(r: &Resolved, kind: ResourceKind) -> bool {
    kind == ResourceKind::User
        && r.location == Location::Core
        && r.attr.name == "emails"
        && r.sub.is_some_and(|s| s.name == "value")
}

/// `emails.value op s`: rows whose work email matches, plus every row holding another
/// email address (`email_overflow`), which only the evaluator can judge.
fn email(op: CompareOp, value: &CompValue) -> Planned {
    let CompValue::Str(s) = value else {
        return Planned::All;
    };
    let s = fold_case(s);
    let test = match op {
        CompareOp::Eq => Test::Eq(SqlBind::Text(s)),
        CompareOp::Sw | CompareOp::Ew | CompareOp::Co => Test::Like(like_pattern(op, &s)),
        _ => return Planned::All,
    };
    Planned::Superset(Expr::Or(vec![
        leaf("work_email_lower", test),
        leaf("email_overflow", Test::Eq(SqlBind::Bool(true))),
    ]))
}

/// `emails[… and value op s and …]` narrows like `emails.value op s`.
fn value_path(attr: &AttrPath, filter: &Filter, kind: ResourceKind) -> Planned {
    let rt = kind.resource_type();
    let Some(r) = resolve(Scope::Resource(rt), attr) else {
        return Planned::All;
    };
    if kind != ResourceKind::User || r.attr.name != "emails" || r.location != Location::Core {
        return Planned::All;
    }
    let terms: &[Filter] = match filter {
        Filter::And(v) => v,
        one => std::slice::from_ref(one),
    };
    terms
        .iter()
        .find_map(|t| match t {
            Filter::Compare { path, op, value } if path.name.eq_ignore_ascii_case("value") => {
                match email(*op, value) {
                    Planned::All => None,
                    p => Some(p),
                }
            }
            _ => None,
        })
        .unwrap_or(Planned::All)
}

fn like_pattern(op: CompareOp, s: &str) -> String {
    let mut esc = String::with_capacity(s.len() + 2);
    for c in s.chars() {
        if matches!(c, '\\' | '%' | '_') {
            esc.push('\\');
        }
        esc.push(c);
    }
    match op {
        CompareOp::Sw => format!("{esc}%"),
        CompareOp::Ew => format!("%{esc}"),
        _ => format!("%{esc}%"),
    }
}

fn render(e: &Expr, sql: &mut String, binds: &mut Vec<SqlBind>) {
    match e {
        Expr::And(v) | Expr::Or(v) => {
            let sep = if matches!(e, Expr::And(_)) {
                " AND "
            } else {
                " OR "
            };
            sql.push('(');
            for (i, x) in v.iter().enumerate() {
                if i > 0 {
                    sql.push_str(sep);
                }
                render(x, sql, binds);
            }
            sql.push(')');
        }
        Expr::Leaf(Leaf { col, test, negated }) => match (test, negated) {
            (Test::Eq(b), false) => {
                sql.push_str(&format!("{col} = ?"));
                binds.push(b.clone());
            }
            (Test::Eq(b), true) => {
                sql.push_str(&format!("({col} IS NULL OR {col} <> ?)"));
                binds.push(b.clone());
            }
            (Test::Like(p), false) => {
                sql.push_str(&format!("{col} LIKE ? ESCAPE '\\'"));
                binds.push(SqlBind::Text(p.clone()));
            }
            (Test::Like(p), true) => {
                sql.push_str(&format!("({col} IS NULL OR {col} NOT LIKE ? ESCAPE '\\')"));
                binds.push(SqlBind::Text(p.clone()));
            }
            (Test::Present { text: true }, false) => {
                sql.push_str(&format!("({col} IS NOT NULL AND {col} <> ?)"));
                binds.push(SqlBind::Text(String::new()));
            }
            (Test::Present { text: true }, true) => {
                sql.push_str(&format!("({col} IS NULL OR {col} = ?)"));
                binds.push(SqlBind::Text(String::new()));
            }
            (Test::Present { text: false }, false) => sql.push_str(&format!("{col} IS NOT NULL")),
            (Test::Present { text: false }, true) => sql.push_str(&format!("{col} IS NULL")),
        },
    }
}

#[cfg(test)]
#[path = "sql_tests.rs"]
mod tests;
