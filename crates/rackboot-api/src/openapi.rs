//! The OpenAPI 3.1 document, generated from the handlers' `#[utoipa::path]`
//! annotations and the core types' `ToSchema`. The routes registered here are
//! the routes served, so the document cannot drift from the router.

use std::sync::LazyLock;

use axum::http::Method;
use rackboot_core::Role;
use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::{
    ApiState, auth, cluster, events, images, install_menu, installs, lifecycle, machine_query,
    machines, ops, power, profiles, selectors, tokens, webhooks, workflows,
};

const BEARER: &str = "bearer";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "rackboot API",
        version = "1",
        description = "Operator API of rackboot, a bare-metal provisioning server. Every `/api/v1` \
            operation needs `Authorization: Bearer <token>`, a token whose role (viewer, operator or \
            admin; each includes the ones before it) is at least the operation's `x-rackboot-role`. \
            Errors are `{\"error\": \"message\"}`: 400 bad input (the message names the field), \
            401 missing or wrong token, 403 the token's role is not enough (the message names the \
            role needed), 404 not found, 409 conflict.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    tags(
        (name = "machines", description = "Enrolled and discovered machines, their boot intent and timeline"),
        (name = "profiles", description = "Bootable kernels and iPXE scripts"),
        (name = "selectors", description = "Rules choosing a profile for a machine"),
        (name = "power", description = "Out-of-band power and boot device through each machine's BMC"),
        (name = "installs", description = "Unattended OS installs, their templates and the OS catalog"),
        (name = "workflows", description = "Inspect, clean, deploy, undeploy, rescue and operators' workflows: start, follow, retry, abort"),
        (name = "lifecycle", description = "A machine's provisioning state, maintenance flag, transitions and what it waits for"),
        (name = "images", description = "The image catalog deploys write from"),
        (name = "events", description = "Event log and live stream"),
        (name = "webhooks", description = "Alerts: events POSTed as signed JSON to webhooks, through a durable outbox"),
        (name = "ops", description = "Status, leases, metrics and this document"),
        (name = "access", description = "API tokens and their roles"),
    ),
    components(schemas(crate::error::ErrorBody)),
)]
struct ApiDoc;

/// Routes that need a bearer token.
pub(crate) fn v1_routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(machines::list_machines, machines::create_machine))
        .routes(routes!(machines::bulk_create_machines))
        .routes(routes!(machine_query::fleet_summary))
        .routes(routes!(
            machines::get_machine,
            machines::patch_machine,
            machines::delete_machine
        ))
        .routes(routes!(machines::set_boot))
        .routes(routes!(machines::machine_timeline))
        .routes(routes!(profiles::list_profiles))
        .routes(routes!(
            profiles::get_profile,
            profiles::put_profile,
            profiles::delete_profile
        ))
        .routes(routes!(selectors::list_selectors))
        .routes(routes!(
            selectors::get_selector,
            selectors::put_selector,
            selectors::delete_selector
        ))
        .routes(routes!(power::power_action, power::power_status))
        .routes(routes!(power::boot_device))
        .routes(routes!(installs::request_install))
        .routes(routes!(install_menu::request_install_menu))
        .routes(routes!(installs::render_machine))
        .routes(routes!(installs::list_installs))
        .routes(routes!(installs::get_install))
        .routes(routes!(installs::list_templates))
        .routes(routes!(
            installs::get_template,
            installs::put_template,
            installs::delete_template
        ))
        .routes(routes!(installs::list_os))
        .routes(routes!(installs::delete_os))
        .routes(routes!(
            workflows::start_workflows,
            workflows::list_workflows
        ))
        .routes(routes!(workflows::get_workflow))
        .routes(routes!(workflows::retry_workflow))
        .routes(routes!(workflows::abort_workflow))
        .routes(routes!(
            workflows::list_definitions,
            workflows::put_definition
        ))
        .routes(routes!(workflows::delete_definition))
        .routes(routes!(
            lifecycle::set_maintenance,
            lifecycle::clear_maintenance
        ))
        .routes(routes!(lifecycle::transitions))
        .routes(routes!(lifecycle::machine_status))
        .routes(routes!(images::list_images, images::import_image))
        .routes(routes!(images::get_image, images::delete_image))
        .routes(routes!(events::list_events))
        .routes(routes!(events::stream_events))
        .routes(routes!(webhooks::list_webhooks))
        .routes(routes!(
            webhooks::get_webhook,
            webhooks::put_webhook,
            webhooks::delete_webhook
        ))
        .routes(routes!(webhooks::list_deliveries))
        .routes(routes!(webhooks::test_webhook))
        .routes(routes!(ops::status))
        .routes(routes!(ops::list_leases))
        .routes(routes!(cluster::cluster_status))
        .routes(routes!(tokens::whoami))
        .routes(routes!(tokens::list_tokens, tokens::create_token))
        .routes(routes!(tokens::revoke_token))
}

/// Routes open to anyone: metrics scrapers and API tooling.
pub(crate) fn open_routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(ops::metrics))
        .routes(routes!(ops::openapi_json))
}

/// The extension naming the role an operation needs (`viewer`, `operator`,
/// `admin`), from [`auth::ROLES`], the table the router enforces.
pub const ROLE_EXTENSION: &str = "x-rackboot-role";

/// The whole document: token routes marked as needing the bearer scheme and
/// a role (answering 401 without a token and 403 without the role), then
/// the open routes.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let (_, mut doc) = v1_routes().split_for_parts();
    let error = |description: &str| {
        ResponseBuilder::new()
            .description(description)
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("ErrorBody")))
                    .build(),
            )
            .build()
    };
    let unauthorized = error("Missing or wrong bearer token");
    for (path, item) in doc.paths.paths.iter_mut() {
        for (method, op) in [
            (Method::GET, &mut item.get),
            (Method::PUT, &mut item.put),
            (Method::POST, &mut item.post),
            (Method::PATCH, &mut item.patch),
            (Method::DELETE, &mut item.delete),
        ] {
            let Some(op) = op else { continue };
            let role = auth::required_role(&method, path);
            op.security = Some(vec![SecurityRequirement::new(BEARER, Vec::<String>::new())]);
            op.responses
                .responses
                .insert("401".to_string(), unauthorized.clone().into());
            if role != Role::Viewer {
                let forbidden = error(&format!("The token's role is below {role}"));
                op.responses
                    .responses
                    .insert("403".to_string(), forbidden.into());
            }
            op.extensions
                .get_or_insert_with(Default::default)
                .insert(ROLE_EXTENSION.to_string(), role.as_str().into());
        }
    }
    let (_, open) = open_routes().split_for_parts();
    doc.merge(open);
    doc.merge(<crate::openapi_machine::MachineDoc as OpenApi>::openapi());
    describe_every_response(&mut doc);
    doc.components
        .get_or_insert_with(Default::default)
        .add_security_scheme(
            BEARER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An API token: one made with `rackboot token create`, or the server's \
                         admin token (STATE_DIR/admin-token)",
                    ))
                    .build(),
            ),
        );
    doc
}

/// OpenAPI requires a description on every response; an annotation that
/// gives only a status and body gets the status's reason phrase.
fn describe_every_response(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::RefOr;
    for item in doc.paths.paths.values_mut() {
        for op in [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.patch,
            &mut item.delete,
            &mut item.head,
        ]
        .into_iter()
        .flatten()
        {
            for (status, response) in op.responses.responses.iter_mut() {
                if let RefOr::T(r) = response
                    && r.description.trim().is_empty()
                {
                    r.description = status
                        .parse::<u16>()
                        .ok()
                        .and_then(|s| axum::http::StatusCode::from_u16(s).ok())
                        .and_then(|s| s.canonical_reason())
                        .unwrap_or("Response")
                        .to_string();
                }
            }
        }
    }
}

/// The document as served, rendered once.
pub(crate) static OPENAPI_JSON: LazyLock<String> = LazyLock::new(|| {
    openapi()
        .to_pretty_json()
        .unwrap_or_else(|e| format!("{{\"error\": \"cannot render OpenAPI document: {e}\"}}"))
});
