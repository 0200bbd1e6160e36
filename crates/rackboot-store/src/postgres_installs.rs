//! PostgreSQL: install templates and install requests.

use chrono::{DateTime, Utc};
use rackboot_core::{
    BootIntent, InstallRequest, InstallState, InstallTemplate, MachineId, OsFamily,
};
use sqlx::PgConnection;
use sqlx::Row;
use sqlx::postgres::PgRow;

use crate::postgres::PgStore;
use crate::{Result, StoreError, backend, codec};

const LOCAL_DISK: &str = r#"{"kind":"local_disk"}"#;

impl PgStore {
    pub(crate) async fn put_template_impl(&self, t: &InstallTemplate) -> Result<()> {
        let mut tx = self
            .pool()
            .begin()
            .await
            .map_err(backend("beginning write transaction"))?;
        sqlx::query(
            "INSERT INTO install_templates (name, family, description, source, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (name) DO UPDATE SET family = excluded.family, description = excluded.description, \
             source = excluded.source, updated_at = excluded.updated_at",
        )
        .bind(&t.name)
        .bind(t.family.as_str())
        .bind(&t.description)
        .bind(&t.source)
        .bind(crate::truncate_ms(t.created_at))
        .bind(crate::truncate_ms(t.updated_at))
        .execute(&mut *tx)
        .await
        .map_err(backend("writing a template"))?;
        tx.commit().await.map_err(backend("writing a template"))
    }

    pub(crate) async fn get_template_impl(&self, name: &str) -> Result<InstallTemplate> {
        let row = sqlx::query("SELECT * FROM install_templates WHERE name = $1")
            .bind(name)
            .fetch_optional(self.pool())
            .await
            .map_err(backend("reading a template"))?;
        match row {
            Some(row) => template_from_row(&row),
            None => Err(StoreError::NotFound {
                what: "template",
                key: name.to_string(),
            }),
        }
    }

    pub(crate) async fn list_templates_impl(&self) -> Result<Vec<InstallTemplate>> {
        sqlx::query("SELECT * FROM install_templates ORDER BY name")
            .fetch_all(self.pool())
            .await
            .map_err(backend("listing templates"))?
            .iter()
            .map(template_from_row)
            .collect()
    }

    pub(crate) async fn delete_template_impl(&self, name: &str) -> Result<()> {
        let mut tx = self
            .pool()
            .begin()
            .await
            .map_err(backend("beginning write transaction"))?;
        let deleted = sqlx::query("DELETE FROM install_templates WHERE name = $1")
            .bind(name)
            .execute(&mut *tx)
            .await
            .map_err(backend("deleting a template"))?;
        tx.commit().await.map_err(backend("deleting a template"))?;
        if deleted.rows_affected() == 0 {
            return Err(StoreError::NotFound {
                what: "template",
                key: name.to_string(),
            });
        }
        Ok(())
    }

    pub(crate) async fn replace_installs_impl(
        &self,
        machine: MachineId,
        installs: &[InstallRequest],
        intent: &BootIntent,
        at: DateTime<Utc>,
    ) -> Result<()> {
        let ctx = "requesting an install";
        let mut tx = self
            .pool()
            .begin()
            .await
            .map_err(backend("beginning write transaction"))?;
        set_intent_cancelling_installs(&mut tx, machine, intent, at, ctx).await?;
        for install in installs {
            sqlx::query(
                "INSERT INTO installs (id, machine_id, os, template, vars, token, state, requested_at, completed_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            )
            .bind(install.id)
            .bind(machine)
            .bind(&install.os)
            .bind(&install.template)
            .bind(&install.vars)
            .bind(&install.token)
            .bind(install.state.as_str())
            .bind(crate::truncate_ms(install.requested_at))
            .bind(install.completed_at.map(crate::truncate_ms))
            .execute(&mut *tx)
            .await
            .map_err(backend(ctx))?;
        }
        tx.commit().await.map_err(backend(ctx))
    }

    pub(crate) async fn get_install_impl(&self, id: uuid::Uuid) -> Result<InstallRequest> {
        let row = sqlx::query("SELECT * FROM installs WHERE id = $1")
            .bind(id)
            .fetch_optional(self.pool())
            .await
            .map_err(backend("reading an install"))?;
        match row {
            Some(row) => install_from_row(&row),
            None => Err(StoreError::NotFound {
                what: "install",
                key: id.to_string(),
            }),
        }
    }

    pub(crate) async fn list_installs_impl(
        &self,
        machine: Option<MachineId>,
    ) -> Result<Vec<InstallRequest>> {
        let query = match machine {
            Some(m) => sqlx::query(
                "SELECT * FROM installs WHERE machine_id = $1 ORDER BY requested_at, id",
            )
            .bind(m),
            None => sqlx::query("SELECT * FROM installs ORDER BY requested_at, id"),
        };
        query
            .fetch_all(self.pool())
            .await
            .map_err(backend("listing installs"))?
            .iter()
            .map(install_from_row)
            .collect()
    }

    pub(crate) async fn list_pending_installs_impl(&self) -> Result<Vec<InstallRequest>> {
        sqlx::query("SELECT * FROM installs WHERE state = 'pending' ORDER BY requested_at, id")
            .fetch_all(self.pool())
            .await
            .map_err(backend("listing pending installs"))?
            .iter()
            .map(install_from_row)
            .collect()
    }

    pub(crate) async fn advance_install_impl(
        &self,
        id: uuid::Uuid,
        token: &str,
        to: InstallState,
        at: DateTime<Utc>,
    ) -> Result<(InstallRequest, bool)> {
        let ctx = "advancing an install";
        let mut tx = self
            .pool()
            .begin()
            .await
            .map_err(backend("beginning write transaction"))?;
        let row = sqlx::query("SELECT * FROM installs WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(backend(ctx))?;
        let Some(row) = row else {
            return Err(StoreError::NotFound {
                what: "install",
                key: id.to_string(),
            });
        };
        let mut install = install_from_row(&row)?;
        if !crate::check_install_callback(&install, token, to)? {
            return Ok((install, false));
        }
        let completed_at = (to == InstallState::Completed).then_some(crate::truncate_ms(at));
        sqlx::query("UPDATE installs SET state = $2, completed_at = $3 WHERE id = $1")
            .bind(id)
            .bind(to.as_str())
            .bind(completed_at)
            .execute(&mut *tx)
            .await
            .map_err(backend(ctx))?;
        let was_pending = install.state == InstallState::Pending;
        install.state = to;
        install.completed_at = completed_at.map(|_| crate::truncate_ms(at));
        if !was_pending {
            // Installed -> Completed: the machine left the installer already.
            tx.commit().await.map_err(backend(ctx))?;
            return Ok((install, true));
        }
        // The machine's other pending installs (a menu's other entries) are
        // not booted any more: this one installed the machine.
        sqlx::query(
            "UPDATE installs SET state = 'cancelled' WHERE machine_id = $1 AND state = 'pending' AND id <> $2",
        )
        .bind(install.machine)
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(backend(ctx))?;
        // Only the intent this install set is replaced: an operator who changed
        // the machine's intent meanwhile keeps theirs.
        sqlx::query(
            "UPDATE machines SET intent = $2, updated_at = $3 \
             WHERE id = $1 AND (intent->>'kind' = 'install' AND intent->>'id' = $4 \
             OR intent->>'kind' = 'menu' AND intent::text LIKE '%' || $4 || '%')",
        )
        .bind(install.machine)
        .bind(serde_json::from_str::<serde_json::Value>(LOCAL_DISK).expect("valid JSON"))
        .bind(crate::truncate_ms(at))
        .bind(id.to_string())
        .execute(&mut *tx)
        .await
        .map_err(backend(ctx))?;
        tx.commit().await.map_err(backend(ctx))?;
        Ok((install, true))
    }
}

/// Sets a machine's intent (and updated_at) and cancels its pending installs:
/// a machine's pending installs are exactly those its intent references, so
/// any new intent withdraws them; a caller whose intent references installs
/// stores them next, in the same transaction. NotFound if the machine is gone.
pub(crate) async fn set_intent_cancelling_installs(
    tx: &mut PgConnection,
    machine: MachineId,
    intent: &BootIntent,
    at: DateTime<Utc>,
    ctx: &'static str,
) -> Result<()> {
    let updated = sqlx::query("UPDATE machines SET intent = $2, updated_at = $3 WHERE id = $1")
        .bind(machine)
        .bind(codec::json_value(intent))
        .bind(crate::truncate_ms(at))
        .execute(&mut *tx)
        .await
        .map_err(backend(ctx))?;
    if updated.rows_affected() == 0 {
        return Err(StoreError::NotFound {
            what: "machine",
            key: machine.to_string(),
        });
    }
    sqlx::query(
        "UPDATE installs SET state = 'cancelled' WHERE machine_id = $1 AND state IN ('pending', 'installed')",
    )
    .bind(machine)
    .execute(&mut *tx)
    .await
    .map_err(backend(ctx))?;
    Ok(())
}

fn template_from_row(row: &PgRow) -> Result<InstallTemplate> {
    let get = |e| backend("decoding a template row")(e);
    let t = "install_templates";
    let family: String = row.try_get("family").map_err(get)?;
    Ok(InstallTemplate {
        name: row.try_get("name").map_err(get)?,
        family: OsFamily::parse(&family).ok_or_else(|| StoreError::Corrupt {
            table: t,
            detail: format!("unknown family {family:?}"),
        })?,
        description: row.try_get("description").map_err(get)?,
        source: row.try_get("source").map_err(get)?,
        created_at: row.try_get("created_at").map_err(get)?,
        updated_at: row.try_get("updated_at").map_err(get)?,
    })
}

pub(crate) fn install_from_row(row: &PgRow) -> Result<InstallRequest> {
    let get = |e| backend("decoding an install row")(e);
    let t = "installs";
    let state: String = row.try_get("state").map_err(get)?;
    Ok(InstallRequest {
        id: row.try_get("id").map_err(get)?,
        machine: row.try_get("machine_id").map_err(get)?,
        os: row.try_get("os").map_err(get)?,
        template: row.try_get("template").map_err(get)?,
        vars: row.try_get("vars").map_err(get)?,
        token: row.try_get("token").map_err(get)?,
        state: InstallState::parse(&state).ok_or_else(|| StoreError::Corrupt {
            table: t,
            detail: format!("unknown state {state:?}"),
        })?,
        requested_at: row.try_get("requested_at").map_err(get)?,
        completed_at: row.try_get("completed_at").map_err(get)?,
    })
}
