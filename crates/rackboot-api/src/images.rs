//! `/api/v1/images`: the image catalog deploys write from. An import converts
//! qcow2, raw, raw.zst, raw.xz or raw.gz once into the streaming form (1 MiB
//! zstd frames, SHA-256 of the raw disk); an image a deploy uses cannot be
//! deleted.

use std::path::{Path, PathBuf};

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use rackboot_core::{EventKind, NewEvent};
use rackboot_images::{ImageError, ImageRecord, ImportOptions};
use rackboot_store::WorkflowFilter;
use serde::Deserialize;
use serde_json::json;
use utoipa::ToSchema;

use crate::ApiState;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{ApiJson, ApiPath};

fn images_dir(state: &ApiState) -> ApiResult<PathBuf> {
    state
        .images_dir
        .clone()
        .ok_or_else(|| ApiError::Disabled("this server has no image catalog".into()))
}

fn image_error(e: ImageError) -> ApiError {
    match e {
        ImageError::NotFound { .. } => ApiError::NotFound(e.to_string()),
        ImageError::AlreadyExists { .. } => ApiError::Conflict(e.to_string()),
        ImageError::Io { .. } | ImageError::QemuImg { .. } => ApiError::Internal(e.to_string()),
        other => ApiError::BadRequest(other.to_string()),
    }
}

async fn blocking<T: Send + 'static>(
    what: &str,
    f: impl FnOnce() -> Result<T, ImageError> + Send + 'static,
) -> ApiResult<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::Internal(format!("{what}: {e}")))?
        .map_err(image_error)
}

/// Every image, by name.
#[utoipa::path(get, path = "/api/v1/images", tag = "images",
    responses((status = 200, body = Vec<ImageRecord>)))]
pub async fn list_images(State(state): State<ApiState>) -> ApiResult<Json<Vec<ImageRecord>>> {
    let dir = images_dir(&state)?;
    Ok(Json(
        blocking("listing images", move || rackboot_images::list(&dir)).await?,
    ))
}

#[utoipa::path(get, path = "/api/v1/images/{name}", tag = "images",
    params(("name" = String, Path)),
    responses(
        (status = 200, body = ImageRecord),
        (status = 404, description = "No such image", body = ErrorBody),
    ))]
pub async fn get_image(
    State(state): State<ApiState>,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Json<ImageRecord>> {
    let dir = images_dir(&state)?;
    Ok(Json(
        blocking("reading the image", move || {
            rackboot_images::get(&dir, &name)
        })
        .await?,
    ))
}

/// Body of `POST /api/v1/images`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImportBody {
    /// Catalog name, `[a-z0-9][a-z0-9._-]{0,62}`.
    pub name: String,
    /// A file the server can read (an absolute path on the server host), or
    /// an `http://` URL the server downloads from.
    pub source: String,
    #[serde(default)]
    pub description: String,
    /// The image's OS family (debian, ubuntu, rhel, rhel-ifcfg, suse): decides
    /// which network files a deploy writes.
    #[serde(default)]
    pub os_family: Option<String>,
    /// The image runs cloud-init: deploys add a NoCloud seed.
    #[serde(default)]
    pub cloud_init: bool,
    /// Replace an image of the same name (refused while a deploy uses it).
    #[serde(default)]
    pub replace: bool,
}

/// Imports an image: detected by its magic bytes, converted once, verified by
/// SHA-256. Answers when the image is in the catalog.
#[utoipa::path(post, path = "/api/v1/images", tag = "images", request_body = ImportBody,
    responses(
        (status = 201, description = "Imported", body = ImageRecord),
        (status = 400, description = "Unreadable, unsupported or corrupt source; bad name", body = ErrorBody),
        (status = 409, description = "An image of this name exists (or a deploy uses the one replaced)", body = ErrorBody),
    ))]
pub async fn import_image(
    State(state): State<ApiState>,
    caller: Caller,
    ApiJson(body): ApiJson<ImportBody>,
) -> ApiResult<(StatusCode, Json<ImageRecord>)> {
    let dir = images_dir(&state)?;
    rackboot_images::validate_name(&body.name)
        .map_err(|e| ApiError::BadRequest(format!("name: {e}")))?;
    if let Some(f) = &body.os_family
        && rackboot_install::TargetFamily::parse(f).is_none()
    {
        return Err(ApiError::BadRequest(format!(
            "os_family: {f:?}; use debian, ubuntu, rhel, rhel-ifcfg or suse"
        )));
    }
    if body.replace {
        refuse_if_in_use(&state, &body.name).await?;
    }
    let (path, downloaded) = if body.source.starts_with("http://") {
        (download(&dir, &body.source).await?, true)
    } else {
        let p = PathBuf::from(&body.source);
        if !p.is_absolute() {
            return Err(ApiError::BadRequest(format!(
                "source: {:?} must be an absolute path on the server host or an http:// URL",
                body.source
            )));
        }
        (p, false)
    };
    let options = ImportOptions {
        name: body.name.clone(),
        description: body.description,
        os_family: body.os_family,
        cloud_init: body.cloud_init,
        replace: body.replace,
    };
    let (d, p) = (dir.clone(), path.clone());
    let result = blocking("importing the image", move || {
        rackboot_images::import(&d, &p, &options, &mut |_| {})
    })
    .await;
    if downloaded {
        let _ = std::fs::remove_file(&path);
    }
    let record = result?;
    state.fleet.emit(
        NewEvent::new(
            EventKind::ImageImported,
            format!(
                "image {} imported from {} ({}, {} MiB raw, {} MiB stored)",
                record.name,
                body.source,
                record.source_format,
                record.raw_size >> 20,
                record.compressed_size >> 20
            ),
        )
        .data(json!({"image": record.name, "sha256": record.sha256, "raw_size": record.raw_size, "who": caller.actor().as_str()})),
    );
    Ok((StatusCode::CREATED, Json(record)))
}

/// Downloads an http:// source into the catalog directory (same file system
/// as the import's work directory).
async fn download(dir: &Path, url: &str) -> ApiResult<PathBuf> {
    use futures::StreamExt;
    use tokio::io::AsyncWriteExt;
    tokio::fs::create_dir_all(dir)
        .await
        .map_err(|e| ApiError::Internal(format!("creating {}: {e}", dir.display())))?;
    let path = dir.join(format!(".download-{}", uuid::Uuid::new_v4()));
    let response = reqwest::get(url)
        .await
        .and_then(|r| r.error_for_status())
        .map_err(|e| ApiError::BadRequest(format!("source: downloading {url}: {e}")))?;
    let mut file = tokio::fs::File::create(&path)
        .await
        .map_err(|e| ApiError::Internal(format!("creating {}: {e}", path.display())))?;
    let mut body = response.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = match chunk {
            Ok(c) => c,
            Err(e) => {
                let _ = tokio::fs::remove_file(&path).await;
                return Err(ApiError::BadRequest(format!(
                    "source: downloading {url}: {e}"
                )));
            }
        };
        if let Err(e) = file.write_all(&chunk).await {
            let _ = tokio::fs::remove_file(&path).await;
            return Err(ApiError::Internal(format!(
                "writing {}: {e}",
                path.display()
            )));
        }
    }
    file.flush()
        .await
        .map_err(|e| ApiError::Internal(format!("writing {}: {e}", path.display())))?;
    Ok(path)
}

async fn refuse_if_in_use(state: &ApiState, name: &str) -> ApiResult<()> {
    let active = state
        .fleet
        .list_workflows(&WorkflowFilter {
            machine: None,
            states: vec![
                rackboot_core::WorkflowState::Queued,
                rackboot_core::WorkflowState::Running,
            ],
            limit: u32::MAX,
        })
        .await?;
    if let Some(wf) = active
        .iter()
        .find(|w| w.params.get("image").and_then(|i| i.as_str()) == Some(name))
    {
        return Err(ApiError::Conflict(format!(
            "image {name:?} is used by workflow {} ({})",
            wf.id,
            wf.state.as_str()
        )));
    }
    Ok(())
}

/// Deletes an image, unless a queued or running workflow uses it.
#[utoipa::path(delete, path = "/api/v1/images/{name}", tag = "images",
    params(("name" = String, Path)),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such image", body = ErrorBody),
        (status = 409, description = "A deploy uses it", body = ErrorBody),
    ))]
pub async fn delete_image(
    State(state): State<ApiState>,
    caller: Caller,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<StatusCode> {
    let dir = images_dir(&state)?;
    refuse_if_in_use(&state, &name).await?;
    let target = name.clone();
    blocking("deleting the image", move || {
        rackboot_images::delete(&dir, &target)
    })
    .await?;
    state.fleet.emit(
        NewEvent::new(
            EventKind::ImageDeleted,
            format!("image {name} deleted by {}", caller.actor()),
        )
        .data(json!({"image": name, "who": caller.actor().as_str()})),
    );
    Ok(StatusCode::NO_CONTENT)
}
