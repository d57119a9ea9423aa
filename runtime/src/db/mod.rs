//! The gateway database: each project's tables, declared in its manifest and
//! reached only through structured queries, never raw SQL.
//!
//! [`schema`] is the declaration: what tables and columns exist, their types
//! from a fixed allowlist, who may read and write them, and the DDL that
//! creates them.

pub mod schema;
