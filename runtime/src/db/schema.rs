//! A project's declared tables (`[[tables]]` in `switchyard.toml`) and the
//! DDL that creates them.
//!
//! The declaration is the allowlist every query is checked against, so it is
//! strict: identifiers are lowercase ASCII (SQLite compares identifiers
//! case-insensitively; one spelling per name leaves no variant to probe
//! with), types come from a fixed list, defaults from a safe set, and the
//! DDL is generated here, with every identifier quoted, never taken from the
//! tenant as SQL.
//!
//! ```toml
//! [[tables]]
//! name = "todos"
//! columns = [
//!   { name = "id", type = "uuid", primary_key = true, default = "random_uuid", client_read = true },
//!   { name = "title", type = "text", client_read = true, client_write = true },
//!   { name = "done", type = "boolean", default = { value = false }, client_read = true, client_write = true },
//!   { name = "owner_email", type = "text", nullable = true, sensitive = true },
//!   { name = "created_at", type = "timestamp", default = "now", client_read = true },
//! ]
//! indexes = [{ columns = ["done", "created_at"] }]
//! ```

use serde::{Deserialize, Serialize};
use std::collections::HashSet;

/// Most tables a project may declare.
pub const MAX_TABLES: usize = 64;
/// Most columns in one table.
pub const MAX_COLUMNS: usize = 64;
/// Most indexes on one table.
pub const MAX_INDEXES: usize = 16;
/// Longest table or column name.
pub const MAX_IDENT_LEN: usize = 63;
/// Longest text default, in bytes.
pub const MAX_TEXT_DEFAULT_BYTES: usize = 1024;

/// Why a declaration was refused; the message names the table and column.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SchemaError(String);

impl SchemaError {
    pub(crate) fn new(message: String) -> Self {
        SchemaError(message)
    }

    /// The stable code.
    pub fn code(&self) -> &'static str {
        "INVALID_SCHEMA"
    }
}

/// A validated set of tables. Only [`Schema::new`] makes one.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Schema {
    tables: Vec<Table>,
}

/// One declared table, as written in the manifest.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Table {
    /// Its name: `[a-z][a-z0-9_]*`, at most 63 characters.
    pub name: String,
    /// Its columns, in order.
    pub columns: Vec<Column>,
    /// Secondary indexes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub indexes: Vec<Index>,
}

/// One declared column.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Column {
    /// Its name, as for tables.
    pub name: String,
    /// Its type.
    #[serde(rename = "type")]
    pub ty: ColumnType,
    /// Whether it may hold null. Default false.
    #[serde(default)]
    pub nullable: bool,
    /// The value an insert that omits it gets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<ColumnDefault>,
    /// Part of the primary key (several columns make a composite key).
    #[serde(default)]
    pub primary_key: bool,
    /// No two rows may share a value.
    #[serde(default)]
    pub unique: bool,
    /// Never shown to browser clients, whatever their key.
    #[serde(default)]
    pub sensitive: bool,
    /// Browser clients with a public key may read (and filter and sort on)
    /// it.
    #[serde(default)]
    pub client_read: bool,
    /// Browser clients with a public key may write it.
    #[serde(default)]
    pub client_write: bool,
}

/// The column types a table may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ColumnType {
    /// A 64-bit signed integer.
    Integer,
    /// A 64-bit float.
    Real,
    /// UTF-8 text.
    Text,
    /// True or false (stored as 1 or 0).
    Boolean,
    /// Bytes.
    Blob,
    /// An instant, as RFC 3339 text in UTC with milliseconds
    /// (`2026-11-22T06:30:00.000Z`), so text order is time order.
    Timestamp,
    /// A JSON document (checked on write).
    Json,
    /// A UUID in its 36-character text form.
    Uuid,
}

/// A column's default: a keyword, or `{ value = <literal> }`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ColumnDefault {
    /// `"null"`, `"now"` or `"random_uuid"`.
    Keyword(DefaultKeyword),
    /// A literal of the column's type.
    Value {
        /// The literal.
        value: Literal,
    },
}

/// The computed defaults.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DefaultKeyword {
    /// Null (nullable columns only).
    Null,
    /// The current time (timestamp columns only).
    Now,
    /// A random version-4 UUID (uuid columns only).
    RandomUuid,
}

/// A literal default.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Literal {
    /// For boolean columns.
    Bool(bool),
    /// For integer (and real) columns.
    Integer(i64),
    /// For real columns.
    Real(f64),
    /// For text, json and uuid columns.
    Text(String),
}

/// A secondary index.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Index {
    /// The indexed columns, in order.
    pub columns: Vec<String>,
    /// Whether the combination must be unique.
    #[serde(default)]
    pub unique: bool,
}

fn refuse<T>(message: String) -> Result<T, SchemaError> {
    Err(SchemaError(message))
}

/// Checks a table or column name: `[a-z][a-z0-9_]*`, at most 63
/// characters, not SQLite's reserved `sqlite_` prefix.
pub fn check_identifier(kind: &str, name: &str) -> Result<(), SchemaError> {
    let shown: String = name
        .chars()
        .take(MAX_IDENT_LEN + 1)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    let mut chars = name.chars();
    let well_formed = matches!(chars.next(), Some('a'..='z'))
        && chars.all(|c| matches!(c, 'a'..='z' | '0'..='9' | '_'));
    if !well_formed || name.len() > MAX_IDENT_LEN {
        return refuse(format!(
            "{kind} name `{shown}` must be lowercase letters, digits and `_`, starting with a letter, at most {MAX_IDENT_LEN} characters"
        ));
    }
    if name.starts_with("sqlite_") {
        return refuse(format!(
            "{kind} name `{shown}` uses SQLite's reserved prefix"
        ));
    }
    Ok(())
}

impl Schema {
    /// Validates `tables` as a project's schema.
    pub fn new(tables: Vec<Table>) -> Result<Schema, SchemaError> {
        if tables.len() > MAX_TABLES {
            return refuse(format!("at most {MAX_TABLES} tables"));
        }
        let mut names = HashSet::new();
        for table in &tables {
            table.validate()?;
            if !names.insert(table.name.as_str()) {
                return refuse(format!("table `{}` is declared twice", table.name));
            }
        }
        Ok(Schema { tables })
    }

    /// The tables, in declaration order.
    pub fn tables(&self) -> &[Table] {
        &self.tables
    }

    /// The table called `name`, if declared (names match exactly).
    pub fn table(&self, name: &str) -> Option<&Table> {
        self.tables.iter().find(|t| t.name == name)
    }

    /// The statements that create every table and index from nothing.
    pub fn create_statements(&self) -> Vec<String> {
        self.tables
            .iter()
            .flat_map(|table| {
                std::iter::once(table.create_sql())
                    .chain(table.indexes.iter().map(|index| table.index_sql(index)))
            })
            .collect()
    }
}

impl Table {
    /// The column called `name`, if declared.
    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }

    fn validate(&self) -> Result<(), SchemaError> {
        check_identifier("table", &self.name)?;
        let table = &self.name;
        if self.columns.is_empty() || self.columns.len() > MAX_COLUMNS {
            return refuse(format!(
                "table `{table}` must have between 1 and {MAX_COLUMNS} columns"
            ));
        }
        let mut names = HashSet::new();
        for column in &self.columns {
            column.validate(table)?;
            if !names.insert(column.name.as_str()) {
                return refuse(format!(
                    "table `{table}`: column `{}` is declared twice",
                    column.name
                ));
            }
        }
        if self.indexes.len() > MAX_INDEXES {
            return refuse(format!("table `{table}`: at most {MAX_INDEXES} indexes"));
        }
        let mut seen = HashSet::new();
        for index in &self.indexes {
            if index.columns.is_empty() || index.columns.len() > MAX_COLUMNS {
                return refuse(format!(
                    "table `{table}`: an index needs between 1 and {MAX_COLUMNS} columns"
                ));
            }
            let mut in_index = HashSet::new();
            for name in &index.columns {
                if self.column(name).is_none() {
                    return refuse(format!(
                        "table `{table}`: index column `{name}` is not declared"
                    ));
                }
                if !in_index.insert(name.as_str()) {
                    return refuse(format!("table `{table}`: index lists `{name}` twice"));
                }
            }
            if !seen.insert(&index.columns) {
                return refuse(format!(
                    "table `{table}`: two indexes on ({})",
                    index.columns.join(", ")
                ));
            }
        }
        Ok(())
    }

    /// `CREATE TABLE` for this table: a STRICT table (SQLite enforces the
    /// storage types) with checks for the types SQLite lacks.
    pub fn create_sql(&self) -> String {
        let mut parts: Vec<String> = self.columns.iter().map(Column::definition_sql).collect();
        let key: Vec<String> = self
            .columns
            .iter()
            .filter(|c| c.primary_key)
            .map(|c| quote(&c.name))
            .collect();
        if !key.is_empty() {
            parts.push(format!("PRIMARY KEY ({})", key.join(", ")));
        }
        format!(
            "CREATE TABLE {} ({}) STRICT",
            quote(&self.name),
            parts.join(", ")
        )
    }

    /// `CREATE INDEX` for `index`, named by [`Table::index_name`].
    pub fn index_sql(&self, index: &Index) -> String {
        let columns: Vec<String> = index.columns.iter().map(|c| quote(c)).collect();
        format!(
            "CREATE {}INDEX {} ON {} ({})",
            if index.unique { "UNIQUE " } else { "" },
            quote(&self.index_name(index)),
            quote(&self.name),
            columns.join(", ")
        )
    }

    /// The name of `index` on this table: `ix:<table>:<col>,<col>`, plus
    /// `:u` if unique. Index names share one namespace per database; the
    /// separators cannot occur in identifiers, so no two declared indexes
    /// (nor a table) can ever get the same name.
    pub fn index_name(&self, index: &Index) -> String {
        format!(
            "ix:{}:{}{}",
            self.name,
            index.columns.join(","),
            if index.unique { ":u" } else { "" }
        )
    }
}

impl Column {
    fn validate(&self, table: &str) -> Result<(), SchemaError> {
        check_identifier("column", &self.name)?;
        let at = format!("table `{table}`, column `{}`", self.name);
        if self.sensitive && (self.client_read || self.client_write) {
            return refuse(format!(
                "{at}: a sensitive column cannot be client_read or client_write"
            ));
        }
        if self.primary_key && self.nullable {
            return refuse(format!("{at}: a primary key column cannot be nullable"));
        }
        let Some(default) = &self.default else {
            return Ok(());
        };
        let fits = match (default, self.ty) {
            (ColumnDefault::Keyword(DefaultKeyword::Null), _) => self.nullable,
            (ColumnDefault::Keyword(DefaultKeyword::Now), ty) => ty == ColumnType::Timestamp,
            (ColumnDefault::Keyword(DefaultKeyword::RandomUuid), ty) => ty == ColumnType::Uuid,
            (ColumnDefault::Value { value }, ty) => literal_fits(value, ty),
        };
        if !fits {
            return refuse(format!(
                "{at}: the default does not fit the column ({}{})",
                self.ty.name(),
                if self.nullable {
                    ", nullable"
                } else {
                    ", not null"
                },
            ));
        }
        Ok(())
    }

    /// The column's definition for `ALTER TABLE … ADD COLUMN`, or why it
    /// cannot be added to a table that may already hold rows. SQLite adds a
    /// column without rewriting the table, so it must not be a key, must
    /// not be `unique`, and its default must be a constant (not `now` or
    /// `random_uuid`); a `not null` column needs a literal default.
    pub fn added_definition_sql(&self, table: &str) -> Result<String, SchemaError> {
        let at = format!("table `{table}`, new column `{}`", self.name);
        if self.primary_key || self.unique {
            return refuse(format!(
                "{at}: a column added to an existing table cannot be primary_key or unique; add a unique index instead"
            ));
        }
        match &self.default {
            Some(ColumnDefault::Keyword(DefaultKeyword::Now | DefaultKeyword::RandomUuid)) => {
                return refuse(format!(
                    "{at}: a column added to an existing table cannot default to `now` or `random_uuid`; make it nullable or give it a literal default"
                ));
            }
            Some(ColumnDefault::Value { .. }) => {}
            None | Some(ColumnDefault::Keyword(DefaultKeyword::Null)) if !self.nullable => {
                return refuse(format!(
                    "{at}: a not-null column added to an existing table needs a literal default for the rows it already has"
                ));
            }
            None | Some(ColumnDefault::Keyword(DefaultKeyword::Null)) => {}
        }
        Ok(self.definition(false))
    }

    fn definition_sql(&self) -> String {
        self.definition(true)
    }

    /// The column definition; `ADD COLUMN` refuses a parenthesised default
    /// (`expression_default` false), `CREATE TABLE` needs it for the
    /// computed ones.
    fn definition(&self, expression_default: bool) -> String {
        let name = quote(&self.name);
        let mut sql = format!("{name} {}", self.ty.storage());
        if !self.nullable {
            sql.push_str(" NOT NULL");
        }
        if self.unique {
            sql.push_str(" UNIQUE");
        }
        if let Some(default) = &self.default {
            if expression_default {
                sql.push_str(&format!(" DEFAULT ({})", default_sql(default)));
            } else {
                sql.push_str(&format!(" DEFAULT {}", default_sql(default)));
            }
        }
        if let Some(check) = self.ty.check(&name) {
            sql.push_str(&format!(" CHECK ({check})"));
        }
        sql
    }
}

impl ColumnType {
    /// The name used in manifests.
    pub fn name(self) -> &'static str {
        match self {
            ColumnType::Integer => "integer",
            ColumnType::Real => "real",
            ColumnType::Text => "text",
            ColumnType::Boolean => "boolean",
            ColumnType::Blob => "blob",
            ColumnType::Timestamp => "timestamp",
            ColumnType::Json => "json",
            ColumnType::Uuid => "uuid",
        }
    }

    /// The STRICT storage type.
    fn storage(self) -> &'static str {
        match self {
            ColumnType::Integer | ColumnType::Boolean => "INTEGER",
            ColumnType::Real => "REAL",
            ColumnType::Text | ColumnType::Timestamp | ColumnType::Json | ColumnType::Uuid => {
                "TEXT"
            }
            ColumnType::Blob => "BLOB",
        }
    }

    /// What the storage type alone does not enforce, over the quoted column.
    fn check(self, column: &str) -> Option<String> {
        match self {
            ColumnType::Boolean => Some(format!("{column} IN (0, 1)")),
            ColumnType::Json => Some(format!("json_valid({column})")),
            ColumnType::Uuid => Some(format!(
                "length({column}) = 36 AND {column} GLOB '{hex8}-{hex4}-{hex4}-{hex4}-{hex4}{hex8}'",
                hex8 = "[0-9a-f]".repeat(8),
                hex4 = "[0-9a-f]".repeat(4),
            )),
            ColumnType::Integer | ColumnType::Real | ColumnType::Text | ColumnType::Blob => None,
            ColumnType::Timestamp => None,
        }
    }
}

fn literal_fits(value: &Literal, ty: ColumnType) -> bool {
    match (value, ty) {
        (Literal::Bool(_), ColumnType::Boolean) => true,
        (Literal::Integer(_), ColumnType::Integer | ColumnType::Real) => true,
        (Literal::Real(v), ColumnType::Real) => v.is_finite(),
        (Literal::Text(s), ColumnType::Text) => text_default_ok(s),
        (Literal::Text(s), ColumnType::Json) => {
            text_default_ok(s) && serde_json::from_str::<serde_json::Value>(s).is_ok()
        }
        (Literal::Text(s), ColumnType::Uuid) => is_uuid(s),
        _ => false,
    }
}

fn text_default_ok(s: &str) -> bool {
    s.len() <= MAX_TEXT_DEFAULT_BYTES && !s.contains('\0')
}

/// The lowercase 8-4-4-4-12 hex form.
pub fn is_uuid(s: &str) -> bool {
    s.len() == 36
        && s.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => matches!(c, '0'..='9' | 'a'..='f'),
        })
}

/// A default as a SQL expression. Literals are rendered by us from typed
/// values (DDL cannot bind parameters): numbers by Rust, text as a
/// single-quoted string with quotes doubled.
fn default_sql(default: &ColumnDefault) -> String {
    match default {
        ColumnDefault::Keyword(DefaultKeyword::Null) => "NULL".into(),
        ColumnDefault::Keyword(DefaultKeyword::Now) => {
            "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')".into()
        }
        ColumnDefault::Keyword(DefaultKeyword::RandomUuid) => concat!(
            "lower(hex(randomblob(4))) || '-' || lower(hex(randomblob(2))) || '-4' || ",
            "substr(lower(hex(randomblob(2))), 2) || '-' || ",
            "substr('89ab', 1 + (abs(random()) % 4), 1) || substr(lower(hex(randomblob(2))), 2) || ",
            "'-' || lower(hex(randomblob(6)))"
        )
        .into(),
        ColumnDefault::Value { value } => match value {
            Literal::Bool(b) => u8::from(*b).to_string(),
            Literal::Integer(n) => n.to_string(),
            Literal::Real(v) => format!("{v:?}"),
            Literal::Text(s) => format!("'{}'", s.replace('\'', "''")),
        },
    }
}

/// A quoted identifier. Identifiers are validated first, so this is belt
/// and braces: it stays correct for any input.
pub fn quote(identifier: &str) -> String {
    format!("\"{}\"", identifier.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::Connection;

    fn parse(toml: &str) -> Result<Schema, SchemaError> {
        #[derive(Deserialize)]
        struct Manifest {
            tables: Vec<Table>,
        }
        let manifest: Manifest = toml::from_str(toml).map_err(|e| SchemaError(e.to_string()))?;
        Schema::new(manifest.tables)
    }

    const TODOS: &str = r#"
        [[tables]]
        name = "todos"
        columns = [
          { name = "id", type = "uuid", primary_key = true, default = "random_uuid", client_read = true },
          { name = "title", type = "text", client_read = true, client_write = true },
          { name = "done", type = "boolean", default = { value = false }, client_read = true },
          { name = "rank", type = "real", default = { value = 1 } },
          { name = "meta", type = "json", default = { value = '{"a": [1]}' } },
          { name = "note", type = "text", default = { value = "it's" } },
          { name = "owner_email", type = "text", nullable = true, sensitive = true },
          { name = "avatar", type = "blob", nullable = true, default = "null" },
          { name = "created_at", type = "timestamp", default = "now" },
        ]
        indexes = [{ columns = ["done", "created_at"] }, { columns = ["title"], unique = true }]
    "#;

    fn created(schema: &Schema) -> Connection {
        let conn = Connection::open_in_memory().unwrap();
        for statement in schema.create_statements() {
            conn.execute(&statement, []).unwrap();
        }
        conn
    }

    #[test]
    fn a_declared_schema_creates_working_strict_tables() {
        let schema = parse(TODOS).unwrap();
        let conn = created(&schema);
        conn.execute("INSERT INTO todos (title) VALUES ('a')", [])
            .unwrap();
        let (id, done, rank, meta, note, created): (String, i64, f64, String, String, String) =
            conn.query_row(
                "SELECT id, done, rank, meta, note, created_at FROM todos",
                [],
                |r| {
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                    ))
                },
            )
            .unwrap();
        assert!(is_uuid(&id) && id.as_bytes()[14] == b'4', "{id}");
        assert!(
            matches!(id.as_bytes()[19], b'8' | b'9' | b'a' | b'b'),
            "{id}"
        );
        assert_eq!((done, rank, note.as_str()), (0, 1.0, "it's"));
        assert_eq!(meta, r#"{"a": [1]}"#);
        assert_eq!(created.len(), 24, "{created}");
        assert!(created.ends_with('Z'));

        // The types hold: STRICT storage, plus the checks SQLite lacks.
        for bad in [
            "INSERT INTO todos (title, done) VALUES ('b', 2)",
            "INSERT INTO todos (title, meta) VALUES ('c', 'not json')",
            "INSERT INTO todos (title, id) VALUES ('d', 'not-a-uuid')",
            "INSERT INTO todos (title, rank) VALUES ('e', 'high')",
            "INSERT INTO todos (title) VALUES (NULL)",
            "INSERT INTO todos (title) VALUES ('a')",
        ] {
            assert!(conn.execute(bad, []).is_err(), "{bad}");
        }
    }

    #[test]
    fn identifiers_are_one_lowercase_spelling() {
        for good in ["t", "todos", "a_1", &"x".repeat(63)] {
            assert!(check_identifier("table", good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "Todos",
            "TODOS",
            "1st",
            "_t",
            "t-1",
            "t 1",
            "t\"x",
            "t'x",
            "t;drop",
            "tódos",
            "t\u{0}",
            "sqlite_master",
            "sqlite_sequence",
            &"x".repeat(64),
        ] {
            let err = check_identifier("table", bad).unwrap_err();
            assert_eq!(err.code(), "INVALID_SCHEMA");
            assert!(!err.to_string().contains('\0'));
        }
    }

    #[test]
    fn declarations_are_refused_with_a_reason() {
        let table = |columns: &str, extra: &str| {
            parse(&format!(
                "[[tables]]\nname = \"t\"\ncolumns = [{columns}]\n{extra}"
            ))
        };
        let refused = [
            table("", ""),
            table(
                r#"{ name = "a", type = "text" }, { name = "a", type = "text" }"#,
                "",
            ),
            table(r#"{ name = "a", type = "varchar" }"#, ""),
            table(
                r#"{ name = "a", type = "text", sensitive = true, client_read = true }"#,
                "",
            ),
            table(
                r#"{ name = "a", type = "text", primary_key = true, nullable = true }"#,
                "",
            ),
            table(r#"{ name = "a", type = "text", default = "null" }"#, ""),
            table(r#"{ name = "a", type = "text", default = "now" }"#, ""),
            table(
                r#"{ name = "a", type = "integer", default = "random_uuid" }"#,
                "",
            ),
            table(
                r#"{ name = "a", type = "integer", default = { value = "1; DROP TABLE t" } }"#,
                "",
            ),
            table(
                r#"{ name = "a", type = "boolean", default = { value = 1 } }"#,
                "",
            ),
            table(
                r#"{ name = "a", type = "json", default = { value = "{" } }"#,
                "",
            ),
            table(
                r#"{ name = "a", type = "uuid", default = { value = "x" } }"#,
                "",
            ),
            table(
                r#"{ name = "a", type = "real", default = { value = nan } }"#,
                "",
            ),
            table(r#"{ name = "a", type = "text", default = "sql('x')" }"#, ""),
            table(r#"{ name = "a", type = "text", check = "1" }"#, ""),
            table(
                r#"{ name = "a", type = "text" }"#,
                r#"indexes = [{ columns = ["b"] }]"#,
            ),
            table(
                r#"{ name = "a", type = "text" }"#,
                r#"indexes = [{ columns = [] }]"#,
            ),
            table(
                r#"{ name = "a", type = "text" }"#,
                r#"indexes = [{ columns = ["a", "a"] }]"#,
            ),
            table(
                r#"{ name = "a", type = "text" }"#,
                r#"indexes = [{ columns = ["a"] }, { columns = ["a"], unique = true }]"#,
            ),
            parse(
                "[[tables]]\nname = \"t\"\ncolumns = [{ name = \"a\", type = \"text\" }]\n\
                 [[tables]]\nname = \"t\"\ncolumns = [{ name = \"a\", type = \"text\" }]",
            ),
        ];
        let reasons = [
            "between 1 and 64 columns",
            "declared twice",
            "unknown variant `varchar`",
            "sensitive column",
            "cannot be nullable",
            "(text, not null)",
            "(text, not null)",
            "(integer, not null)",
            "(integer, not null)",
            "(boolean, not null)",
            "(json, not null)",
            "(uuid, not null)",
            "(real, not null)",
            "did not match any variant",
            "unknown field `check`",
            "`b` is not declared",
            "between 1 and 64 columns",
            "lists `a` twice",
            "two indexes on (a)",
            "table `t` is declared twice",
        ];
        assert_eq!(refused.len(), reasons.len());
        for (i, (result, reason)) in refused.into_iter().zip(reasons).enumerate() {
            let err = result.expect_err(&format!("case {i} was accepted"));
            assert!(err.to_string().contains(reason), "case {i}: {err}");
        }
    }

    #[test]
    fn text_defaults_are_rendered_as_inert_literals() {
        let hostile = "x'); DROP TABLE t; --";
        let schema = Schema::new(vec![Table {
            name: "t".into(),
            columns: vec![
                Column {
                    name: "a".into(),
                    ty: ColumnType::Text,
                    nullable: false,
                    default: Some(ColumnDefault::Value {
                        value: Literal::Text(hostile.into()),
                    }),
                    primary_key: false,
                    unique: false,
                    sensitive: false,
                    client_read: false,
                    client_write: false,
                },
                Column {
                    name: "b".into(),
                    ty: ColumnType::Integer,
                    nullable: true,
                    default: None,
                    primary_key: false,
                    unique: false,
                    sensitive: false,
                    client_read: false,
                    client_write: false,
                },
            ],
            indexes: Vec::new(),
        }])
        .unwrap();
        let conn = created(&schema);
        conn.execute("INSERT INTO t (b) VALUES (1)", []).unwrap();
        let a: String = conn.query_row("SELECT a FROM t", [], |r| r.get(0)).unwrap();
        assert_eq!(a, hostile);
    }

    #[test]
    fn quoting_survives_any_input() {
        assert_eq!(quote("a"), "\"a\"");
        assert_eq!(quote("a\"b"), "\"a\"\"b\"");
    }
}
