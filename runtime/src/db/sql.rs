//! The one validator and SQL generator behind every entry point.
//!
//! A query is checked against the declared [`Schema`] and the caller's
//! [`Access`] before any SQL exists: the table and every column must be
//! declared (names match exactly), a column the caller cannot read cannot be
//! selected, filtered, sorted on or returned either (no inference through a
//! filter), values must fit their column's type, and update/delete need a
//! filter. The generated SQL holds only quoted declared identifiers, fixed
//! keywords and `?` placeholders; every value, limit and offset is a bound
//! parameter.
//!
//! The SQL is SQLite's. It expects `PRAGMA case_sensitive_like = ON` on the
//! connection, so `like` is case-sensitive and `ilike` is not, as in
//! PostgreSQL.

use super::query::{Condition, Filter, IsValue, Op, Operand, Order, Query, Value};
use super::schema::{Column, ColumnType, Schema, Table, is_uuid, quote};

/// Longest `like` / `ilike` pattern, in bytes.
pub const MAX_PATTERN_BYTES: usize = 256;

/// Largest text or blob value a query may carry, in bytes, on every
/// backend (SQLite's own limit is set to the same).
pub const MAX_VALUE_BYTES: usize = 1024 * 1024;
/// Most `%` in one pattern.
pub const MAX_PATTERN_WILDCARDS: usize = 16;

/// Every word the generator writes outside quoted identifiers: a statement
/// with any other word (or any literal but the `ESCAPE '\'` character) did
/// not come from here. The tests and the fuzz target check this.
pub const SQL_KEYWORDS: &[&str] = &[
    "SELECT",
    "FROM",
    "WHERE",
    "ORDER",
    "BY",
    "ASC",
    "DESC",
    "LIMIT",
    "OFFSET",
    "INSERT",
    "INTO",
    "VALUES",
    "DEFAULT",
    "UPDATE",
    "SET",
    "DELETE",
    "RETURNING",
    "AND",
    "OR",
    "IN",
    "IS",
    "NULL",
    "LIKE",
    "ESCAPE",
    "lower",
    "TRUE",
    "FALSE",
];

/// Who is asking.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// The project's own code (its guest, or a server key): every column of
    /// its own tables.
    Server,
    /// A browser with a public key: `client_read` / `client_write` columns
    /// only, never sensitive ones.
    Public,
}

/// Caps on a query's size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueryLimits {
    /// Largest `limit` (and the limit when none is given).
    pub max_rows: u32,
    /// Largest `offset`.
    pub max_offset: u32,
    /// Most values in one `in` list.
    pub max_in_values: usize,
    /// Most nodes (conditions, ands, ors) in a filter.
    pub max_filter_nodes: usize,
    /// Deepest nesting of ands and ors.
    pub max_filter_depth: usize,
    /// Most rows in one insert.
    pub max_insert_rows: usize,
}

impl Default for QueryLimits {
    fn default() -> Self {
        QueryLimits {
            max_rows: 1000,
            max_offset: 100_000,
            max_in_values: 100,
            max_filter_nodes: 64,
            max_filter_depth: 8,
            max_insert_rows: 1000,
        }
    }
}

/// Why a query was refused. Messages name only what the caller sent and
/// what it may see.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// No such table (for this caller).
    #[error("table `{0}` does not exist")]
    TableNotFound(String),
    /// No such column (for this caller).
    #[error("column `{0}` does not exist")]
    ColumnNotFound(String),
    /// The column exists, but this caller may not use it this way.
    #[error("column `{0}` may not be {1} with this key")]
    ColumnNotAllowed(String, &'static str),
    /// A public key asked to insert into or delete from a table none of
    /// whose columns it may write (code `COLUMN_NOT_ALLOWED`).
    #[error("table `{0}` is read-only with this key")]
    ReadOnlyTable(String),
    /// A value does not fit its column.
    #[error("{0}")]
    InvalidValue(String),
    /// A filter that makes no sense.
    #[error("{0}")]
    InvalidFilter(String),
    /// An update or delete without a filter.
    #[error(
        "an update or delete needs a filter; to touch every row, filter on something every row matches"
    )]
    FilterlessMutation,
    /// Over a size cap.
    #[error("{0}")]
    TooComplex(String),
}

impl QueryError {
    /// The stable code.
    pub fn code(&self) -> &'static str {
        match self {
            QueryError::TableNotFound(_) => "TABLE_NOT_FOUND",
            QueryError::ColumnNotFound(_) => "COLUMN_NOT_FOUND",
            QueryError::ColumnNotAllowed(..) | QueryError::ReadOnlyTable(_) => "COLUMN_NOT_ALLOWED",
            QueryError::InvalidValue(_) => "INVALID_VALUE",
            QueryError::InvalidFilter(_) => "INVALID_FILTER",
            QueryError::FilterlessMutation => "FILTERLESS_MUTATION",
            QueryError::TooComplex(_) => "QUERY_TOO_COMPLEX",
        }
    }
}

/// A checked query, ready to run.
#[derive(Clone, Debug, PartialEq)]
pub struct Statement {
    /// The SQL, with the dialect's placeholders.
    pub sql: String,
    /// The values for the placeholders, in order.
    pub params: Vec<Value>,
    /// The columns of the rows it returns (empty if none).
    pub columns: Vec<String>,
    /// Their types, for reading the rows back (SQLite stores booleans as
    /// 0/1).
    pub column_types: Vec<ColumnType>,
}

/// The SQL a statement is written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect<'a> {
    /// SQLite: `?` placeholders, tables by bare (quoted) name in the
    /// project's own database file.
    Sqlite,
    /// PostgreSQL: `$n` placeholders, tables qualified by the project's
    /// schema (`schema` is its name, unquoted).
    Postgres {
        /// The project's schema.
        schema: &'a str,
    },
}

/// Checks `query` for `access` against `schema` and builds its SQLite
/// statement.
pub fn compile(
    schema: &Schema,
    access: Access,
    query: &Query,
    limits: &QueryLimits,
) -> Result<Statement, QueryError> {
    compile_for(Dialect::Sqlite, schema, access, query, limits)
}

/// Checks `query` for `access` against `schema` and builds its statement
/// in `dialect`. The checks are the same for every dialect.
pub fn compile_for(
    dialect: Dialect<'_>,
    schema: &Schema,
    access: Access,
    query: &Query,
    limits: &QueryLimits,
) -> Result<Statement, QueryError> {
    let table = schema
        .table(query.table())
        .ok_or_else(|| QueryError::TableNotFound(shown(query.table())))?;
    // A public key changes rows only in tables it may write a column of:
    // no `DEFAULT VALUES` insert and no delete in a read-only table.
    if access == Access::Public
        && !matches!(query, Query::Select { .. })
        && !table.columns.iter().any(|c| c.client_write && !c.sensitive)
    {
        return Err(QueryError::ReadOnlyTable(table.name.clone()));
    }
    let mut out = Builder {
        table,
        dialect,
        access,
        limits,
        sql: String::new(),
        params: Vec::new(),
        columns: Vec::new(),
        column_types: Vec::new(),
    };
    match query {
        Query::Select {
            columns,
            filter,
            order,
            limit,
            offset,
            ..
        } => out.select(columns.as_deref(), filter.as_ref(), order, *limit, *offset)?,
        Query::Insert {
            columns,
            rows,
            returning,
            ..
        } => out.insert(columns, rows, returning.as_deref())?,
        Query::Update {
            set,
            filter,
            returning,
            ..
        } => out.update(set, filter.as_ref(), returning.as_deref())?,
        Query::Delete {
            filter, returning, ..
        } => out.delete(filter.as_ref(), returning.as_deref())?,
    }
    Ok(Statement {
        sql: out.sql,
        params: out.params,
        columns: out.columns,
        column_types: out.column_types,
    })
}

/// A caller-supplied name, cut and cleaned for an error message.
fn shown(name: &str) -> String {
    name.chars()
        .take(64)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

struct Builder<'a> {
    table: &'a Table,
    dialect: Dialect<'a>,
    access: Access,
    limits: &'a QueryLimits,
    sql: String,
    params: Vec<Value>,
    columns: Vec<String>,
    column_types: Vec<ColumnType>,
}

impl<'a> Builder<'a> {
    /// The table's name as the dialect refers to it.
    fn table_sql(&self) -> String {
        match self.dialect {
            Dialect::Sqlite => quote(&self.table.name),
            Dialect::Postgres { schema } => {
                format!("{}.{}", quote(schema), quote(&self.table.name))
            }
        }
    }

    /// Adds `value` as the next parameter and returns its placeholder.
    fn bind(&mut self, value: Value) -> String {
        self.params.push(value);
        match self.dialect {
            Dialect::Sqlite => "?".to_owned(),
            Dialect::Postgres { .. } => format!("${}", self.params.len()),
        }
    }

    fn readable(&self, column: &Column) -> bool {
        match self.access {
            Access::Server => true,
            Access::Public => column.client_read && !column.sensitive,
        }
    }

    fn writable(&self, column: &Column) -> bool {
        match self.access {
            Access::Server => true,
            Access::Public => column.client_write && !column.sensitive,
        }
    }

    /// The declared column `name`. A sensitive column does not exist for a
    /// public key (no oracle for its name).
    fn column(&self, name: &str) -> Result<&'a Column, QueryError> {
        match self.table.column(name) {
            Some(c) if !(self.access == Access::Public && c.sensitive) => Ok(c),
            _ => Err(QueryError::ColumnNotFound(shown(name))),
        }
    }

    fn read_column(&self, name: &str, how: &'static str) -> Result<&'a Column, QueryError> {
        let column = self.column(name)?;
        if !self.readable(column) {
            return Err(QueryError::ColumnNotAllowed(column.name.clone(), how));
        }
        Ok(column)
    }

    fn write_column(&self, name: &str) -> Result<&'a Column, QueryError> {
        let column = self.column(name)?;
        if !self.writable(column) {
            return Err(QueryError::ColumnNotAllowed(column.name.clone(), "written"));
        }
        Ok(column)
    }

    /// The listed columns, or every readable one; sets the result columns
    /// and returns them quoted.
    fn output(
        &mut self,
        names: Option<&[String]>,
        how: &'static str,
    ) -> Result<String, QueryError> {
        let columns: Vec<&Column> = match names {
            None => self
                .table
                .columns
                .iter()
                .filter(|c| self.readable(c))
                .collect(),
            Some(names) if names.len() == 1 && names[0] == "*" => self
                .table
                .columns
                .iter()
                .filter(|c| self.readable(c))
                .collect(),
            Some(names) => names
                .iter()
                .map(|n| self.read_column(n, how))
                .collect::<Result<_, _>>()?,
        };
        if columns.is_empty() {
            return Err(QueryError::ColumnNotAllowed(self.table.name.clone(), how));
        }
        self.columns = columns.iter().map(|c| c.name.clone()).collect();
        self.column_types = columns.iter().map(|c| c.ty).collect();
        Ok(columns
            .iter()
            .map(|c| quote(&c.name))
            .collect::<Vec<_>>()
            .join(", "))
    }

    fn select(
        &mut self,
        columns: Option<&[String]>,
        filter: Option<&Filter>,
        order: &[Order],
        limit: Option<u32>,
        offset: Option<u32>,
    ) -> Result<(), QueryError> {
        let list = self.output(columns, "read")?;
        self.sql = format!("SELECT {list} FROM {}", self.table_sql());
        self.filter_clause(filter)?;
        if !order.is_empty() {
            if order.len() > self.table.columns.len() {
                return Err(QueryError::TooComplex("more sort keys than columns".into()));
            }
            let keys = order
                .iter()
                .map(|o| {
                    let column = self.read_column(&o.column, "sorted on")?;
                    let direction = if o.descending { "DESC" } else { "ASC" };
                    Ok(format!("{} {direction}", quote(&column.name)))
                })
                .collect::<Result<Vec<_>, QueryError>>()?;
            self.sql.push_str(" ORDER BY ");
            self.sql.push_str(&keys.join(", "));
        }
        let limit = limit.unwrap_or(self.limits.max_rows);
        if limit > self.limits.max_rows {
            return Err(QueryError::TooComplex(format!(
                "limit {limit} is above the maximum of {}",
                self.limits.max_rows
            )));
        }
        let offset = offset.unwrap_or(0);
        if offset > self.limits.max_offset {
            return Err(QueryError::TooComplex(format!(
                "offset {offset} is above the maximum of {}",
                self.limits.max_offset
            )));
        }
        let limit = self.bind(Value::S64(i64::from(limit)));
        let offset = self.bind(Value::S64(i64::from(offset)));
        self.sql
            .push_str(&format!(" LIMIT {limit} OFFSET {offset}"));
        Ok(())
    }

    fn insert(
        &mut self,
        columns: &[String],
        rows: &[Vec<Value>],
        returning: Option<&[String]>,
    ) -> Result<(), QueryError> {
        if rows.is_empty() {
            return Err(QueryError::InvalidValue(
                "an insert needs at least one row".into(),
            ));
        }
        if rows.len() > self.limits.max_insert_rows {
            return Err(QueryError::TooComplex(format!(
                "at most {} rows per insert",
                self.limits.max_insert_rows
            )));
        }
        let targets = columns
            .iter()
            .map(|n| self.write_column(n))
            .collect::<Result<Vec<_>, _>>()?;
        for (i, column) in targets.iter().enumerate() {
            if targets[..i].iter().any(|c| c.name == column.name) {
                return Err(QueryError::InvalidValue(format!(
                    "column `{}` is given twice",
                    column.name
                )));
            }
        }
        let table = self.table_sql();
        if targets.is_empty() {
            if rows.len() != 1 || !rows[0].is_empty() {
                return Err(QueryError::InvalidValue(
                    "each row needs one value per column".into(),
                ));
            }
            self.sql = format!("INSERT INTO {table} DEFAULT VALUES");
        } else {
            let names: Vec<String> = targets.iter().map(|c| quote(&c.name)).collect();
            let mut tuples = Vec::with_capacity(rows.len());
            for row in rows {
                if row.len() != targets.len() {
                    return Err(QueryError::InvalidValue(
                        "each row needs one value per column".into(),
                    ));
                }
                let mut placeholders = Vec::with_capacity(row.len());
                for (column, value) in targets.iter().zip(row) {
                    let value = stored(column, value)?;
                    placeholders.push(self.bind(value));
                }
                tuples.push(format!("({})", placeholders.join(", ")));
            }
            self.sql = format!(
                "INSERT INTO {table} ({}) VALUES {}",
                names.join(", "),
                tuples.join(", ")
            );
        }
        self.returning(returning)
    }

    fn update(
        &mut self,
        set: &[(String, Value)],
        filter: Option<&Filter>,
        returning: Option<&[String]>,
    ) -> Result<(), QueryError> {
        if filter.is_none() {
            return Err(QueryError::FilterlessMutation);
        }
        if set.is_empty() {
            return Err(QueryError::InvalidValue(
                "an update needs at least one column to set".into(),
            ));
        }
        let mut assignments = Vec::with_capacity(set.len());
        for (i, (name, value)) in set.iter().enumerate() {
            let column = self.write_column(name)?;
            if set[..i].iter().any(|(n, _)| n == name) {
                return Err(QueryError::InvalidValue(format!(
                    "column `{}` is set twice",
                    column.name
                )));
            }
            let value = stored(column, value)?;
            let placeholder = self.bind(value);
            assignments.push(format!("{} = {placeholder}", quote(&column.name)));
        }
        self.sql = format!("UPDATE {} SET {}", self.table_sql(), assignments.join(", "));
        self.filter_clause(filter)?;
        self.returning(returning)
    }

    fn delete(
        &mut self,
        filter: Option<&Filter>,
        returning: Option<&[String]>,
    ) -> Result<(), QueryError> {
        if filter.is_none() {
            return Err(QueryError::FilterlessMutation);
        }
        self.sql = format!("DELETE FROM {}", self.table_sql());
        self.filter_clause(filter)?;
        self.returning(returning)
    }

    fn returning(&mut self, returning: Option<&[String]>) -> Result<(), QueryError> {
        if let Some(names) = returning {
            let list = self.output(Some(names), "returned")?;
            self.sql.push_str(" RETURNING ");
            self.sql.push_str(&list);
        }
        Ok(())
    }

    fn filter_clause(&mut self, filter: Option<&Filter>) -> Result<(), QueryError> {
        if let Some(filter) = filter {
            let mut nodes = 0;
            let condition = self.condition_sql(filter, 0, &mut nodes)?;
            self.sql.push_str(" WHERE ");
            self.sql.push_str(&condition);
        }
        Ok(())
    }

    fn condition_sql(
        &mut self,
        filter: &Filter,
        depth: usize,
        nodes: &mut usize,
    ) -> Result<String, QueryError> {
        *nodes += 1;
        if *nodes > self.limits.max_filter_nodes {
            return Err(QueryError::TooComplex(format!(
                "a filter may have at most {} parts",
                self.limits.max_filter_nodes
            )));
        }
        match filter {
            Filter::And(parts) | Filter::Or(parts) => {
                if depth >= self.limits.max_filter_depth {
                    return Err(QueryError::TooComplex(format!(
                        "filters nest at most {} deep",
                        self.limits.max_filter_depth
                    )));
                }
                if parts.is_empty() {
                    return Err(QueryError::InvalidFilter(
                        "an and/or needs at least one part".into(),
                    ));
                }
                let joiner = if matches!(filter, Filter::And(_)) {
                    " AND "
                } else {
                    " OR "
                };
                let parts = parts
                    .iter()
                    .map(|p| self.condition_sql(p, depth + 1, nodes))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(format!("({})", parts.join(joiner)))
            }
            Filter::Condition(condition) => self.comparison_sql(condition),
        }
    }

    fn comparison_sql(&mut self, condition: &Condition) -> Result<String, QueryError> {
        let column = self.read_column(&condition.column, "filtered on")?;
        let name = quote(&column.name);
        let invalid = |why: &str| QueryError::InvalidFilter(format!("`{}`: {why}", column.name));
        match (condition.op, &condition.value) {
            (Op::Is, Operand::Is(is)) => {
                let test = match is {
                    IsValue::Null => "IS NULL",
                    IsValue::True | IsValue::False if column.ty != ColumnType::Boolean => {
                        return Err(invalid("`is true` and `is false` need a boolean column"));
                    }
                    IsValue::True => "IS TRUE",
                    IsValue::False => "IS FALSE",
                };
                Ok(format!("{name} {test}"))
            }
            (Op::Is, _) => Err(invalid("`is` takes null, true or false")),
            (Op::In, Operand::List(values)) => {
                if values.is_empty() {
                    return Err(invalid("`in` needs at least one value"));
                }
                if values.len() > self.limits.max_in_values {
                    return Err(QueryError::TooComplex(format!(
                        "`in` takes at most {} values",
                        self.limits.max_in_values
                    )));
                }
                let mut placeholders = Vec::with_capacity(values.len());
                for value in values {
                    let value = compared(column, value)?;
                    placeholders.push(self.bind(value));
                }
                Ok(format!("{name} IN ({})", placeholders.join(", ")))
            }
            (Op::In, _) => Err(invalid("`in` takes a list")),
            (Op::Like | Op::Ilike, Operand::One(value)) => {
                let value = compared(column, value)?;
                let Value::Text(pattern) = &value else {
                    return Err(invalid("a pattern must be text"));
                };
                // SQLite's matcher is one VM step per row, out of the
                // timeout's reach: its cost must be bounded by the pattern.
                if pattern.len() > MAX_PATTERN_BYTES
                    || pattern.matches('%').count() > MAX_PATTERN_WILDCARDS
                {
                    return Err(QueryError::TooComplex(format!(
                        "a pattern has at most {MAX_PATTERN_BYTES} bytes and {MAX_PATTERN_WILDCARDS} `%`"
                    )));
                }
                let pattern = self.bind(value);
                Ok(if condition.op == Op::Like {
                    format!("{name} LIKE {pattern} ESCAPE '\\'")
                } else {
                    format!("lower({name}) LIKE lower({pattern}) ESCAPE '\\'")
                })
            }
            (op, Operand::One(value)) => {
                let symbol = match op {
                    Op::Eq => "=",
                    Op::Neq => "<>",
                    Op::Gt => ">",
                    Op::Gte => ">=",
                    Op::Lt => "<",
                    Op::Lte => "<=",
                    Op::Like | Op::Ilike | Op::In | Op::Is => {
                        return Err(invalid("this comparison takes another operand"));
                    }
                };
                let value = compared(column, value)?;
                let placeholder = self.bind(value);
                Ok(format!("{name} {symbol} {placeholder}"))
            }
            (_, _) => Err(invalid("this comparison takes one value")),
        }
    }
}

/// `value` checked for comparison with `column` (null is never compared:
/// `eq null` is always unknown in SQL, so it is refused, use `is null`).
fn compared(column: &Column, value: &Value) -> Result<Value, QueryError> {
    if *value == Value::Null {
        return Err(QueryError::InvalidFilter(format!(
            "`{}`: compare with null using `is null`",
            column.name
        )));
    }
    fits(column, value)
}

/// `value` checked for storing in `column`.
fn stored(column: &Column, value: &Value) -> Result<Value, QueryError> {
    if *value == Value::Null {
        return if column.nullable {
            Ok(Value::Null)
        } else {
            Err(QueryError::InvalidValue(format!(
                "`{}` cannot be null",
                column.name
            )))
        };
    }
    fits(column, value)
}

/// `value` in the form its column stores (integers widened for real
/// columns), or why it does not fit.
fn fits(column: &Column, value: &Value) -> Result<Value, QueryError> {
    let len = match value {
        Value::Text(s) => s.len(),
        Value::Blob(b) => b.len(),
        _ => 0,
    };
    if len > MAX_VALUE_BYTES {
        return Err(QueryError::InvalidValue(format!(
            "`{}`: a value is larger than {MAX_VALUE_BYTES} bytes",
            column.name
        )));
    }
    let wrong = || {
        QueryError::InvalidValue(format!(
            "`{}` holds {} values",
            column.name,
            column.ty.name()
        ))
    };
    Ok(match (column.ty, value) {
        (ColumnType::Integer, Value::S64(n)) => Value::S64(*n),
        (ColumnType::Real, Value::S64(n)) => Value::F64(*n as f64),
        (ColumnType::Real, Value::F64(v)) if v.is_finite() => Value::F64(*v),
        (ColumnType::Boolean, Value::Bool(b)) => Value::Bool(*b),
        (ColumnType::Text, Value::Text(s)) => Value::Text(s.clone()),
        (ColumnType::Blob, Value::Blob(b)) => Value::Blob(b.clone()),
        (ColumnType::Json, Value::Text(s))
            if serde_json::from_str::<serde_json::Value>(s).is_ok() =>
        {
            Value::Text(s.clone())
        }
        (ColumnType::Uuid, Value::Text(s)) if is_uuid(s) => Value::Text(s.clone()),
        (ColumnType::Timestamp, Value::Text(s)) if is_timestamp(s) => Value::Text(s.clone()),
        _ => return Err(wrong()),
    })
}

/// The stored timestamp form: `YYYY-MM-DDTHH:MM:SS.sssZ`.
pub fn is_timestamp(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 24
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            10 => *c == b'T',
            13 | 16 => *c == b':',
            19 => *c == b'.',
            23 => *c == b'Z',
            _ => c.is_ascii_digit(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::schema::Table;
    use rusqlite::Connection;

    fn schema() -> Schema {
        let toml = r#"
            [[tables]]
            name = "todos"
            columns = [
              { name = "id", type = "integer", primary_key = true, client_read = true },
              { name = "title", type = "text", client_read = true, client_write = true },
              { name = "done", type = "boolean", default = { value = false }, client_read = true, client_write = true },
              { name = "score", type = "real", nullable = true, client_read = true },
              { name = "secret", type = "text", nullable = true, sensitive = true },
              { name = "internal", type = "text", nullable = true },
            ]
        "#;
        #[derive(serde::Deserialize)]
        struct M {
            tables: Vec<Table>,
        }
        let m: M = toml::from_str(toml).unwrap();
        Schema::new(m.tables).unwrap()
    }

    fn run(access: Access, query: &Query) -> Result<Statement, QueryError> {
        compile(&schema(), access, query, &QueryLimits::default())
    }

    fn code(access: Access, query: &Query) -> &'static str {
        run(access, query).unwrap_err().code()
    }

    fn select(columns: Option<&[&str]>, filter: Option<Filter>) -> Query {
        Query::Select {
            table: "todos".into(),
            columns: columns.map(|c| c.iter().map(|s| s.to_string()).collect()),
            filter,
            order: Vec::new(),
            limit: None,
            offset: None,
        }
    }

    fn cond(column: &str, op: Op, value: Operand) -> Filter {
        Filter::Condition(Condition {
            column: column.into(),
            op,
            value,
        })
    }

    fn text(s: &str) -> Operand {
        Operand::One(Value::Text(s.into()))
    }

    /// A database with the schema and three rows.
    fn database() -> Connection {
        let conn = Connection::open_in_memory().unwrap();
        conn.pragma_update(None, "case_sensitive_like", true)
            .unwrap();
        for statement in schema().create_statements() {
            conn.execute(&statement, []).unwrap();
        }
        let insert = Query::Insert {
            table: "todos".into(),
            columns: vec!["id".into(), "title".into(), "done".into(), "secret".into()],
            rows: vec![
                vec![
                    Value::S64(1),
                    Value::Text("Buy milk".into()),
                    Value::Bool(false),
                    Value::Text("s1".into()),
                ],
                vec![
                    Value::S64(2),
                    Value::Text("it's 100%_done".into()),
                    Value::Bool(true),
                    Value::Null,
                ],
                vec![
                    Value::S64(3),
                    Value::Text("buy bread".into()),
                    Value::Bool(false),
                    Value::Null,
                ],
            ],
            returning: None,
        };
        let statement = run(Access::Server, &insert).unwrap();
        execute(&conn, &statement);
        conn
    }

    fn to_sql(value: &Value) -> rusqlite::types::Value {
        use rusqlite::types::Value as V;
        match value {
            Value::Null => V::Null,
            Value::Bool(b) => V::Integer(i64::from(*b)),
            Value::S64(n) => V::Integer(*n),
            Value::F64(v) => V::Real(*v),
            Value::Text(s) => V::Text(s.clone()),
            Value::Blob(b) => V::Blob(b.clone()),
        }
    }

    fn execute(conn: &Connection, statement: &Statement) -> usize {
        let params: Vec<_> = statement.params.iter().map(to_sql).collect();
        conn.execute(&statement.sql, rusqlite::params_from_iter(params))
            .unwrap()
    }

    fn ids(conn: &Connection, filter: Filter) -> Vec<i64> {
        let statement = run(Access::Server, &select(Some(&["id"]), Some(filter))).unwrap();
        let params: Vec<_> = statement.params.iter().map(to_sql).collect();
        let mut stmt = conn.prepare(&statement.sql).unwrap();
        let mut ids: Vec<i64> = stmt
            .query_map(rusqlite::params_from_iter(params), |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        ids.sort_unstable();
        ids
    }

    #[test]
    fn filters_select_what_they_say() {
        let conn = database();
        assert_eq!(
            ids(&conn, cond("done", Op::Is, Operand::Is(IsValue::True))),
            [2]
        );
        assert_eq!(ids(&conn, cond("title", Op::Like, text("Buy%"))), [1]);
        assert_eq!(ids(&conn, cond("title", Op::Ilike, text("buy%"))), [1, 3]);
        // `%` and `_` in a pattern can be escaped.
        assert_eq!(
            ids(&conn, cond("title", Op::Like, text("%100\\%\\_%"))),
            [2]
        );
        assert_eq!(
            ids(
                &conn,
                cond(
                    "id",
                    Op::In,
                    Operand::List(vec![Value::S64(1), Value::S64(3)])
                )
            ),
            [1, 3]
        );
        assert_eq!(
            ids(
                &conn,
                Filter::Or(vec![
                    cond("id", Op::Gt, Operand::One(Value::S64(2))),
                    Filter::And(vec![
                        cond("done", Op::Eq, Operand::One(Value::Bool(false))),
                        cond("id", Op::Lte, Operand::One(Value::S64(1))),
                    ]),
                ])
            ),
            [1, 3]
        );
        assert_eq!(
            ids(&conn, cond("score", Op::Is, Operand::Is(IsValue::Null))),
            [1, 2, 3]
        );
        // A value that looks like SQL is only ever a value.
        for hostile in [
            "x' OR '1'='1",
            "1; DROP TABLE todos; --",
            "*/ OR 1=1 /*",
            "\" OR \"\"=\"",
        ] {
            assert!(ids(&conn, cond("title", Op::Eq, text(hostile))).is_empty());
        }
        assert_eq!(
            ids(&conn, cond("title", Op::Eq, text("it's 100%_done"))),
            [2]
        );
    }

    #[test]
    fn statements_hold_only_identifiers_keywords_and_placeholders() {
        let query = Query::Update {
            table: "todos".into(),
            set: vec![(
                "title".into(),
                Value::Text("x'); DROP TABLE todos; --".into()),
            )],
            filter: Some(cond("id", Op::Eq, Operand::One(Value::S64(7)))),
            returning: Some(vec!["id".into(), "title".into()]),
        };
        let statement = run(Access::Server, &query).unwrap();
        assert_eq!(
            statement.sql,
            r#"UPDATE "todos" SET "title" = ? WHERE "id" = ? RETURNING "id", "title""#
        );
        assert_eq!(statement.params.len(), 2);
        let statement = run(Access::Server, &select(None, None)).unwrap();
        assert_eq!(
            statement.sql,
            r#"SELECT "id", "title", "done", "score", "secret", "internal" FROM "todos" LIMIT ? OFFSET ?"#
        );
        assert_eq!(statement.params, [Value::S64(1000), Value::S64(0)]);
    }

    #[test]
    fn patterns_are_bounded() {
        let like = |pattern: String| {
            run(
                Access::Server,
                &select(None, Some(cond("title", Op::Like, text(&pattern)))),
            )
        };
        assert!(like("%".repeat(16)).is_ok());
        assert!(like("a".repeat(256)).is_ok());
        for too_much in ["%".repeat(17), "a".repeat(257)] {
            assert_eq!(like(too_much).unwrap_err().code(), "QUERY_TOO_COMPLEX");
        }
    }

    #[test]
    fn public_keys_change_rows_only_in_tables_they_may_write() {
        #[derive(serde::Deserialize)]
        struct M {
            tables: Vec<Table>,
        }
        let m: M = toml::from_str(
            r#"
            [[tables]]
            name = "products"
            columns = [
              { name = "id", type = "integer", primary_key = true, client_read = true },
              { name = "price", type = "integer", default = { value = 0 }, client_read = true },
            ]
            "#,
        )
        .unwrap();
        let products = Schema::new(m.tables).unwrap();
        let limits = QueryLimits::default();
        let by_id = Some(cond("id", Op::Eq, Operand::One(Value::S64(1))));
        let writes = [
            // Every column defaulted: nothing named, still a write.
            Query::Insert {
                table: "products".into(),
                columns: Vec::new(),
                rows: vec![Vec::new()],
                returning: None,
            },
            Query::Delete {
                table: "products".into(),
                filter: by_id.clone(),
                returning: None,
            },
        ];
        for write in &writes {
            let err = compile(&products, Access::Public, write, &limits).unwrap_err();
            assert_eq!(err.code(), "COLUMN_NOT_ALLOWED", "{write:?}");
            assert_eq!(
                err.to_string(),
                "table `products` is read-only with this key"
            );
            assert!(compile(&products, Access::Server, write, &limits).is_ok());
        }
        let read = Query::Select {
            table: "products".into(),
            columns: None,
            filter: by_id,
            order: Vec::new(),
            limit: None,
            offset: None,
        };
        assert!(compile(&products, Access::Public, &read, &limits).is_ok());
    }

    #[test]
    fn public_keys_see_only_client_columns_in_every_clause() {
        let public = |q: &Query| run(Access::Public, q);
        // `*` expands to readable columns only.
        let all = public(&select(Some(&["*"]), None)).unwrap();
        assert_eq!(all.columns, ["id", "title", "done", "score"]);
        // Sensitive: as if it did not exist, everywhere.
        let probes = [
            select(Some(&["secret"]), None),
            select(None, Some(cond("secret", Op::Eq, text("s1")))),
            select(
                None,
                Some(cond("secret", Op::Is, Operand::Is(IsValue::Null))),
            ),
            Query::Select {
                table: "todos".into(),
                columns: None,
                filter: None,
                order: vec![Order {
                    column: "secret".into(),
                    descending: false,
                }],
                limit: None,
                offset: None,
            },
            Query::Delete {
                table: "todos".into(),
                filter: Some(cond("id", Op::Eq, Operand::One(Value::S64(1)))),
                returning: Some(vec!["secret".into()]),
            },
            Query::Insert {
                table: "todos".into(),
                columns: vec!["secret".into()],
                rows: vec![vec![Value::Text("x".into())]],
                returning: None,
            },
        ];
        for probe in &probes {
            assert_eq!(
                public(probe).unwrap_err().code(),
                "COLUMN_NOT_FOUND",
                "{probe:?}"
            );
        }
        // Not sensitive, but not the client's: refused by name.
        assert_eq!(
            code(Access::Public, &select(Some(&["internal"]), None)),
            "COLUMN_NOT_ALLOWED"
        );
        assert_eq!(
            code(
                Access::Public,
                &select(None, Some(cond("internal", Op::Eq, text("x"))))
            ),
            "COLUMN_NOT_ALLOWED"
        );
        let write_id = Query::Update {
            table: "todos".into(),
            set: vec![("id".into(), Value::S64(9))],
            filter: Some(cond("id", Op::Eq, Operand::One(Value::S64(1)))),
            returning: None,
        };
        assert_eq!(code(Access::Public, &write_id), "COLUMN_NOT_ALLOWED");
        assert!(run(Access::Server, &write_id).is_ok());
        assert!(run(Access::Server, &select(Some(&["secret"]), None)).is_ok());
    }

    #[test]
    fn every_rule_has_its_code() {
        let server = Access::Server;
        let mut unknown_table = select(None, None);
        if let Query::Select { table, .. } = &mut unknown_table {
            *table = "sqlite_master".into();
        }
        assert_eq!(code(server, &unknown_table), "TABLE_NOT_FOUND");
        for name in [
            "TODOS",
            "Todos",
            "todos ",
            "\"todos\"",
            "other_project.todos",
            "main.todos",
        ] {
            let q = Query::Delete {
                table: name.into(),
                filter: None,
                returning: None,
            };
            assert_eq!(code(server, &q), "TABLE_NOT_FOUND", "{name}");
        }
        for name in [
            "ID",
            "rowid",
            "\"id\"",
            "id; --",
            "1",
            "title || 'x'",
            "(select 1)",
        ] {
            assert_eq!(
                code(server, &select(Some(&[name]), None)),
                "COLUMN_NOT_FOUND",
                "{name}"
            );
            let ordered = Query::Select {
                table: "todos".into(),
                columns: None,
                filter: None,
                order: vec![Order {
                    column: name.into(),
                    descending: true,
                }],
                limit: None,
                offset: None,
            };
            assert_eq!(code(server, &ordered), "COLUMN_NOT_FOUND", "{name}");
        }
        let filterless = [
            Query::Update {
                table: "todos".into(),
                set: vec![("title".into(), Value::Text("x".into()))],
                filter: None,
                returning: None,
            },
            Query::Delete {
                table: "todos".into(),
                filter: None,
                returning: None,
            },
        ];
        for q in &filterless {
            assert_eq!(code(server, q), "FILTERLESS_MUTATION");
        }
        let invalid_values = [
            ("id", Value::Text("1".into())),
            ("done", Value::S64(1)),
            ("title", Value::Null),
            ("score", Value::F64(f64::NAN)),
            ("title", Value::Blob(vec![1])),
        ];
        for (column, value) in invalid_values {
            let q = Query::Insert {
                table: "todos".into(),
                columns: vec![column.into()],
                rows: vec![vec![value.clone()]],
                returning: None,
            };
            assert_eq!(code(server, &q), "INVALID_VALUE", "{column} = {value:?}");
        }
        let invalid_filters = [
            cond("title", Op::Eq, Operand::One(Value::Null)),
            cond("title", Op::Is, Operand::Is(IsValue::True)),
            cond("title", Op::Is, text("x")),
            cond("title", Op::In, text("x")),
            cond("id", Op::In, Operand::List(Vec::new())),
            cond("id", Op::Like, Operand::One(Value::S64(1))),
            cond("id", Op::Eq, Operand::List(vec![Value::S64(1)])),
            Filter::And(Vec::new()),
        ];
        for filter in invalid_filters {
            let q = select(None, Some(filter.clone()));
            let got = run(server, &q).unwrap_err().code();
            assert!(
                matches!(got, "INVALID_FILTER" | "INVALID_VALUE"),
                "{filter:?}: {got}"
            );
        }
    }

    #[test]
    fn sizes_are_capped() {
        let server = Access::Server;
        let page = |limit: u32, offset: u32| Query::Select {
            table: "todos".into(),
            columns: None,
            filter: None,
            order: Vec::new(),
            limit: Some(limit),
            offset: Some(offset),
        };
        assert!(run(server, &page(1000, 100_000)).is_ok());
        assert_eq!(code(server, &page(1001, 0)), "QUERY_TOO_COMPLEX");
        assert_eq!(code(server, &page(u32::MAX, 0)), "QUERY_TOO_COMPLEX");
        assert_eq!(code(server, &page(10, u32::MAX)), "QUERY_TOO_COMPLEX");
        let many = Operand::List((0..101).map(Value::S64).collect());
        assert_eq!(
            code(server, &select(None, Some(cond("id", Op::In, many)))),
            "QUERY_TOO_COMPLEX"
        );
        let mut deep = cond("id", Op::Eq, Operand::One(Value::S64(1)));
        for _ in 0..9 {
            deep = Filter::And(vec![deep]);
        }
        assert_eq!(code(server, &select(None, Some(deep))), "QUERY_TOO_COMPLEX");
        let wide = Filter::Or(
            (0..64)
                .map(|i| cond("id", Op::Eq, Operand::One(Value::S64(i))))
                .collect(),
        );
        assert_eq!(code(server, &select(None, Some(wide))), "QUERY_TOO_COMPLEX");

        // Values: at most MAX_VALUE_BYTES, compared or stored, on every
        // backend.
        let title = |len: usize| cond("title", Op::Eq, text(&"t".repeat(len)));
        assert!(run(server, &select(None, Some(title(MAX_VALUE_BYTES)))).is_ok());
        assert_eq!(
            code(server, &select(None, Some(title(MAX_VALUE_BYTES + 1)))),
            "INVALID_VALUE"
        );
    }

    #[test]
    fn timestamps_have_one_form() {
        assert!(is_timestamp("2026-11-22T06:30:00.000Z"));
        for bad in [
            "2026-11-22T06:30:00Z",
            "2026-11-22 06:30:00.000Z",
            "2026-11-22T06:30:00.000+00:00",
            "",
        ] {
            assert!(!is_timestamp(bad), "{bad}");
        }
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// Names a query may use: the declared ones, and hostile ones.
        fn name() -> impl Strategy<Value = String> {
            prop_oneof![
                // `id` most: with mostly-integer values, most of its
                // conditions and assignments are valid.
                12 => Just("id".to_string()),
                6 => prop::sample::select(vec!["title", "done", "score", "secret", "internal"])
                    .prop_map(String::from),
                1 => prop::sample::select(vec![
                    "TODOS", "Id", "sqlite_master", "rowid", "\"id\"", "id; --", "x' OR 1=1", "*",
                ])
                .prop_map(String::from),
                1 => any::<String>(),
            ]
        }

        /// Mostly the declared table, so that most queries get far enough
        /// to produce SQL.
        fn table() -> impl Strategy<Value = String> {
            prop_oneof![9 => Just("todos".to_string()), 1 => name()]
        }

        fn value() -> impl Strategy<Value = Value> {
            prop_oneof![
                1 => Just(Value::Null),
                1 => any::<bool>().prop_map(Value::Bool),
                6 => any::<i64>().prop_map(Value::S64),
                1 => any::<f64>().prop_map(Value::F64),
                2 => any::<String>().prop_map(Value::Text),
                1 => prop::collection::vec(any::<u8>(), 0..8).prop_map(Value::Blob),
            ]
        }

        fn op() -> impl Strategy<Value = Op> {
            prop::sample::select(vec![
                Op::Eq,
                Op::Neq,
                Op::Gt,
                Op::Gte,
                Op::Lt,
                Op::Lte,
                Op::Like,
                Op::Ilike,
                Op::In,
                Op::Is,
            ])
        }

        fn operand() -> impl Strategy<Value = Operand> {
            prop_oneof![
                6 => value().prop_map(Operand::One),
                2 => prop::collection::vec(value(), 0..4).prop_map(Operand::List),
                1 => prop::sample::select(vec![IsValue::Null, IsValue::True, IsValue::False]).prop_map(Operand::Is),
            ]
        }

        fn filter() -> impl Strategy<Value = Filter> {
            let leaf = (name(), op(), operand())
                .prop_map(|(column, op, value)| Filter::Condition(Condition { column, op, value }));
            leaf.prop_recursive(4, 16, 4, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..4).prop_map(Filter::And),
                    prop::collection::vec(inner, 0..4).prop_map(Filter::Or),
                ]
            })
        }

        fn names() -> impl Strategy<Value = Option<Vec<String>>> {
            prop::option::of(prop::collection::vec(name(), 0..4))
        }

        fn query() -> impl Strategy<Value = Query> {
            prop_oneof![
                (
                    table(),
                    names(),
                    prop::option::of(filter()),
                    prop::collection::vec((name(), any::<bool>()), 0..3),
                    prop::option::of(any::<u32>()),
                    prop::option::of(any::<u32>())
                )
                    .prop_map(|(table, columns, filter, order, limit, offset)| {
                        Query::Select {
                            table,
                            columns,
                            filter,
                            order: order
                                .into_iter()
                                .map(|(column, descending)| Order { column, descending })
                                .collect(),
                            limit,
                            offset,
                        }
                    }),
                (
                    table(),
                    prop::collection::vec(name(), 0..3),
                    prop::collection::vec(prop::collection::vec(value(), 0..3), 0..3),
                    names()
                )
                    .prop_map(|(table, columns, rows, returning)| Query::Insert {
                        table,
                        columns,
                        rows,
                        returning
                    }),
                (
                    table(),
                    prop::collection::vec((name(), value()), 0..3),
                    prop::option::of(filter()),
                    names()
                )
                    .prop_map(|(table, set, filter, returning)| Query::Update {
                        table,
                        set,
                        filter,
                        returning
                    }),
                (table(), prop::option::of(filter()), names()).prop_map(
                    |(table, filter, returning)| Query::Delete {
                        table,
                        filter,
                        returning
                    }
                ),
            ]
        }

        /// Checks one accepted statement: only quoted names `access` may
        /// use, fixed keywords, punctuation, and one placeholder per bound
        /// value — never a value, never a name the schema does not declare.
        fn check(statement: &Statement, access: Access) {
            let table = schema().table("todos").unwrap().clone();
            let visible: Vec<String> = std::iter::once("todos".to_string())
                .chain(
                    table
                        .columns
                        .iter()
                        .filter(|c| access == Access::Server || c.client_read)
                        .map(|c| c.name.clone()),
                )
                .collect();
            let mut rest = String::new();
            let mut chars = statement.sql.chars();
            while let Some(c) = chars.next() {
                if c == '"' {
                    let ident: String = chars.by_ref().take_while(|c| *c != '"').collect();
                    assert!(visible.contains(&ident), "{ident:?} in {}", statement.sql);
                    rest.push(' ');
                } else {
                    rest.push(c);
                }
            }
            // The only literals the generator writes.
            let rest = rest.replace("'\\'", " ");
            assert_eq!(
                rest.matches('?').count(),
                statement.params.len(),
                "{}",
                statement.sql
            );
            for token in rest.split(|c: char| c.is_whitespace() || "(),=<>?".contains(c)) {
                assert!(
                    token.is_empty() || SQL_KEYWORDS.contains(&token),
                    "{token:?} in {}",
                    statement.sql
                );
            }
        }

        /// The PostgreSQL statement is the SQLite one with the table
        /// qualified by the project's schema and numbered placeholders.
        fn same_in_postgres(sqlite: &Statement, schema: &Schema, access: Access, query: &Query) {
            let dialect = Dialect::Postgres { schema: "p_x" };
            let postgres = compile_for(dialect, schema, access, query, &QueryLimits::default())
                .expect("accepted in one dialect, accepted in the other");
            let mut expected = String::new();
            let mut n = 0;
            for c in sqlite.sql.replace("\"todos\"", "\"p_x\".\"todos\"").chars() {
                if c == '?' {
                    n += 1;
                    expected.push_str(&format!("${n}"));
                } else {
                    expected.push(c);
                }
            }
            assert_eq!(postgres.sql, expected);
            assert_eq!(postgres.params, sqlite.params);
            assert_eq!(postgres.columns, sqlite.columns);
        }

        /// Whatever is asked, accepted queries hold no value and no name the
        /// caller may not use; and enough of the arbitrary queries are
        /// accepted, of every kind, for that to mean something.
        #[test]
        fn generated_sql_holds_no_value_and_no_undeclared_name() {
            use proptest::strategy::ValueTree;
            use proptest::test_runner::TestRunner;
            let schema = schema();
            let strategy = (query(), any::<bool>());
            let mut runner = TestRunner::deterministic();
            let mut accepted = std::collections::HashMap::<&str, usize>::new();
            const CASES: usize = 30_000;
            for _ in 0..CASES {
                let (query, public) = strategy.new_tree(&mut runner).unwrap().current();
                let access = if public {
                    Access::Public
                } else {
                    Access::Server
                };
                if let Ok(statement) = compile(&schema, access, &query, &QueryLimits::default()) {
                    check(&statement, access);
                    same_in_postgres(&statement, &schema, access, &query);
                    let kind = statement.sql.split(' ').next().unwrap_or("");
                    *accepted
                        .entry(match kind {
                            "SELECT" => "select",
                            "INSERT" => "insert",
                            "UPDATE" => "update",
                            _ => "delete",
                        })
                        .or_default() += 1;
                }
            }
            let total: usize = accepted.values().sum();
            assert!(total >= CASES / 100, "only {total} of {CASES} accepted");
            for kind in ["select", "insert", "update", "delete"] {
                assert!(
                    accepted.get(kind).copied().unwrap_or(0) > 0,
                    "no {kind} accepted: {accepted:?}"
                );
            }
        }
    }
}
