//! API tokens on both backends: one small table keyed by name, looked up by
//! the token's SHA-256 on every API request (a unique index).

use chrono::{DateTime, Utc};
use rackboot_core::{ApiToken, Role};
use sqlx::Row;
use sqlx::postgres::PgRow;
use sqlx::sqlite::SqliteRow;

use crate::postgres::PgStore;
use crate::sqlite::SqliteStore;
use crate::{Result, StoreError, backend, codec, is_unique_violation, truncate_ms};

const TABLE: &str = "api_tokens";

fn role(text: &str) -> Result<Role> {
    Role::parse(text).ok_or_else(|| StoreError::Corrupt {
        table: TABLE,
        detail: format!("unknown role {text:?}"),
    })
}

fn name_taken(name: &str) -> StoreError {
    StoreError::Conflict(format!("a token named {name:?} exists already"))
}

fn not_found(name: &str) -> StoreError {
    StoreError::NotFound {
        what: "API token",
        key: name.to_string(),
    }
}

fn sqlite_row(row: &SqliteRow) -> Result<ApiToken> {
    let get = |e: sqlx::Error| StoreError::Corrupt {
        table: TABLE,
        detail: e.to_string(),
    };
    Ok(ApiToken {
        name: row.try_get("name").map_err(get)?,
        role: role(&row.try_get::<String, _>("role").map_err(get)?)?,
        sha256: row.try_get("sha256").map_err(get)?,
        created_at: codec::from_millis(TABLE, row.try_get("created_at").map_err(get)?)?,
        created_by: row.try_get("created_by").map_err(get)?,
        last_used_at: row
            .try_get::<Option<i64>, _>("last_used_at")
            .map_err(get)?
            .map(|ms| codec::from_millis(TABLE, ms))
            .transpose()?,
    })
}

fn pg_row(row: &PgRow) -> Result<ApiToken> {
    let get = |e: sqlx::Error| StoreError::Corrupt {
        table: TABLE,
        detail: e.to_string(),
    };
    Ok(ApiToken {
        name: row.try_get("name").map_err(get)?,
        role: role(&row.try_get::<String, _>("role").map_err(get)?)?,
        sha256: row.try_get("sha256").map_err(get)?,
        created_at: row.try_get("created_at").map_err(get)?,
        created_by: row.try_get("created_by").map_err(get)?,
        last_used_at: row.try_get("last_used_at").map_err(get)?,
    })
}

const INSERT: &str = "INSERT INTO api_tokens (name, role, sha256, created_at, created_by, last_used_at) \
     VALUES ($1, $2, $3, $4, $5, NULL)";
const LIST: &str = "SELECT * FROM api_tokens ORDER BY name";
const FIND: &str = "SELECT * FROM api_tokens WHERE sha256 = $1";
const DELETE: &str = "DELETE FROM api_tokens WHERE name = $1";
const TOUCH: &str = "UPDATE api_tokens SET last_used_at = $2 WHERE name = $1";

impl SqliteStore {
    pub(crate) async fn create_api_token_impl(&self, t: &ApiToken) -> Result<()> {
        let ctx = "creating an API token";
        let mut tx = self.begin_write().await?;
        sqlx::query(INSERT)
            .bind(&t.name)
            .bind(t.role.as_str())
            .bind(&t.sha256)
            .bind(codec::millis(t.created_at))
            .bind(&t.created_by)
            .execute(&mut *tx)
            .await
            .map_err(|e| {
                if is_unique_violation(&e) {
                    name_taken(&t.name)
                } else {
                    backend(ctx)(e)
                }
            })?;
        tx.commit().await.map_err(backend(ctx))
    }

    pub(crate) async fn list_api_tokens_impl(&self) -> Result<Vec<ApiToken>> {
        sqlx::query(LIST)
            .fetch_all(self.reader())
            .await
            .map_err(backend("listing API tokens"))?
            .iter()
            .map(sqlite_row)
            .collect()
    }

    pub(crate) async fn find_api_token_impl(&self, sha256: &str) -> Result<Option<ApiToken>> {
        sqlx::query(FIND)
            .bind(sha256)
            .fetch_optional(self.reader())
            .await
            .map_err(backend("looking up an API token"))?
            .as_ref()
            .map(sqlite_row)
            .transpose()
    }

    pub(crate) async fn delete_api_token_impl(&self, name: &str) -> Result<()> {
        let ctx = "revoking an API token";
        let mut tx = self.begin_write().await?;
        let deleted = sqlx::query(DELETE)
            .bind(name)
            .execute(&mut *tx)
            .await
            .map_err(backend(ctx))?;
        tx.commit().await.map_err(backend(ctx))?;
        if deleted.rows_affected() == 0 {
            return Err(not_found(name));
        }
        Ok(())
    }

    pub(crate) async fn touch_api_token_impl(&self, name: &str, at: DateTime<Utc>) -> Result<()> {
        let ctx = "recording an API token's use";
        let mut tx = self.begin_write().await?;
        sqlx::query(TOUCH)
            .bind(name)
            .bind(codec::millis(at))
            .execute(&mut *tx)
            .await
            .map_err(backend(ctx))?;
        tx.commit().await.map_err(backend(ctx))
    }
}

impl PgStore {
    pub(crate) async fn create_api_token_impl(&self, t: &ApiToken) -> Result<()> {
        sqlx::query(INSERT)
            .bind(&t.name)
            .bind(t.role.as_str())
            .bind(&t.sha256)
            .bind(truncate_ms(t.created_at))
            .bind(&t.created_by)
            .execute(self.pool())
            .await
            .map_err(|e| {
                if is_unique_violation(&e) {
                    name_taken(&t.name)
                } else {
                    backend("creating an API token")(e)
                }
            })?;
        Ok(())
    }

    pub(crate) async fn list_api_tokens_impl(&self) -> Result<Vec<ApiToken>> {
        sqlx::query(LIST)
            .fetch_all(self.pool())
            .await
            .map_err(backend("listing API tokens"))?
            .iter()
            .map(pg_row)
            .collect()
    }

    pub(crate) async fn find_api_token_impl(&self, sha256: &str) -> Result<Option<ApiToken>> {
        sqlx::query(FIND)
            .bind(sha256)
            .fetch_optional(self.pool())
            .await
            .map_err(backend("looking up an API token"))?
            .as_ref()
            .map(pg_row)
            .transpose()
    }

    pub(crate) async fn delete_api_token_impl(&self, name: &str) -> Result<()> {
        let deleted = sqlx::query(DELETE)
            .bind(name)
            .execute(self.pool())
            .await
            .map_err(backend("revoking an API token"))?;
        if deleted.rows_affected() == 0 {
            return Err(not_found(name));
        }
        Ok(())
    }

    pub(crate) async fn touch_api_token_impl(&self, name: &str, at: DateTime<Utc>) -> Result<()> {
        sqlx::query(TOUCH)
            .bind(name)
            .bind(truncate_ms(at))
            .execute(self.pool())
            .await
            .map_err(backend("recording an API token's use"))?;
        Ok(())
    }
}
