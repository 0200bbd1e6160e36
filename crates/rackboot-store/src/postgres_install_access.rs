//! PostgreSQL: install access records (see [`crate::InstallAccess`]).

use sqlx::Row;
use sqlx::postgres::PgRow;

use crate::postgres::PgStore;
use crate::{InstallAccess, InstallAccessAmend, Result, StoreError, backend, codec, truncate_ms};

const TABLE: &str = "install_access";
const COLUMNS: &str = "install_id, host(bound_ip) AS bound_ip, first_fetch_at, closed_at, \
     host(done_ip) AS done_ip";

impl PgStore {
    pub(crate) async fn bind_install_access_impl(
        &self,
        access: &InstallAccess,
    ) -> Result<InstallAccess> {
        // The first binding wins: a later one (another address, another
        // server) leaves the row as it is; the row in force is read back.
        let inserted = sqlx::query(
            "INSERT INTO install_access (install_id, bound_ip, first_fetch_at) \
             VALUES ($1, $2::inet, $3) ON CONFLICT (install_id) DO NOTHING",
        )
        .bind(access.install)
        .bind(access.bound_ip.to_string())
        .bind(truncate_ms(access.first_fetch_at))
        .execute(self.pool())
        .await;
        if let Err(e) = inserted {
            return Err(if crate::is_foreign_key_violation(&e) {
                StoreError::NotFound {
                    what: "install",
                    key: access.install.to_string(),
                }
            } else {
                backend("binding an install's access")(e)
            });
        }
        self.get_install_access_impl(access.install)
            .await?
            .ok_or_else(|| StoreError::NotFound {
                what: "install",
                key: access.install.to_string(),
            })
    }

    pub(crate) async fn get_install_access_impl(
        &self,
        install: uuid::Uuid,
    ) -> Result<Option<InstallAccess>> {
        let sql = format!("SELECT {COLUMNS} FROM install_access WHERE install_id = $1");
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(install)
            .fetch_optional(self.pool())
            .await
            .map_err(backend("reading an install's access"))?
            .as_ref()
            .map(access_from_row)
            .transpose()
    }

    pub(crate) async fn amend_install_access_impl(
        &self,
        install: uuid::Uuid,
        amend: InstallAccessAmend,
    ) -> Result<Option<InstallAccess>> {
        let sql = format!(
            "UPDATE install_access SET closed_at = COALESCE(closed_at, $2), \
             done_ip = COALESCE(done_ip, $3::inet) WHERE install_id = $1 RETURNING {COLUMNS}"
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(install)
            .bind(amend.closed_at.map(truncate_ms))
            .bind(amend.done_ip.map(|ip| ip.to_string()))
            .fetch_optional(self.pool())
            .await
            .map_err(backend("amending an install's access"))?
            .as_ref()
            .map(access_from_row)
            .transpose()
    }

    pub(crate) async fn list_install_access_impl(&self) -> Result<Vec<InstallAccess>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM install_access \
             WHERE install_id IN (SELECT id FROM installs WHERE state = 'pending') \
             ORDER BY install_id"
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_all(self.pool())
            .await
            .map_err(backend("listing install access records"))?
            .iter()
            .map(access_from_row)
            .collect()
    }
}

fn access_from_row(row: &PgRow) -> Result<InstallAccess> {
    let get = |e| backend("decoding an install access row")(e);
    Ok(InstallAccess {
        install: row.try_get("install_id").map_err(get)?,
        bound_ip: codec::ip(
            TABLE,
            "bound_ip",
            &row.try_get::<String, _>("bound_ip").map_err(get)?,
        )?,
        first_fetch_at: row.try_get("first_fetch_at").map_err(get)?,
        closed_at: row.try_get("closed_at").map_err(get)?,
        done_ip: row
            .try_get::<Option<String>, _>("done_ip")
            .map_err(get)?
            .map(|ip| codec::ip(TABLE, "done_ip", &ip))
            .transpose()?,
    })
}
