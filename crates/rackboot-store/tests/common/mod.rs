//! Test databases for the shared store suite: a SQLite file in a temp dir, an
//! in-memory SQLite, and a fresh PostgreSQL database per test.
//!
//! PostgreSQL: `RACKBOOT_TEST_PG_URL` names a server whose user may CREATE
//! DATABASE. When it is unset, the first test starts a throwaway cluster with
//! `scripts/test-postgres start --watch-pid <this process>` (the cluster stops
//! when the test binary exits). If PostgreSQL cannot be started the tests fail.

use std::path::Path;
use std::process::Command;
use std::sync::{Arc, OnceLock};

use rackboot_store::{Store, open, open_sqlite_in_memory};
use sqlx::Connection;

pub struct TestDb {
    pub store: Arc<dyn Store>,
    /// What `rackboot_store::open` takes to reopen this database.
    pub url: String,
    cleanup: Cleanup,
}

enum Cleanup {
    None,
    TempDir(#[allow(dead_code)] tempfile::TempDir),
    PgDatabase { name: String },
}

impl TestDb {
    pub async fn sqlite_file() -> TestDb {
        let dir = tempfile::tempdir().expect("creating a temp dir");
        // A missing parent directory: open must create it.
        let url = format!("sqlite:{}", dir.path().join("state/rackboot.db").display());
        let store = open(&url).await.expect("opening SQLite store");
        assert_eq!(store.backend(), "sqlite");
        TestDb {
            store,
            url,
            cleanup: Cleanup::TempDir(dir),
        }
    }

    pub async fn sqlite_memory() -> TestDb {
        let store = open_sqlite_in_memory()
            .await
            .expect("opening in-memory store");
        TestDb {
            store,
            url: "sqlite::memory:".into(),
            cleanup: Cleanup::None,
        }
    }

    pub async fn postgres() -> TestDb {
        let base = pg_base_url();
        let name = format!("test_{}", uuid::Uuid::new_v4().simple());
        let mut admin = sqlx::PgConnection::connect(base)
            .await
            .unwrap_or_else(|e| panic!("connecting to test PostgreSQL {base}: {e}"));
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await
            .expect("creating test database");
        admin.close().await.ok();
        let url = with_database(base, &name);
        let store = open(&url).await.expect("opening PostgreSQL store");
        assert_eq!(store.backend(), "postgres");
        TestDb {
            store,
            url,
            cleanup: Cleanup::PgDatabase { name },
        }
    }

    /// Drops the PostgreSQL database (a failed test leaves it for inspection).
    pub async fn finish(self) {
        let TestDb { store, cleanup, .. } = self;
        drop(store);
        if let Cleanup::PgDatabase { name } = cleanup {
            let mut admin = sqlx::PgConnection::connect(pg_base_url())
                .await
                .expect("connecting to test PostgreSQL");
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE {name} WITH (FORCE)"
            )))
            .execute(&mut admin)
            .await
            .expect("dropping test database");
        }
    }
}

/// `url` with its database path replaced by `db`, keeping any query string.
pub fn with_database(url: &str, db: &str) -> String {
    let authority_start = url.find("://").map_or(0, |i| i + 3);
    let rest = &url[authority_start..];
    let path_start = rest.find(['/', '?']).unwrap_or(rest.len());
    let query = rest[path_start..]
        .find('?')
        .map_or("", |q| &rest[path_start + q..]);
    format!("{}/{db}{query}", &url[..authority_start + path_start])
}

/// Whether tests on `backend` can run here: SQLite always; PostgreSQL with a
/// server named by RACKBOOT_TEST_PG_URL, or one the tests start themselves
/// (scripts/test-postgres: root, RACKBOOT_TEST_PRIV=1). Says why not.
pub fn backend_available(backend: &str) -> bool {
    if !backend.starts_with("postgres") || std::env::var_os("RACKBOOT_TEST_PG_URL").is_some() {
        return true;
    }
    rackboot_testenv::privileged(
        "a PostgreSQL server: set RACKBOOT_TEST_PG_URL=postgres://..., or run as root (scripts/test-postgres starts one)",
    )
}

pub fn pg_base_url() -> &'static str {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| {
        if let Ok(url) = std::env::var("RACKBOOT_TEST_PG_URL") {
            return url;
        }
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/test-postgres");
        let out = Command::new("bash")
            .arg(&script)
            .args(["start", "--no-fsync", "--watch-pid"])
            .arg(std::process::id().to_string())
            .output()
            .unwrap_or_else(|e| panic!("running {}: {e}", script.display()));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "PostgreSQL tests need a server: {} start failed ({}); set RACKBOOT_TEST_PG_URL to use an existing one.\n{}{}",
            script.display(),
            out.status,
            stdout,
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
            .lines()
            .find_map(|l| l.strip_prefix("export RACKBOOT_TEST_PG_URL="))
            .unwrap_or_else(|| panic!("no RACKBOOT_TEST_PG_URL in test-postgres output:\n{stdout}"))
            .to_string()
    })
}

#[test]
fn database_url_rewriting() {
    assert_eq!(
        with_database("postgres://u@h:1/base", "t1"),
        "postgres://u@h:1/t1"
    );
    assert_eq!(
        with_database("postgres://u:p@h/base?sslmode=disable", "t1"),
        "postgres://u:p@h/t1?sslmode=disable"
    );
    assert_eq!(with_database("postgres://h", "t1"), "postgres://h/t1");
    assert_eq!(
        with_database("postgres://h?x=1", "t1"),
        "postgres://h/t1?x=1"
    );
}
