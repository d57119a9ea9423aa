//! The gateway database: each project's tables, declared in its manifest and
//! reached only through structured queries, never raw SQL.
//!
//! - [`schema`]: the declaration: what tables and columns exist, their types
//!   from a fixed allowlist, who may read and write them, and the DDL that
//!   creates them;
//! - [`query`]: the structured query contract guests and browsers send;
//! - [`sql`]: the one validator and SQL generator for every entry point;
//! - [`migrate`]: the steps from the tables a database has to the tables a
//!   new build declares.

pub mod migrate;
pub mod query;
pub mod schema;
pub mod sql;
