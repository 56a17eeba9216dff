//! `filesync.sql` (the seed's install path: `mysql filesync < filesync.sql`)
//! must build exactly the schema the migrations build, and the server must
//! start on a database installed from it. Real MariaDB.

mod common;

use std::collections::BTreeMap;

use common::Server;
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::Text;
use diesel::MysqlConnection;
use filesync_core::db::{run_migrations, Manager};
use filesync_core::testing::TestDb;
use reqwest::StatusCode;
use serde_json::json;

#[derive(QueryableByName)]
struct TableName {
    #[diesel(sql_type = Text)]
    name: String,
}

#[derive(QueryableByName)]
struct CreateTable {
    #[diesel(sql_type = Text)]
    #[diesel(column_name = "Create Table")]
    ddl: String,
}

#[derive(QueryableByName)]
struct Version {
    #[diesel(sql_type = Text)]
    version: String,
}

/// Every table's `SHOW CREATE TABLE`, without the AUTO_INCREMENT counter
/// (rows inserted say nothing about the schema).
fn schema_of(url: &str) -> BTreeMap<String, String> {
    let mut conn = MysqlConnection::establish(url).expect("connect");
    let tables: Vec<TableName> = diesel::sql_query(
        "SELECT CAST(table_name AS CHAR) AS name FROM information_schema.tables WHERE table_schema = DATABASE()",
    )
    .load(&mut conn)
    .expect("list tables");
    tables
        .into_iter()
        .map(|t| {
            let ddl: CreateTable =
                diesel::sql_query(format!("SHOW CREATE TABLE `{}`", t.name)).get_result(&mut conn).expect("ddl");
            let ddl =
                ddl.ddl.split(' ').filter(|word| !word.starts_with("AUTO_INCREMENT=")).collect::<Vec<_>>().join(" ");
            (t.name, ddl)
        })
        .collect()
}

fn versions_of(url: &str) -> Vec<String> {
    let mut conn = MysqlConnection::establish(url).expect("connect");
    let rows: Vec<Version> =
        diesel::sql_query("SELECT CAST(version AS CHAR) AS version FROM __diesel_schema_migrations ORDER BY version")
            .load(&mut conn)
            .expect("versions");
    rows.into_iter().map(|v| v.version).collect()
}

fn load_filesync_sql(db: &TestDb) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../filesync.sql");
    let sql = std::fs::read_to_string(&path).expect("read filesync.sql");
    let mut conn = MysqlConnection::establish(db.url()).expect("connect");
    conn.batch_execute(&sql).expect("filesync.sql loads");
}

#[test]
fn filesync_sql_matches_the_migrations() {
    let from_sql = TestDb::mysql();
    load_filesync_sql(&from_sql);
    let migrated = TestDb::mysql();
    let applied = run_migrations(&mut Manager::new(migrated.url()).unwrap().connect().unwrap()).unwrap();

    let (want, got) = (schema_of(migrated.url()), schema_of(from_sql.url()));
    for table in ["users", "workspaces", "workspace_members", "file_versions", "file_heads", "chunks"] {
        assert!(want.contains_key(table), "migrations made no {table}: {:?}", want.keys());
    }
    assert_eq!(got.keys().collect::<Vec<_>>(), want.keys().collect::<Vec<_>>(), "filesync.sql has other tables");
    for (table, ddl) in &want {
        assert_eq!(&got[table], ddl, "table {table} differs between filesync.sql and migrations/mysql");
    }
    let mut applied = applied;
    applied.sort();
    assert_eq!(versions_of(from_sql.url()), applied, "filesync.sql must record every migration as applied");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_starts_and_serves_on_a_database_installed_from_filesync_sql() {
    let db = tokio::task::spawn_blocking(|| {
        let db = TestDb::mysql();
        load_filesync_sql(&db);
        db
    })
    .await
    .unwrap();
    let before = versions_of(db.url());
    tokio::time::timeout(common::STORY_TIMEOUT, async {
        let srv = Server::start_on(db, |_| {}).await;
        let (_, token) = srv.user("installer").await;
        let (status, body) = srv.post("/create-workspace", Some(&token), json!({"name": "Docs"})).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        assert_eq!(versions_of(srv.db.url()), before, "no migration ran again");
        srv.stop().await.expect("clean shutdown");
    })
    .await
    .expect("story finished in time");
}
