//! Migrations: from the tables a project's database has to the tables its
//! new build declares, as a list of steps a backend applies in one
//! transaction.
//!
//! Only changes SQLite and PostgreSQL can make in place, without copying a
//! table, are planned: create a table, add a column, create or drop an
//! index, and — only when the manifest says `allow_destructive_migrations`
//! — drop a table or a column. A changed column (type, nullability,
//! default, key, uniqueness) is refused: add a new column instead. The
//! access flags (`sensitive`, `client_read`, `client_write`) are not part of
//! the database and change freely.

use super::schema::{Column, Index, Schema, SchemaError, Table};

/// What to do with what the database has and the declaration lacks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Removals {
    /// Refuse to drop a table or column (a deploy without
    /// `allow_destructive_migrations`). Indexes, which hold no data, are
    /// dropped.
    Refuse,
    /// Drop them (a deploy with `allow_destructive_migrations = true`).
    Drop,
    /// Keep them, and keep a changed column as the database has it (a
    /// rollback: bring back what the old build needs, destroy nothing).
    Keep,
}

/// One change to a database.
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    /// Create a table (its indexes follow as their own steps).
    CreateTable(Table),
    /// Add a column to an existing table.
    AddColumn {
        /// The table.
        table: String,
        /// The new column.
        column: Column,
    },
    /// Create an index.
    CreateIndex {
        /// The table, as it will be.
        table: Table,
        /// The index.
        index: Index,
    },
    /// Drop an index.
    DropIndex {
        /// The table, as it was.
        table: Table,
        /// The index.
        index: Index,
    },
    /// Drop a column and its data.
    DropColumn {
        /// The table.
        table: String,
        /// The column.
        column: String,
    },
    /// Drop a table and its data.
    DropTable(String),
}

/// What a migration will do.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// The steps, in the order they must run.
    pub steps: Vec<Step>,
    /// The tables the database will have afterwards, to be recorded as its
    /// new state.
    pub tables: Vec<Table>,
}

impl Step {
    /// A one-line description for deploy output and logs.
    pub fn describe(&self) -> String {
        match self {
            Step::CreateTable(t) => format!("create table {}", t.name),
            Step::AddColumn { table, column } => format!("add column {table}.{}", column.name),
            Step::CreateIndex { table, index } => {
                format!(
                    "create index on {}({})",
                    table.name,
                    index.columns.join(", ")
                )
            }
            Step::DropIndex { table, index } => {
                format!("drop index on {}({})", table.name, index.columns.join(", "))
            }
            Step::DropColumn { table, column } => format!("drop column {table}.{column}"),
            Step::DropTable(t) => format!("drop table {t}"),
        }
    }
}

/// Plans the way from `live` (the tables the database has) to `declared`.
/// Refusals are [`SchemaError`]s naming the table and column.
pub fn plan(live: &[Table], declared: &Schema, removals: Removals) -> Result<Plan, SchemaError> {
    let mut steps = Vec::new();
    let mut drops = Vec::new();
    let mut result = Vec::new();

    for want in declared.tables() {
        let Some(have) = live.iter().find(|t| t.name == want.name) else {
            steps.push(Step::CreateTable(want.clone()));
            steps.extend(want.indexes.iter().map(|index| Step::CreateIndex {
                table: want.clone(),
                index: index.clone(),
            }));
            result.push(want.clone());
            continue;
        };
        result.push(migrate_table(have, want, removals, &mut steps, &mut drops)?);
    }
    for have in live {
        if declared.table(&have.name).is_some() {
            continue;
        }
        match removals {
            Removals::Refuse => {
                return Err(SchemaError::new(format!(
                    "table `{}` is no longer declared: dropping it would delete its data; declare it again, or set `allow_destructive_migrations = true` to drop it",
                    have.name
                )));
            }
            Removals::Drop => drops.push(Step::DropTable(have.name.clone())),
            Removals::Keep => result.push(have.clone()),
        }
    }
    // Drops last: a failed create or add then leaves nothing dropped (the
    // whole plan runs in one transaction anyway).
    steps.extend(drops);
    Ok(Plan {
        steps,
        tables: result,
    })
}

/// The steps that turn `have` into `want`; returns the table as it will be.
fn migrate_table(
    have: &Table,
    want: &Table,
    removals: Removals,
    steps: &mut Vec<Step>,
    drops: &mut Vec<Step>,
) -> Result<Table, SchemaError> {
    let name = &want.name;
    let mut columns = Vec::new();
    for column in &want.columns {
        match have.column(&column.name) {
            None => {
                // Checked now, so a refusal comes before anything runs.
                column.added_definition_sql(name)?;
                steps.push(Step::AddColumn {
                    table: name.clone(),
                    column: column.clone(),
                });
                columns.push(column.clone());
            }
            Some(old) if same_storage(old, column) => columns.push(column.clone()),
            Some(old) if removals == Removals::Keep => columns.push(old.clone()),
            Some(_) => {
                return Err(SchemaError::new(format!(
                    "table `{name}`, column `{}`: changing a column's type, nullability, default, primary_key or unique is not supported; add a new column instead",
                    column.name
                )));
            }
        }
    }

    let mut dropped_columns = Vec::new();
    for old in &have.columns {
        if want.column(&old.name).is_some() {
            continue;
        }
        match removals {
            Removals::Refuse => {
                return Err(SchemaError::new(format!(
                    "table `{name}`, column `{}` is no longer declared: dropping it would delete its data; declare it again, or set `allow_destructive_migrations = true` to drop it",
                    old.name
                )));
            }
            Removals::Drop if old.primary_key || old.unique => {
                return Err(SchemaError::new(format!(
                    "table `{name}`, column `{}` is a primary key or unique and cannot be dropped on its own; drop the table instead",
                    old.name
                )));
            }
            Removals::Drop => dropped_columns.push(old.name.clone()),
            Removals::Keep => columns.push(old.clone()),
        }
    }

    let mut indexes = Vec::new();
    // An index is dropped before the columns it covers, and created after
    // the columns it needs.
    for old in &have.indexes {
        let declared = want.indexes.contains(old);
        let covers_dropped = old.columns.iter().any(|c| dropped_columns.contains(c));
        if (declared && !covers_dropped) || removals == Removals::Keep {
            indexes.push(old.clone());
        } else {
            steps.push(Step::DropIndex {
                table: have.clone(),
                index: old.clone(),
            });
        }
    }
    let table = Table {
        name: name.clone(),
        columns,
        indexes: Vec::new(),
    };
    for index in &want.indexes {
        if !indexes.contains(index) {
            steps.push(Step::CreateIndex {
                table: table.clone(),
                index: index.clone(),
            });
            indexes.push(index.clone());
        }
    }
    drops.extend(dropped_columns.into_iter().map(|column| Step::DropColumn {
        table: name.clone(),
        column,
    }));
    Ok(Table { indexes, ..table })
}

/// Whether two declarations of a column are stored alike (access flags
/// aside).
fn same_storage(a: &Column, b: &Column) -> bool {
    a.ty == b.ty
        && a.nullable == b.nullable
        && a.default == b.default
        && a.primary_key == b.primary_key
        && a.unique == b.unique
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::schema::{ColumnType, Schema};

    fn table(toml: &str) -> Table {
        toml::from_str(toml).expect("valid table")
    }

    fn todos() -> Table {
        table(
            r#"
            name = "todos"
            columns = [
              { name = "id", type = "integer", primary_key = true },
              { name = "title", type = "text" },
            ]
            indexes = [{ columns = ["title"] }]
            "#,
        )
    }

    fn schema(tables: Vec<Table>) -> Schema {
        Schema::new(tables).expect("valid schema")
    }

    fn descriptions(plan: &Plan) -> Vec<String> {
        plan.steps.iter().map(Step::describe).collect()
    }

    /// `todos` plus the column written as an inline TOML table.
    fn with_column(mut t: Table, inline: &str) -> Table {
        #[derive(serde::Deserialize)]
        struct One {
            c: Column,
        }
        let one: One = toml::from_str(&format!("c = {inline}")).expect("valid column");
        t.columns.push(one.c);
        t
    }

    #[test]
    fn from_nothing_creates_tables_then_their_indexes() {
        let plan = plan(&[], &schema(vec![todos()]), Removals::Refuse).unwrap();
        assert_eq!(
            descriptions(&plan),
            ["create table todos", "create index on todos(title)"]
        );
        assert_eq!(plan.tables, [todos()]);
    }

    #[test]
    fn the_same_schema_plans_nothing_and_flags_change_freely() {
        let mut flagged = todos();
        flagged.columns[1].client_read = true;
        flagged.columns[1].sensitive = false;
        let plan = plan(&[todos()], &schema(vec![flagged.clone()]), Removals::Refuse).unwrap();
        assert!(plan.steps.is_empty());
        assert_eq!(plan.tables, [flagged], "the new flags are recorded");
    }

    #[test]
    fn columns_and_indexes_are_added() {
        let mut want = with_column(
            todos(),
            r#"{ name = "done", type = "boolean", default = { value = false } }"#,
        );
        want.indexes.push(Index {
            columns: vec!["done".into()],
            unique: false,
        });
        let plan = plan(&[todos()], &schema(vec![want.clone()]), Removals::Refuse).unwrap();
        assert_eq!(
            descriptions(&plan),
            ["add column todos.done", "create index on todos(done)"]
        );
        assert_eq!(plan.tables, [want]);
    }

    #[test]
    fn columns_that_cannot_be_added_in_place_are_refused() {
        for (column, why) in [
            (
                r#"{ name = "c", type = "text" }"#,
                "needs a literal default",
            ),
            (
                r#"{ name = "c", type = "text", unique = true, nullable = true }"#,
                "cannot be primary_key or unique",
            ),
            (
                r#"{ name = "c", type = "timestamp", default = "now" }"#,
                "cannot default to `now`",
            ),
        ] {
            let want = with_column(todos(), column);
            let err = plan(&[todos()], &schema(vec![want]), Removals::Drop).unwrap_err();
            assert!(err.to_string().contains(why), "{column}: {err}");
        }
        let nullable = with_column(todos(), r#"{ name = "c", type = "text", nullable = true }"#);
        assert!(plan(&[todos()], &schema(vec![nullable]), Removals::Refuse).is_ok());
    }

    #[test]
    fn removals_are_refused_dropped_or_kept() {
        let mut narrower = todos();
        narrower.columns.pop();
        narrower.indexes.clear();
        let users = table(
            r#"name = "users"
               columns = [{ name = "id", type = "integer" }]"#,
        );
        let live = [todos(), users.clone()];
        let want = schema(vec![narrower.clone()]);

        let refused = plan(&live, &want, Removals::Refuse).unwrap_err();
        assert!(
            refused.to_string().contains("allow_destructive_migrations"),
            "{refused}"
        );

        let dropped = plan(&live, &want, Removals::Drop).unwrap();
        assert_eq!(
            descriptions(&dropped),
            [
                "drop index on todos(title)",
                "drop column todos.title",
                "drop table users"
            ]
        );
        assert_eq!(dropped.tables, [narrower]);

        let kept = plan(&live, &want, Removals::Keep).unwrap();
        assert!(kept.steps.is_empty(), "{:?}", kept.steps);
        assert_eq!(kept.tables, live);
    }

    #[test]
    fn key_columns_are_never_dropped_alone() {
        let mut want = todos();
        want.columns.remove(0);
        let err = plan(&[todos()], &schema(vec![want]), Removals::Drop).unwrap_err();
        assert!(err.to_string().contains("drop the table instead"), "{err}");
    }

    #[test]
    fn changed_columns_are_refused_except_on_restore() {
        let mut want = todos();
        want.columns[1].ty = ColumnType::Integer;
        for removals in [Removals::Refuse, Removals::Drop] {
            let err = plan(&[todos()], &schema(vec![want.clone()]), removals).unwrap_err();
            assert!(
                err.to_string().contains("add a new column instead"),
                "{err}"
            );
        }
        let kept = plan(&[todos()], &schema(vec![want]), Removals::Keep).unwrap();
        assert!(kept.steps.is_empty());
        assert_eq!(kept.tables[0].columns[1].ty, ColumnType::Text);
    }

    #[test]
    fn an_index_changing_uniqueness_is_dropped_and_recreated() {
        let mut want = todos();
        want.indexes[0].unique = true;
        let plan = plan(&[todos()], &schema(vec![want]), Removals::Refuse).unwrap();
        assert_eq!(
            descriptions(&plan),
            ["drop index on todos(title)", "create index on todos(title)"]
        );
    }
}
