//! SQLite: install access records (see [`crate::InstallAccess`]).

use sqlx::Row;
use sqlx::sqlite::SqliteRow;

use crate::sqlite::SqliteStore;
use crate::{InstallAccess, InstallAccessAmend, Result, StoreError, backend, codec};

const TABLE: &str = "install_access";

impl SqliteStore {
    pub(crate) async fn bind_install_access_impl(
        &self,
        access: &InstallAccess,
    ) -> Result<InstallAccess> {
        let ctx = "binding an install's access";
        let mut tx = self.begin_write().await?;
        // The first binding wins: a later one (another address, another
        // server) leaves the row as it is and gets it back.
        let inserted = sqlx::query(
            "INSERT INTO install_access (install_id, bound_ip, first_fetch_at, closed_at, done_ip) \
             VALUES ($1, $2, $3, NULL, NULL) ON CONFLICT (install_id) DO NOTHING",
        )
        .bind(access.install.to_string())
        .bind(access.bound_ip.to_string())
        .bind(codec::millis(access.first_fetch_at))
        .execute(&mut *tx)
        .await;
        if let Err(e) = inserted {
            return Err(if crate::is_foreign_key_violation(&e) {
                StoreError::NotFound {
                    what: "install",
                    key: access.install.to_string(),
                }
            } else {
                backend(ctx)(e)
            });
        }
        let row = sqlx::query("SELECT * FROM install_access WHERE install_id = $1")
            .bind(access.install.to_string())
            .fetch_one(&mut *tx)
            .await
            .map_err(backend(ctx))?;
        tx.commit().await.map_err(backend(ctx))?;
        access_from_row(&row)
    }

    pub(crate) async fn get_install_access_impl(
        &self,
        install: uuid::Uuid,
    ) -> Result<Option<InstallAccess>> {
        sqlx::query("SELECT * FROM install_access WHERE install_id = $1")
            .bind(install.to_string())
            .fetch_optional(self.reader())
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
        let ctx = "amending an install's access";
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "UPDATE install_access SET closed_at = COALESCE(closed_at, $2), \
             done_ip = COALESCE(done_ip, $3) WHERE install_id = $1",
        )
        .bind(install.to_string())
        .bind(amend.closed_at.map(codec::millis))
        .bind(amend.done_ip.map(|ip| ip.to_string()))
        .execute(&mut *tx)
        .await
        .map_err(backend(ctx))?;
        let row = sqlx::query("SELECT * FROM install_access WHERE install_id = $1")
            .bind(install.to_string())
            .fetch_optional(&mut *tx)
            .await
            .map_err(backend(ctx))?;
        tx.commit().await.map_err(backend(ctx))?;
        row.as_ref().map(access_from_row).transpose()
    }

    pub(crate) async fn list_install_access_impl(&self) -> Result<Vec<InstallAccess>> {
        sqlx::query(
            "SELECT * FROM install_access \
             WHERE install_id IN (SELECT id FROM installs WHERE state = 'pending') \
             ORDER BY install_id",
        )
        .fetch_all(self.reader())
        .await
        .map_err(backend("listing install access records"))?
        .iter()
        .map(access_from_row)
        .collect()
    }
}

fn access_from_row(row: &SqliteRow) -> Result<InstallAccess> {
    let get = |e| backend("decoding an install access row")(e);
    let optional_ip = |column: &str| -> Result<Option<std::net::IpAddr>> {
        row.try_get::<Option<String>, _>(column)
            .map_err(get)?
            .map(|ip| codec::ip(TABLE, column, &ip))
            .transpose()
    };
    Ok(InstallAccess {
        install: codec::uuid(
            TABLE,
            "install_id",
            &row.try_get::<String, _>("install_id").map_err(get)?,
        )?,
        bound_ip: codec::ip(
            TABLE,
            "bound_ip",
            &row.try_get::<String, _>("bound_ip").map_err(get)?,
        )?,
        first_fetch_at: codec::from_millis(TABLE, row.try_get("first_fetch_at").map_err(get)?)?,
        closed_at: row
            .try_get::<Option<i64>, _>("closed_at")
            .map_err(get)?
            .map(|ms| codec::from_millis(TABLE, ms))
            .transpose()?,
        done_ip: optional_ip("done_ip")?,
    })
}
