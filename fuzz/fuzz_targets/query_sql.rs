//! The query validator and SQL generator, fed JSON queries through the
//! HTTP gateway's parser. Invariant: whatever the query, the SQL holds only
//! fixed keywords, quoted declared identifiers, placeholders (one per bound
//! value) and the `LIMIT`/`OFFSET` numbers; a public key's SQL never names a
//! column it may neither read nor write; both dialects agree.

#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use switchyard::deploy::manifest::AppManifest;
use switchyard::gateway::json;
use switchyard_runtime::db::schema::Schema;
use switchyard_runtime::db::sql::{
    Access, Dialect, QueryLimits, SQL_KEYWORDS, Statement, compile_for,
};

const MANIFEST: &str = r#"
[[tables]]
name = "todos"
columns = [
  { name = "id", type = "integer", primary_key = true, client_read = true },
  { name = "title", type = "text", client_read = true, client_write = true },
  { name = "done", type = "boolean", default = { value = false }, client_read = true, client_write = true },
  { name = "created_at", type = "timestamp", default = "now", client_read = true },
  { name = "score", type = "real", nullable = true, client_read = true },
  { name = "data", type = "json", nullable = true, client_read = true, client_write = true },
  { name = "avatar", type = "blob", nullable = true, client_read = true },
  { name = "ref", type = "uuid", nullable = true, client_write = true },
  { name = "owner_email", type = "text", nullable = true, sensitive = true },
  { name = "note", type = "text", nullable = true },
]
indexes = [{ columns = ["done", "id"] }]

[[tables]]
name = "secrets"
columns = [
  { name = "id", type = "integer", primary_key = true },
  { name = "token", type = "text", sensitive = true },
]
"#;

/// The project's PostgreSQL schema name in the generated SQL.
const PG_SCHEMA: &str = "p_fuzz";

fn schema() -> &'static Schema {
    static SCHEMA: OnceLock<Schema> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        AppManifest::parse(MANIFEST)
            .and_then(|m| m.schema())
            .expect("the fixture schema is valid")
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let Ok(query) = json::query(&value) else {
        return;
    };
    let limits = QueryLimits::default();
    for access in [Access::Server, Access::Public] {
        let sqlite = compile_for(Dialect::Sqlite, schema(), access, &query, &limits);
        let postgres = compile_for(
            Dialect::Postgres { schema: PG_SCHEMA },
            schema(),
            access,
            &query,
            &limits,
        );
        match (&sqlite, &postgres) {
            (Ok(s), Ok(p)) => {
                assert_eq!(s.params, p.params, "dialects bind different values");
                assert_eq!(s.columns, p.columns);
                check(s, access, false);
                check(p, access, true);
            }
            (Err(s), Err(p)) => assert_eq!(s, p, "dialects refuse differently"),
            _ => panic!("one dialect accepts what the other refuses: {sqlite:?} / {postgres:?}"),
        }
    }
});

/// Checks every token of `statement.sql`.
fn check(statement: &Statement, access: Access, postgres: bool) {
    let sql = statement.sql.as_str();
    let bytes = sql.as_bytes();
    let mut placeholders = 0usize;
    let mut identifiers = Vec::new();
    let mut previous_word = "";
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        match c {
            b' ' | b'(' | b')' | b',' | b'=' | b'<' | b'>' | b'.' => i += 1,
            b'"' => {
                let mut end = i + 1;
                while end < bytes.len() && bytes[end] != b'"' {
                    end += 1;
                }
                assert!(end < bytes.len(), "unterminated identifier in {sql}");
                identifiers.push(&sql[i + 1..end]);
                i = end + 1;
            }
            b'?' if !postgres => {
                placeholders += 1;
                i += 1;
            }
            b'$' if postgres => {
                let start = i + 1;
                let mut end = start;
                while end < bytes.len() && bytes[end].is_ascii_digit() {
                    end += 1;
                }
                placeholders += 1;
                assert_eq!(
                    sql[start..end].parse::<usize>().ok(),
                    Some(placeholders),
                    "placeholders out of order in {sql}"
                );
                i = end;
            }
            b'\'' => {
                assert_eq!(previous_word, "ESCAPE", "a string literal in {sql}");
                assert!(sql[i..].starts_with("'\\'"), "a string literal in {sql}");
                i += 3;
            }
            b'0'..=b'9' => {
                assert!(
                    matches!(previous_word, "LIMIT" | "OFFSET"),
                    "a number outside LIMIT/OFFSET in {sql}"
                );
                while i < bytes.len() && bytes[i].is_ascii_digit() {
                    i += 1;
                }
            }
            b'a'..=b'z' | b'A'..=b'Z' => {
                let start = i;
                while i < bytes.len() && bytes[i].is_ascii_alphabetic() {
                    i += 1;
                }
                let word = &sql[start..i];
                assert!(
                    SQL_KEYWORDS.contains(&word),
                    "`{word}` is not a keyword: {sql}"
                );
                previous_word = word;
            }
            _ => panic!("unexpected byte {c:#x} in {sql}"),
        }
    }
    assert_eq!(
        placeholders,
        statement.params.len(),
        "placeholders and bound values differ in {sql}"
    );
    check_identifiers(&identifiers, access, postgres, sql);
    if access == Access::Public {
        for name in &statement.columns {
            let readable = schema()
                .tables()
                .iter()
                .filter_map(|t| t.column(name))
                .any(|c| c.client_read && !c.sensitive);
            assert!(readable, "a public key is shown `{name}`");
        }
    }
}

/// Exactly one table is named (and, for PostgreSQL, the project's schema);
/// every other identifier is one of its columns, and one a public key may
/// use.
fn check_identifiers(names: &[&str], access: Access, postgres: bool, sql: &str) {
    let schema = schema();
    let mut names: Vec<&str> = names.to_vec();
    if postgres {
        let before = names.len();
        names.retain(|n| *n != PG_SCHEMA);
        assert_eq!(
            before - names.len(),
            1,
            "the schema is not named once: {sql}"
        );
    }
    let tables: Vec<&str> = names
        .iter()
        .copied()
        .filter(|n| schema.table(n).is_some())
        .collect();
    assert_eq!(tables.len(), 1, "not exactly one table in {sql}");
    let table = schema.table(tables[0]).expect("just found");
    for name in names.iter().filter(|n| **n != table.name) {
        let column = table
            .column(name)
            .unwrap_or_else(|| panic!("undeclared identifier `{name}` in {sql}"));
        if access == Access::Public {
            assert!(
                !column.sensitive && (column.client_read || column.client_write),
                "a public key's SQL names `{name}`: {sql}"
            );
        }
    }
}
