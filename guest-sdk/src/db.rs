//! The project's gateway database (`switchyard:gateway/db`): the tables
//! declared in `switchyard.toml`, through a typed query builder. No SQL is
//! ever written or sent; the host checks every query against the declared
//! tables and binds every value.
//!
//! ```no_run
//! use serde::{Deserialize, Serialize};
//! use switchyard_sdk::db;
//!
//! #[derive(Deserialize)]
//! struct Todo {
//!     id: i64,
//!     title: String,
//!     done: bool,
//! }
//!
//! #[derive(Serialize)]
//! struct NewTodo<'a> {
//!     title: &'a str,
//! }
//!
//! # fn main() -> Result<(), db::Error> {
//! let open: Vec<Todo> = db::from("todos")
//!     .select(["id", "title", "done"])
//!     .eq("done", false)
//!     .order_desc("id")
//!     .limit(20)
//!     .fetch()?;
//!
//! let created: Todo = db::from("todos")
//!     .insert(&NewTodo { title: "write docs" })?
//!     .returning(["id", "title", "done"])
//!     .fetch_one()?;
//!
//! db::from("todos").update(&serde_json::json!({ "done": true }))?.eq("id", created.id).execute()?;
//! db::from("todos").delete().eq("done", true).execute()?;
//!
//! // Several queries in one transaction: all or nothing.
//! db::batch([
//!     db::from("todos").delete().eq("id", 1).into(),
//!     db::from("todos").insert(&NewTodo { title: "again" })?.into(),
//! ])?;
//! # Ok(())
//! # }
//! ```
//!
//! Limits (the host's defaults): 1000 db calls per request, 2 s per call,
//! 1000 rows per select or insert, 4 MiB of results per call.

use crate::bindings::switchyard::gateway::db as wit;
use crate::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt;

pub use wit::Value;

/// Why a db call failed.
#[derive(Debug, Clone, PartialEq)]
pub struct Error {
    /// The stable code: `TABLE_NOT_FOUND`, `COLUMN_NOT_FOUND`,
    /// `COLUMN_NOT_ALLOWED`, `INVALID_VALUE`, `INVALID_FILTER`,
    /// `FILTERLESS_MUTATION`, `QUERY_TOO_COMPLEX`, `CONSTRAINT_VIOLATION`,
    /// `QUERY_TIMEOUT`, `QUOTA_EXCEEDED`, `DB_BUSY`, `DB_UNAVAILABLE`,
    /// `LIMIT_EXCEEDED`, or (in this SDK) `DECODE` when rows do not fit
    /// the type asked for and `NOT_FOUND` from [`Select::fetch_one`].
    pub code: &'static str,
    /// What went wrong; safe to show a client.
    pub message: String,
    /// In a batch, which query failed.
    pub index: Option<u32>,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for Error {}

impl From<wit::Error> for Error {
    fn from(e: wit::Error) -> Self {
        use wit::ErrorCode as C;
        let code = match e.code {
            C::TableNotFound => "TABLE_NOT_FOUND",
            C::ColumnNotFound => "COLUMN_NOT_FOUND",
            C::ColumnNotAllowed => "COLUMN_NOT_ALLOWED",
            C::InvalidValue => "INVALID_VALUE",
            C::InvalidFilter => "INVALID_FILTER",
            C::FilterlessMutation => "FILTERLESS_MUTATION",
            C::QueryTooComplex => "QUERY_TOO_COMPLEX",
            C::ConstraintViolation => "CONSTRAINT_VIOLATION",
            C::QueryTimeout => "QUERY_TIMEOUT",
            C::QuotaExceeded => "QUOTA_EXCEEDED",
            C::DbBusy => "DB_BUSY",
            C::DbUnavailable => "DB_UNAVAILABLE",
            C::LimitExceeded => "LIMIT_EXCEEDED",
        };
        Error {
            code,
            message: e.message,
            index: e.index,
        }
    }
}

impl Error {
    fn local(code: &'static str, message: impl Into<String>) -> Self {
        Error {
            code,
            message: message.into(),
            index: None,
        }
    }

    /// The HTTP status that best describes this error to a client.
    pub fn status(&self) -> u16 {
        match self.code {
            "NOT_FOUND" => 404,
            "CONSTRAINT_VIOLATION" => 409,
            "LIMIT_EXCEEDED" => 429,
            "QUERY_TIMEOUT" => 504,
            "QUOTA_EXCEEDED" => 507,
            "DB_BUSY" | "DB_UNAVAILABLE" => 503,
            "DECODE" => 500,
            _ => 400,
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let body = serde_json::json!({
            "error": { "code": self.code, "message": self.message }
        });
        Response::json(&body).with_status(self.status())
    }
}

impl From<Error> for Response {
    fn from(e: Error) -> Self {
        e.into_response()
    }
}

macro_rules! value_from {
    ($($ty:ty => |$v:ident| $e:expr;)*) => {
        $(impl From<$ty> for Value {
            fn from($v: $ty) -> Value {
                $e
            }
        })*
    };
}

value_from! {
    bool => |v| Value::Bool(v);
    i64 => |v| Value::S64(v);
    i32 => |v| Value::S64(i64::from(v));
    u32 => |v| Value::S64(i64::from(v));
    f64 => |v| Value::F64(v);
    String => |v| Value::Text(v);
    &str => |v| Value::Text(v.to_owned());
    &String => |v| Value::Text(v.clone());
    Vec<u8> => |v| Value::Blob(v);
}

impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Value {
        v.map_or(Value::Null, Into::into)
    }
}

/// A JSON value as a db value: objects and arrays become JSON text (for
/// `json` columns), numbers integers when they fit.
fn from_json(value: serde_json::Value) -> Value {
    match value {
        serde_json::Value::Null => Value::Null,
        serde_json::Value::Bool(b) => Value::Bool(b),
        serde_json::Value::Number(n) => match n.as_i64() {
            Some(i) => Value::S64(i),
            None => Value::F64(n.as_f64().unwrap_or(f64::NAN)),
        },
        serde_json::Value::String(s) => Value::Text(s),
        other => Value::Text(other.to_string()),
    }
}

fn to_json(value: Value) -> serde_json::Value {
    match value {
        Value::Null => serde_json::Value::Null,
        Value::Bool(b) => b.into(),
        Value::S64(n) => n.into(),
        Value::F64(v) => v.into(),
        Value::Text(s) => s.into(),
        Value::Blob(b) => b.into(),
    }
}

/// Column → value pairs from a serializable struct or map.
fn columns_of<T: Serialize + ?Sized>(row: &T) -> Result<Vec<(String, Value)>, Error> {
    match serde_json::to_value(row) {
        Ok(serde_json::Value::Object(map)) => {
            Ok(map.into_iter().map(|(k, v)| (k, from_json(v))).collect())
        }
        Ok(_) => Err(Error::local(
            "INVALID_VALUE",
            "a row must serialize to a map of column names to values",
        )),
        Err(e) => Err(Error::local("INVALID_VALUE", e.to_string())),
    }
}

/// The rows a query returned.
#[derive(Debug, Clone)]
pub struct Rows {
    /// The column names, in order.
    pub columns: Vec<String>,
    /// The rows, one value per column.
    pub rows: Vec<Vec<Value>>,
    /// Rows inserted, updated or deleted (0 for a select).
    pub affected: u64,
}

impl From<wit::QueryResult> for Rows {
    fn from(r: wit::QueryResult) -> Self {
        Rows {
            columns: r.columns,
            rows: r.rows,
            affected: r.affected,
        }
    }
}

impl Rows {
    /// Each row as a `T`, by column name (blobs as byte sequences).
    pub fn deserialize<T: DeserializeOwned>(self) -> Result<Vec<T>, Error> {
        let columns = self.columns;
        self.rows
            .into_iter()
            .map(|row| {
                let object: serde_json::Map<String, serde_json::Value> = columns
                    .iter()
                    .cloned()
                    .zip(row.into_iter().map(to_json))
                    .collect();
                serde_json::from_value(serde_json::Value::Object(object))
                    .map_err(|e| Error::local("DECODE", e.to_string()))
            })
            .collect()
    }
}

/// A filter expression, flattened into the WIT form when sent.
#[derive(Debug, Clone)]
enum Expr {
    And(Vec<Expr>),
    Or(Vec<Expr>),
    Condition(wit::Condition),
}

/// Conditions combined with `and` (for [`Select::or`] groups: with `or`).
#[derive(Debug, Clone, Default)]
struct Conditions {
    exprs: Vec<Expr>,
}

fn to_filter(exprs: Vec<Expr>) -> Option<wit::Filter> {
    let root = match exprs.len() {
        0 => return None,
        1 => exprs.into_iter().next()?,
        _ => Expr::And(exprs),
    };
    let mut nodes = Vec::new();
    flatten(root, &mut nodes);
    Some(wit::Filter { nodes })
}

/// Appends `expr` in pre-order: each node before its children. (An empty
/// group is sent as it is, and the host refuses it.)
fn flatten(expr: Expr, nodes: &mut Vec<wit::FilterNode>) {
    let (children, any) = match expr {
        Expr::Condition(c) => {
            nodes.push(wit::FilterNode::Condition(c));
            return;
        }
        Expr::And(children) => (children, false),
        Expr::Or(children) => (children, true),
    };
    let at = nodes.len();
    nodes.push(wit::FilterNode::And(Vec::new()));
    let mut indexes = Vec::with_capacity(children.len());
    for child in children {
        indexes.push(u32::try_from(nodes.len()).unwrap_or(u32::MAX));
        flatten(child, nodes);
    }
    nodes[at] = if any {
        wit::FilterNode::Or(indexes)
    } else {
        wit::FilterNode::And(indexes)
    };
}

/// The filter methods every builder with a filter has.
macro_rules! filters {
    ($ty:ty) => {
        impl $ty {
            fn condition(mut self, column: &str, op: wit::Op, operand: wit::Operand) -> Self {
                self.filter.exprs.push(Expr::Condition(wit::Condition {
                    column: column.to_owned(),
                    op,
                    operand,
                }));
                self
            }

            /// `column = value` (never null: use [`Self::is_null`]).
            pub fn eq(self, column: &str, value: impl Into<Value>) -> Self {
                self.condition(column, wit::Op::Eq, wit::Operand::One(value.into()))
            }
            /// `column <> value`.
            pub fn neq(self, column: &str, value: impl Into<Value>) -> Self {
                self.condition(column, wit::Op::Neq, wit::Operand::One(value.into()))
            }
            /// `column > value`.
            pub fn gt(self, column: &str, value: impl Into<Value>) -> Self {
                self.condition(column, wit::Op::Gt, wit::Operand::One(value.into()))
            }
            /// `column >= value`.
            pub fn gte(self, column: &str, value: impl Into<Value>) -> Self {
                self.condition(column, wit::Op::Gte, wit::Operand::One(value.into()))
            }
            /// `column < value`.
            pub fn lt(self, column: &str, value: impl Into<Value>) -> Self {
                self.condition(column, wit::Op::Lt, wit::Operand::One(value.into()))
            }
            /// `column <= value`.
            pub fn lte(self, column: &str, value: impl Into<Value>) -> Self {
                self.condition(column, wit::Op::Lte, wit::Operand::One(value.into()))
            }
            /// A case-sensitive pattern: `%` any run of characters, `_` one.
            pub fn like(self, column: &str, pattern: &str) -> Self {
                self.condition(column, wit::Op::Like, wit::Operand::One(pattern.into()))
            }
            /// A pattern that ignores ASCII case.
            pub fn ilike(self, column: &str, pattern: &str) -> Self {
                self.condition(column, wit::Op::Ilike, wit::Operand::One(pattern.into()))
            }
            /// `column` is one of `values` (at most 100).
            pub fn is_in<V: Into<Value>>(
                self,
                column: &str,
                values: impl IntoIterator<Item = V>,
            ) -> Self {
                let values = values.into_iter().map(Into::into).collect();
                self.condition(column, wit::Op::In, wit::Operand::Many(values))
            }
            /// `column IS NULL`.
            pub fn is_null(self, column: &str) -> Self {
                self.condition(column, wit::Op::Is, wit::Operand::Is(wit::IsValue::Null))
            }
            /// `column IS TRUE`.
            pub fn is_true(self, column: &str) -> Self {
                self.condition(column, wit::Op::Is, wit::Operand::Is(wit::IsValue::True))
            }
            /// `column IS FALSE`.
            pub fn is_false(self, column: &str) -> Self {
                self.condition(column, wit::Op::Is, wit::Operand::Is(wit::IsValue::False))
            }
            /// At least one of the conditions `group` builds holds.
            ///
            /// ```no_run
            /// # use switchyard_sdk::db;
            /// let urgent = db::from("todos")
            ///     .select(["id"])
            ///     .is_false("done")
            ///     .or(|any| any.eq("priority", 1).lt("due", "2026-12-01T00:00:00.000Z"));
            /// ```
            pub fn or(mut self, group: impl FnOnce(Group) -> Group) -> Self {
                let group = group(Group::default());
                self.filter.exprs.push(Expr::Or(group.filter.exprs));
                self
            }
        }
    };
}

/// The conditions of an [`Select::or`] group.
#[derive(Debug, Clone, Default)]
pub struct Group {
    filter: Conditions,
}

filters!(Group);

/// A table of the project's database: where queries start.
#[derive(Debug, Clone)]
pub struct Table {
    name: String,
}

/// The table called `name`.
pub fn from(name: &str) -> Table {
    Table {
        name: name.to_owned(),
    }
}

impl Table {
    /// Reads these columns.
    pub fn select<S: Into<String>>(&self, columns: impl IntoIterator<Item = S>) -> Select {
        Select {
            table: self.name.clone(),
            columns: Some(columns.into_iter().map(Into::into).collect()),
            filter: Conditions::default(),
            order: Vec::new(),
            limit: None,
            offset: None,
        }
    }

    /// Reads every column.
    pub fn select_all(&self) -> Select {
        Select {
            columns: None,
            ..self.select(Vec::<String>::new())
        }
    }

    /// Inserts one row: a struct or map of column names to values; columns
    /// it leaves out get their defaults.
    pub fn insert<T: Serialize + ?Sized>(&self, row: &T) -> Result<Insert, Error> {
        self.insert_many(std::slice::from_ref(&row))
    }

    /// Inserts rows (at most 1000). Every row must have the same columns.
    pub fn insert_many<T: Serialize>(&self, rows: &[T]) -> Result<Insert, Error> {
        let mut columns: Option<Vec<String>> = None;
        let mut values = Vec::with_capacity(rows.len());
        for row in rows {
            let pairs = columns_of(row)?;
            let names: Vec<String> = pairs.iter().map(|(k, _)| k.clone()).collect();
            match &columns {
                Some(first) if *first != names => {
                    return Err(Error::local(
                        "INVALID_VALUE",
                        "every inserted row must have the same columns",
                    ));
                }
                Some(_) => {}
                None => columns = Some(names),
            }
            values.push(pairs.into_iter().map(|(_, v)| v).collect());
        }
        Ok(Insert {
            table: self.name.clone(),
            columns: columns.unwrap_or_default(),
            rows: values,
            returning: None,
        })
    }

    /// Changes the rows the filter will match: `changes` is a struct or
    /// map of column names to new values. A filter is required.
    pub fn update<T: Serialize + ?Sized>(&self, changes: &T) -> Result<Update, Error> {
        Ok(Update {
            table: self.name.clone(),
            set: columns_of(changes)?,
            filter: Conditions::default(),
            returning: None,
        })
    }

    /// Sets one column on the rows the filter will match.
    pub fn update_column(&self, column: &str, value: impl Into<Value>) -> Update {
        Update {
            table: self.name.clone(),
            set: vec![(column.to_owned(), value.into())],
            filter: Conditions::default(),
            returning: None,
        }
    }

    /// Deletes the rows the filter will match. A filter is required.
    pub fn delete(&self) -> Delete {
        Delete {
            table: self.name.clone(),
            filter: Conditions::default(),
            returning: None,
        }
    }
}

/// A select being built.
#[derive(Debug, Clone)]
pub struct Select {
    table: String,
    columns: Option<Vec<String>>,
    filter: Conditions,
    order: Vec<wit::Order>,
    limit: Option<u32>,
    offset: Option<u32>,
}

filters!(Select);

impl Select {
    /// Sorts by `column`, smallest first (after earlier sort keys).
    pub fn order_asc(mut self, column: &str) -> Self {
        self.order.push(wit::Order {
            column: column.to_owned(),
            descending: false,
        });
        self
    }

    /// Sorts by `column`, largest first (after earlier sort keys).
    pub fn order_desc(mut self, column: &str) -> Self {
        self.order.push(wit::Order {
            column: column.to_owned(),
            descending: true,
        });
        self
    }

    /// At most `n` rows (the host caps it, by default at 1000).
    pub fn limit(mut self, n: u32) -> Self {
        self.limit = Some(n);
        self
    }

    /// Skips the first `n` rows.
    pub fn offset(mut self, n: u32) -> Self {
        self.offset = Some(n);
        self
    }

    /// Runs it and returns the raw rows.
    pub fn rows(self) -> Result<Rows, Error> {
        run(self.into())
    }

    /// Runs it and returns each row as a `T`.
    pub fn fetch<T: DeserializeOwned>(self) -> Result<Vec<T>, Error> {
        self.rows()?.deserialize()
    }

    /// The first row as a `T`, if there is one.
    pub fn fetch_optional<T: DeserializeOwned>(self) -> Result<Option<T>, Error> {
        Ok(self.limit(1).fetch()?.into_iter().next())
    }
}

/// An insert being built.
#[derive(Debug, Clone)]
pub struct Insert {
    table: String,
    columns: Vec<String>,
    rows: Vec<Vec<Value>>,
    returning: Option<Vec<String>>,
}

/// An update being built.
#[derive(Debug, Clone)]
pub struct Update {
    table: String,
    set: Vec<(String, Value)>,
    filter: Conditions,
    returning: Option<Vec<String>>,
}

filters!(Update);

/// A delete being built.
#[derive(Debug, Clone)]
pub struct Delete {
    table: String,
    filter: Conditions,
    returning: Option<Vec<String>>,
}

filters!(Delete);

/// `returning`, `execute`, `fetch` for the mutations.
macro_rules! mutation {
    ($ty:ty) => {
        impl $ty {
            /// Returns these columns of the rows it changes.
            pub fn returning<S: Into<String>>(
                mut self,
                columns: impl IntoIterator<Item = S>,
            ) -> Self {
                self.returning = Some(columns.into_iter().map(Into::into).collect());
                self
            }

            /// Runs it; returns how many rows it changed.
            pub fn execute(self) -> Result<u64, Error> {
                Ok(run(self.into())?.affected)
            }

            /// Runs it and returns the `returning` columns of each changed
            /// row as a `T`.
            pub fn fetch<T: DeserializeOwned>(self) -> Result<Vec<T>, Error> {
                run(self.into())?.deserialize()
            }

            /// Runs it and returns the `returning` columns of the one
            /// changed row; `NOT_FOUND` if it changed none.
            pub fn fetch_one<T: DeserializeOwned>(self) -> Result<T, Error> {
                self.fetch()?
                    .into_iter()
                    .next()
                    .ok_or_else(|| Error::local("NOT_FOUND", "no row matched"))
            }
        }
    };
}

mutation!(Insert);
mutation!(Update);
mutation!(Delete);

/// A query ready to run, for [`batch`].
#[derive(Debug, Clone)]
pub struct Query(wit::Statement);

impl From<Select> for Query {
    fn from(q: Select) -> Self {
        Query(wit::Statement::Select(wit::SelectQuery {
            table: q.table,
            columns: q.columns,
            filter: to_filter(q.filter.exprs),
            order: q.order,
            limit: q.limit,
            offset: q.offset,
        }))
    }
}

impl From<Insert> for Query {
    fn from(q: Insert) -> Self {
        Query(wit::Statement::Insert(wit::InsertQuery {
            table: q.table,
            columns: q.columns,
            rows: q.rows,
            returning: q.returning,
        }))
    }
}

impl From<Update> for Query {
    fn from(q: Update) -> Self {
        Query(wit::Statement::Update(wit::UpdateQuery {
            table: q.table,
            set: q.set,
            filter: to_filter(q.filter.exprs),
            returning: q.returning,
        }))
    }
}

impl From<Delete> for Query {
    fn from(q: Delete) -> Self {
        Query(wit::Statement::Delete(wit::DeleteQuery {
            table: q.table,
            filter: to_filter(q.filter.exprs),
            returning: q.returning,
        }))
    }
}

fn run(query: Query) -> Result<Rows, Error> {
    Ok(wit::query(&query.0)?.into())
}

/// Runs `queries` in order in one transaction: all take effect or, on the
/// first error (whose `index` says which), none does.
pub fn batch(queries: impl IntoIterator<Item = Query>) -> Result<Vec<Rows>, Error> {
    let queries: Vec<wit::Statement> = queries.into_iter().map(|q| q.0).collect();
    Ok(wit::batch(&queries)?.into_iter().map(Rows::from).collect())
}
