//! Redfish driver (DMTF DSP0266) over reqwest.
//!
//! Discovery: service root `/redfish/v1` → `Systems` collection → the one system (or
//! the system path given in the URL). Authentication: a session (POST to the
//! SessionService's Sessions collection, `X-Auth-Token`, DELETE on close), falling back
//! to basic auth when the service has no sessions. Power: `ComputerSystem.Reset` with a
//! reset type the system allows. Boot: `Boot.BootSourceOverride*` by PATCH.
//!
//! Every request has a timeout (connect timeout shorter still), so a dead BMC errors
//! within seconds. Certificates are verified unless the target sets `insecure_tls`.

use std::time::Duration;

use async_trait::async_trait;
use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::sync::Mutex;

use crate::{
    BmcInfo, BmcScheme, BmcTarget, BootDevice, BootDeviceReading, BootMode, BootPersistence,
    DriverOptions, PowerAction, PowerDriver, PowerError, PowerState,
};

const SERVICE_ROOT: &str = "/redfish/v1/";

#[derive(Debug, Clone, PartialEq, Eq)]
enum Auth {
    Session {
        token: String,
        /// The session resource, deleted on close.
        location: Option<String>,
    },
    Basic,
}

/// What discovery learnt about the system; fixed for the driver's life.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SystemInfo {
    path: String,
    reset_target: String,
    /// Empty when the BMC does not say (then any type is tried).
    reset_types: Vec<String>,
    boot_targets: Vec<String>,
    has_boot_mode: bool,
}

#[derive(Debug, Default)]
struct Conn {
    auth: Option<Auth>,
    system: Option<SystemInfo>,
}

pub struct RedfishDriver {
    bmc: String,
    base: String,
    username: String,
    password: String,
    system_path: Option<String>,
    request_timeout: Duration,
    client: reqwest::Client,
    conn: Mutex<Conn>,
}

/// An HTTP answer already checked for success.
struct Reply {
    headers: HeaderMap,
    body: Value,
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut parts = vec![e.to_string()];
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = s.source();
    }
    parts.join(": ")
}

/// The human message inside a Redfish error body, if any.
fn redfish_message(body: &Value) -> Option<String> {
    let err = body.get("error")?;
    err.get("@Message.ExtendedInfo")
        .and_then(|i| i.get(0))
        .and_then(|i| i.get("Message"))
        .or_else(|| err.get("message"))
        .and_then(Value::as_str)
        .map(str::to_string)
}

fn odata_id(v: &Value) -> Option<&str> {
    v.get("@odata.id").and_then(Value::as_str)
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// Redfish `PowerState` → ours. Transitional states count as the state being left
/// (PoweringOn is not on yet), so verification keeps waiting.
pub fn parse_power_state(system: &Value) -> Option<PowerState> {
    match system.get("PowerState")?.as_str()? {
        "On" | "PoweringOff" | "Paused" => Some(PowerState::On),
        "Off" | "PoweringOn" => Some(PowerState::Off),
        _ => None,
    }
}

/// The reset type to send for an action: the first of our preferences the system allows.
pub fn choose_reset_type(action: PowerAction, allowed: &[String]) -> Option<&'static str> {
    let preferences: &[&'static str] = match action {
        PowerAction::On => &["On", "ForceOn"],
        PowerAction::Off => &["ForceOff"],
        PowerAction::SoftOff => &["GracefulShutdown"],
        PowerAction::Cycle => &["PowerCycle", "ForceRestart"],
        PowerAction::Reset => &["ForceRestart", "PowerCycle"],
    };
    if allowed.is_empty() {
        return preferences.first().copied();
    }
    preferences
        .iter()
        .copied()
        .find(|p| allowed.iter().any(|a| a == p))
}

/// Redfish's `BootSourceOverrideTarget` name for a device, both ways.
const BOOT_TARGETS: [(BootDevice, &str); 2] = [(BootDevice::Pxe, "Pxe"), (BootDevice::Disk, "Hdd")];

fn boot_target(device: BootDevice) -> &'static str {
    BOOT_TARGETS
        .iter()
        .find(|(d, _)| *d == device)
        .map_or("Pxe", |(_, name)| name)
}

/// The PATCH body for a boot override.
pub fn boot_override_body(
    device: BootDevice,
    persistence: BootPersistence,
    mode: Option<BootMode>,
    system_has_mode: bool,
) -> Value {
    let mut boot = json!({
        "BootSourceOverrideTarget": boot_target(device),
        "BootSourceOverrideEnabled": match persistence {
            BootPersistence::Once => "Once",
            BootPersistence::Persistent => "Continuous",
        },
    });
    if let (Some(mode), true) = (mode, system_has_mode) {
        boot["BootSourceOverrideMode"] = json!(match mode {
            BootMode::Uefi => "UEFI",
            BootMode::Legacy => "Legacy",
        });
    }
    json!({ "Boot": boot })
}

impl RedfishDriver {
    pub fn new(target: &BmcTarget, options: &DriverOptions) -> Result<RedfishDriver, PowerError> {
        let url = &target.url;
        let scheme = match url.scheme() {
            BmcScheme::RedfishHttps => "https",
            _ => "http",
        };
        let host = if url.host().contains(':') {
            format!("[{}]", url.host())
        } else {
            url.host().to_string()
        };
        let client = reqwest::Client::builder()
            .timeout(options.request_timeout)
            .connect_timeout(options.request_timeout.min(Duration::from_secs(5)))
            .tls_danger_accept_invalid_certs(target.insecure_tls)
            .build()
            .map_err(|e| PowerError::Unsupported {
                bmc: target.redacted(),
                detail: format!("cannot build the HTTP client: {}", error_chain(&e)),
            })?;
        Ok(RedfishDriver {
            bmc: target.redacted(),
            base: format!("{scheme}://{host}:{}", url.port()),
            username: target.username.clone(),
            password: target.password.clone(),
            system_path: url.system_path().map(str::to_string),
            request_timeout: options.request_timeout,
            client,
            conn: Mutex::new(Conn::default()),
        })
    }

    pub(crate) fn boxed(
        target: &BmcTarget,
        options: &DriverOptions,
    ) -> Result<Box<dyn PowerDriver>, PowerError> {
        Ok(Box::new(RedfishDriver::new(target, options)?))
    }

    fn url(&self, path: &str) -> String {
        if path.starts_with("http://") || path.starts_with("https://") {
            path.to_string()
        } else {
            format!("{}{path}", self.base)
        }
    }

    fn transport_error(&self, what: &str, e: reqwest::Error) -> PowerError {
        let chain = error_chain(&e);
        if e.is_timeout() {
            return PowerError::Timeout {
                bmc: self.bmc.clone(),
                during: what.to_string(),
                after: self.request_timeout,
            };
        }
        let lower = chain.to_ascii_lowercase();
        if lower.contains("certificate") {
            return PowerError::Protocol {
                bmc: self.bmc.clone(),
                message: format!(
                    "{what}: TLS certificate not trusted ({chain}); set insecure_tls to accept a self-signed BMC certificate"
                ),
            };
        }
        if e.is_decode() {
            return PowerError::Protocol {
                bmc: self.bmc.clone(),
                message: format!("{what}: {chain}"),
            };
        }
        PowerError::Unreachable {
            bmc: self.bmc.clone(),
            detail: format!("{what}: {chain}"),
        }
    }

    fn status_error(&self, what: &str, status: StatusCode, body: &Value) -> PowerError {
        let message = match redfish_message(body) {
            Some(m) => format!("{what}: HTTP {status}: {m}"),
            None => format!("{what}: HTTP {status}"),
        };
        let bmc = self.bmc.clone();
        match status.as_u16() {
            401 | 403 => PowerError::Authentication {
                bmc,
                detail: message,
            },
            405 | 501 => PowerError::Unsupported {
                bmc,
                detail: message,
            },
            429 | 502 | 503 | 504 => PowerError::Bmc {
                bmc,
                message,
                transient: true,
            },
            _ => PowerError::Bmc {
                bmc,
                message,
                transient: false,
            },
        }
    }

    /// One request; `Ok(Err(status, body))` for a non-2xx answer so callers can decide.
    async fn send(
        &self,
        method: Method,
        path: &str,
        auth: Option<&Auth>,
        body: Option<&Value>,
        if_match: Option<&str>,
    ) -> Result<Result<Reply, (StatusCode, Value)>, PowerError> {
        let what = format!("{method} {path}");
        let mut req = self
            .client
            .request(method, self.url(path))
            .header("Accept", "application/json")
            .header("OData-Version", "4.0");
        match auth {
            Some(Auth::Session { token, .. }) => req = req.header("X-Auth-Token", token),
            Some(Auth::Basic) => req = req.basic_auth(&self.username, Some(&self.password)),
            None => {}
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        if let Some(tag) = if_match {
            req = req.header("If-Match", tag);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| self.transport_error(&what, e))?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| self.transport_error(&what, e))?;
        let body: Value = if bytes.is_empty() {
            Value::Null
        } else {
            match serde_json::from_slice(&bytes) {
                Ok(v) => v,
                Err(_) if !status.is_success() => Value::Null,
                Err(_) if status == StatusCode::NO_CONTENT || status == StatusCode::ACCEPTED => {
                    Value::Null
                }
                Err(e) => {
                    return Err(PowerError::Protocol {
                        bmc: self.bmc.clone(),
                        message: format!("{what}: answer is not JSON: {e}"),
                    });
                }
            }
        };
        if status.is_success() {
            Ok(Ok(Reply { headers, body }))
        } else {
            Ok(Err((status, body)))
        }
    }

    /// Logs in (session, else basic) and discovers the system, once per driver.
    async fn ensure(&self, conn: &mut Conn) -> Result<(Auth, SystemInfo), PowerError> {
        if let (Some(auth), Some(system)) = (&conn.auth, &conn.system) {
            return Ok((auth.clone(), system.clone()));
        }
        let root = match self
            .send(Method::GET, SERVICE_ROOT, None, None, None)
            .await?
        {
            Ok(r) => r.body,
            // Some services want credentials even for the root.
            Err((s, _)) if s == StatusCode::UNAUTHORIZED => {
                match self
                    .send(Method::GET, SERVICE_ROOT, Some(&Auth::Basic), None, None)
                    .await?
                {
                    Ok(r) => r.body,
                    Err((s, b)) => return Err(self.status_error("GET /redfish/v1/", s, &b)),
                }
            }
            Err((s, b)) => return Err(self.status_error("GET /redfish/v1/", s, &b)),
        };
        let auth = match &conn.auth {
            Some(a) => a.clone(),
            None => {
                let a = self.login(&root).await?;
                conn.auth = Some(a.clone());
                a
            }
        };
        let system = self.discover_system(&root, &auth).await?;
        conn.system = Some(system.clone());
        Ok((auth, system))
    }

    async fn login(&self, root: &Value) -> Result<Auth, PowerError> {
        let sessions = root
            .pointer("/Links/Sessions")
            .and_then(odata_id)
            .map(str::to_string)
            .or_else(|| {
                root.get("SessionService")
                    .map(|_| "/redfish/v1/SessionService/Sessions".to_string())
            });
        let Some(sessions) = sessions else {
            tracing::debug!(bmc = %self.bmc, "no SessionService; using basic auth");
            return Ok(Auth::Basic);
        };
        let body = json!({ "UserName": self.username, "Password": self.password });
        match self
            .send(Method::POST, &sessions, None, Some(&body), None)
            .await?
        {
            Ok(reply) => {
                let token = reply
                    .headers
                    .get("X-Auth-Token")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                let location = reply
                    .headers
                    .get("Location")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
                    .or_else(|| odata_id(&reply.body).map(str::to_string));
                match token {
                    Some(token) => Ok(Auth::Session { token, location }),
                    None => Ok(Auth::Basic),
                }
            }
            Err((s, b)) if s == StatusCode::UNAUTHORIZED || s == StatusCode::FORBIDDEN => {
                Err(self.status_error(&format!("POST {sessions} (login)"), s, &b))
            }
            Err((s, _)) => {
                tracing::debug!(bmc = %self.bmc, status = %s, "session login refused; using basic auth");
                Ok(Auth::Basic)
            }
        }
    }

    async fn get(&self, path: &str, auth: &Auth) -> Result<Reply, PowerError> {
        match self.send(Method::GET, path, Some(auth), None, None).await? {
            Ok(r) => Ok(r),
            Err((s, b)) => Err(self.status_error(&format!("GET {path}"), s, &b)),
        }
    }

    async fn discover_system(&self, root: &Value, auth: &Auth) -> Result<SystemInfo, PowerError> {
        let path = match &self.system_path {
            Some(p) => p.clone(),
            None => {
                let systems = root.get("Systems").and_then(odata_id).ok_or_else(|| {
                    PowerError::Unsupported {
                        bmc: self.bmc.clone(),
                        detail: "the service root has no Systems collection".into(),
                    }
                })?;
                let collection = self.get(systems, auth).await?.body;
                let members: Vec<String> = collection
                    .get("Members")
                    .and_then(Value::as_array)
                    .map(|m| m.iter().filter_map(odata_id).map(str::to_string).collect())
                    .unwrap_or_default();
                match members.as_slice() {
                    [one] => one.clone(),
                    [] => {
                        return Err(PowerError::Unsupported {
                            bmc: self.bmc.clone(),
                            detail: format!("{systems} lists no systems"),
                        });
                    }
                    many => {
                        // Never guess which machine to power off.
                        return Err(PowerError::Unsupported {
                            bmc: self.bmc.clone(),
                            detail: format!(
                                "{} systems behind this BMC ({}); put the system path in the URL",
                                many.len(),
                                many.join(", ")
                            ),
                        });
                    }
                }
            }
        };
        let system = self.get(&path, auth).await?.body;
        let reset = system.pointer("/Actions/#ComputerSystem.Reset");
        let reset_target = reset
            .and_then(|r| r.get("target"))
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| format!("{path}/Actions/ComputerSystem.Reset"));
        let mut reset_types =
            strings(reset.and_then(|r| r.get("ResetType@Redfish.AllowableValues")));
        if reset_types.is_empty()
            && let Some(info) = reset
                .and_then(|r| r.get("@Redfish.ActionInfo"))
                .and_then(Value::as_str)
        {
            // The allowed values may live in a separate ActionInfo resource.
            if let Ok(info) = self.get(info, auth).await {
                reset_types = info
                    .body
                    .get("Parameters")
                    .and_then(Value::as_array)
                    .and_then(|ps| {
                        ps.iter()
                            .find(|p| p.get("Name").and_then(Value::as_str) == Some("ResetType"))
                    })
                    .map(|p| strings(p.get("AllowableValues")))
                    .unwrap_or_default();
            }
        }
        let boot = system.get("Boot");
        Ok(SystemInfo {
            path,
            reset_target,
            reset_types,
            boot_targets: strings(
                boot.and_then(|b| b.get("BootSourceOverrideTarget@Redfish.AllowableValues")),
            ),
            has_boot_mode: boot.is_some_and(|b| b.get("BootSourceOverrideMode").is_some()),
        })
    }

    /// Runs `f` with a logged-in connection; a 401 on a session (expired token) logs
    /// in again once.
    async fn with_conn<T>(
        &self,
        f: impl AsyncFn(&RedfishDriver, &Auth, &SystemInfo) -> Result<T, PowerError>,
    ) -> Result<T, PowerError> {
        let mut conn = self.conn.lock().await;
        let (auth, system) = self.ensure(&mut conn).await?;
        match f(self, &auth, &system).await {
            Err(PowerError::Authentication { .. }) if matches!(auth, Auth::Session { .. }) => {
                tracing::debug!(bmc = %self.bmc, "session rejected; logging in again");
                conn.auth = None;
                let (auth, system) = self.ensure(&mut conn).await?;
                f(self, &auth, &system).await
            }
            r => r,
        }
    }
}

#[async_trait]
impl PowerDriver for RedfishDriver {
    async fn power_state(&self) -> Result<PowerState, PowerError> {
        self.with_conn(
            async move |d: &RedfishDriver, auth: &Auth, sys: &SystemInfo| {
                let system = d.get(&sys.path, auth).await?.body;
                parse_power_state(&system).ok_or_else(|| PowerError::Protocol {
                    bmc: d.bmc.clone(),
                    message: format!(
                        "{} has no usable PowerState (got {})",
                        sys.path,
                        system.get("PowerState").unwrap_or(&Value::Null)
                    ),
                })
            },
        )
        .await
    }

    async fn power(&self, action: PowerAction) -> Result<(), PowerError> {
        self.with_conn(
            async move |d: &RedfishDriver, auth: &Auth, sys: &SystemInfo| {
                let reset_type = choose_reset_type(action, &sys.reset_types).ok_or_else(|| {
                    PowerError::Unsupported {
                        bmc: d.bmc.clone(),
                        detail: format!(
                            "power {action}: the system allows only reset types {}",
                            sys.reset_types.join(", ")
                        ),
                    }
                })?;
                let body = json!({ "ResetType": reset_type });
                match d
                    .send(
                        Method::POST,
                        &sys.reset_target,
                        Some(auth),
                        Some(&body),
                        None,
                    )
                    .await?
                {
                    Ok(_) => Ok(()),
                    Err((s, b)) => Err(d.status_error(
                        &format!("POST {} ResetType={reset_type}", sys.reset_target),
                        s,
                        &b,
                    )),
                }
            },
        )
        .await
    }

    async fn set_boot_device(
        &self,
        device: BootDevice,
        persistence: BootPersistence,
        mode: Option<BootMode>,
    ) -> Result<(), PowerError> {
        self.with_conn(async move |d: &RedfishDriver, auth: &Auth, sys: &SystemInfo| {
            let wanted = boot_target(device);
            if !sys.boot_targets.is_empty() && !sys.boot_targets.iter().any(|t| t == wanted) {
                return Err(PowerError::Unsupported {
                    bmc: d.bmc.clone(),
                    detail: format!(
                        "boot target {wanted} not allowed (allowed: {})",
                        sys.boot_targets.join(", ")
                    ),
                });
            }
            if mode.is_some() && !sys.has_boot_mode {
                tracing::debug!(bmc = %d.bmc, "system has no BootSourceOverrideMode; mode left as is");
            }
            let body = boot_override_body(device, persistence, mode, sys.has_boot_mode);
            // Some BMCs (iLO) insist on If-Match with the resource's current ETag.
            let current = d.get(&sys.path, auth).await?;
            let etag = current
                .headers
                .get("ETag")
                .and_then(|v: &HeaderValue| v.to_str().ok())
                .map(str::to_string)
                .or_else(|| {
                    current
                        .body
                        .get("@odata.etag")
                        .and_then(Value::as_str)
                        .map(str::to_string)
                });
            match d
                .send(Method::PATCH, &sys.path, Some(auth), Some(&body), etag.as_deref())
                .await?
            {
                Ok(_) => Ok(()),
                Err((s, b)) => Err(d.status_error(&format!("PATCH {} Boot", sys.path), s, &b)),
            }
        })
        .await
    }

    async fn boot_device(&self) -> Result<BootDeviceReading, PowerError> {
        self.with_conn(
            async move |d: &RedfishDriver, auth: &Auth, sys: &SystemInfo| {
                let system = d.get(&sys.path, auth).await?;
                Ok(boot_reading(&system.body))
            },
        )
        .await
    }

    async fn ping(&self) -> Result<BmcInfo, PowerError> {
        self.with_conn(
            async move |d: &RedfishDriver, auth: &Auth, sys: &SystemInfo| {
                let system = d.get(&sys.path, auth).await?.body;
                let text =
                    |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
                // The BMC's own firmware is on its Manager; best effort.
                let mut firmware = None;
                if let Some(manager) = system.pointer("/Links/ManagedBy/0").and_then(odata_id)
                    && let Ok(m) = d.get(manager, auth).await
                {
                    firmware = text(&m.body, "FirmwareVersion");
                }
                Ok(BmcInfo {
                    protocol: "redfish".into(),
                    vendor: text(&system, "Manufacturer"),
                    model: text(&system, "Model"),
                    firmware,
                    power: parse_power_state(&system),
                })
            },
        )
        .await
    }

    async fn close(&self) {
        let mut conn = self.conn.lock().await;
        if let Some(Auth::Session {
            token,
            location: Some(location),
        }) = conn.auth.take()
        {
            let auth = Auth::Session {
                token,
                location: None,
            };
            match self
                .send(Method::DELETE, &location, Some(&auth), None, None)
                .await
            {
                Ok(Ok(_)) => tracing::debug!(bmc = %self.bmc, "session closed"),
                Ok(Err((s, _))) => {
                    tracing::debug!(bmc = %self.bmc, status = %s, "session delete refused")
                }
                Err(e) => tracing::debug!(bmc = %self.bmc, error = %e, "session delete failed"),
            }
        }
    }
}

/// A ComputerSystem's boot override: `Boot.BootSourceOverrideTarget` while
/// `BootSourceOverrideEnabled` is not "Disabled".
fn boot_reading(system: &Value) -> BootDeviceReading {
    let boot = system.get("Boot");
    let field = |name: &str| boot.and_then(|b| b.get(name)).and_then(Value::as_str);
    if field("BootSourceOverrideEnabled") == Some("Disabled") {
        return BootDeviceReading::Other;
    }
    match field("BootSourceOverrideTarget") {
        Some(target) => BOOT_TARGETS
            .iter()
            .find(|(_, name)| *name == target)
            .map_or(BootDeviceReading::Other, |(d, _)| {
                BootDeviceReading::Device(*d)
            }),
        // A system without the property cannot be checked.
        None => BootDeviceReading::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_override_read_back() {
        let read = |v: Value| boot_reading(&v);
        assert_eq!(
            read(
                json!({"Boot": {"BootSourceOverrideTarget": "Pxe", "BootSourceOverrideEnabled": "Once"}})
            ),
            BootDeviceReading::Device(BootDevice::Pxe)
        );
        assert_eq!(
            read(
                json!({"Boot": {"BootSourceOverrideTarget": "Hdd", "BootSourceOverrideEnabled": "Continuous"}})
            ),
            BootDeviceReading::Device(BootDevice::Disk)
        );
        assert_eq!(
            read(
                json!({"Boot": {"BootSourceOverrideTarget": "Pxe", "BootSourceOverrideEnabled": "Disabled"}})
            ),
            BootDeviceReading::Other
        );
        assert_eq!(
            read(json!({"Boot": {"BootSourceOverrideTarget": "Cd"}})),
            BootDeviceReading::Other
        );
        assert_eq!(read(json!({"Id": "1"})), BootDeviceReading::Unknown);
    }

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn reset_type_follows_what_the_system_allows() {
        let all = s(&[
            "On",
            "ForceOff",
            "GracefulShutdown",
            "GracefulRestart",
            "ForceRestart",
            "Nmi",
            "ForceOn",
            "PowerCycle",
        ]);
        assert_eq!(
            choose_reset_type(PowerAction::Cycle, &all),
            Some("PowerCycle")
        );
        assert_eq!(
            choose_reset_type(PowerAction::Reset, &all),
            Some("ForceRestart")
        );
        let no_cycle = s(&["On", "ForceOff", "GracefulShutdown", "ForceRestart"]);
        assert_eq!(
            choose_reset_type(PowerAction::Cycle, &no_cycle),
            Some("ForceRestart")
        );
        assert_eq!(
            choose_reset_type(PowerAction::SoftOff, &no_cycle),
            Some("GracefulShutdown")
        );
        let force_on_only = s(&["ForceOn", "ForceOff"]);
        assert_eq!(
            choose_reset_type(PowerAction::On, &force_on_only),
            Some("ForceOn")
        );
        assert_eq!(
            choose_reset_type(PowerAction::SoftOff, &force_on_only),
            None
        );
        assert_eq!(choose_reset_type(PowerAction::Off, &[]), Some("ForceOff"));
    }

    #[test]
    fn power_states() {
        for (text, want) in [
            ("On", Some(PowerState::On)),
            ("Off", Some(PowerState::Off)),
            ("PoweringOn", Some(PowerState::Off)),
            ("PoweringOff", Some(PowerState::On)),
            ("Bogus", None),
        ] {
            assert_eq!(
                parse_power_state(&json!({ "PowerState": text })),
                want,
                "{text}"
            );
        }
        assert_eq!(parse_power_state(&json!({})), None);
    }

    #[test]
    fn boot_body() {
        assert_eq!(
            boot_override_body(
                BootDevice::Pxe,
                BootPersistence::Once,
                Some(BootMode::Uefi),
                true
            ),
            json!({"Boot": {"BootSourceOverrideTarget": "Pxe", "BootSourceOverrideEnabled": "Once", "BootSourceOverrideMode": "UEFI"}})
        );
        assert_eq!(
            boot_override_body(
                BootDevice::Disk,
                BootPersistence::Persistent,
                Some(BootMode::Legacy),
                false
            ),
            json!({"Boot": {"BootSourceOverrideTarget": "Hdd", "BootSourceOverrideEnabled": "Continuous"}})
        );
    }

    #[test]
    fn redfish_error_messages() {
        let body = json!({"error": {"code": "Base.1.0.GeneralError", "message": "A general error",
            "@Message.ExtendedInfo": [{"Message": "The property X is read only."}]}});
        assert_eq!(
            redfish_message(&body).as_deref(),
            Some("The property X is read only.")
        );
        let body = json!({"error": {"message": "Incorrect username or password"}});
        assert_eq!(
            redfish_message(&body).as_deref(),
            Some("Incorrect username or password")
        );
        assert_eq!(redfish_message(&json!({})), None);
    }
}
