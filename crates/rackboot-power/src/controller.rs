//! The reliability layer over the drivers: at most one operation per BMC at a time, a
//! global limit on operations in flight, retries with exponential backoff on transient
//! errors only, a timeout on every driver call, and verification that each power
//! action took effect (polling the state until it holds or the verify timeout passes).

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::{OwnedMutexGuard, OwnedSemaphorePermit, Semaphore};

use crate::{
    BmcInfo, BmcTarget, BootDevice, BootDeviceReading, BootMode, BootPersistence, DriverOptions,
    PowerAction, PowerDriver, PowerError, PowerState, driver_with_options,
};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PowerConfig {
    /// Operations in flight across all BMCs (each holds a connection or an ipmitool child).
    pub max_concurrent: usize,
    /// Bound on each driver call (one status read, one action, one ping).
    pub call_timeout: Duration,
    /// How long an action may take to show in the power state (on, off, cycle, reset).
    pub verify_timeout: Duration,
    /// Same for a soft off, which waits for the OS to shut down.
    pub soft_off_timeout: Duration,
    /// Pause between status reads while verifying.
    pub poll_interval: Duration,
    /// Extra tries after a transient error (0 = try once).
    pub retries: u32,
    /// First pause before a retry; doubles each time up to `backoff_max`.
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
}

impl Default for PowerConfig {
    fn default() -> Self {
        PowerConfig {
            max_concurrent: 32,
            call_timeout: Duration::from_secs(15),
            verify_timeout: Duration::from_secs(60),
            soft_off_timeout: Duration::from_secs(180),
            poll_interval: Duration::from_secs(2),
            retries: 2,
            backoff_initial: Duration::from_millis(500),
            backoff_max: Duration::from_secs(4),
        }
    }
}

/// What was asked of a BMC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum PowerRequest {
    Power {
        action: PowerAction,
    },
    BootDevice {
        device: BootDevice,
        persistence: BootPersistence,
        mode: Option<BootMode>,
    },
}

impl fmt::Display for PowerRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PowerRequest::Power { action } => write!(f, "power {action}"),
            PowerRequest::BootDevice {
                device,
                persistence,
                mode,
            } => {
                write!(f, "boot device {device:?} ({persistence:?}")?;
                if let Some(m) = mode {
                    write!(f, ", {m:?}")?;
                }
                write!(f, ")")
            }
        }
    }
}

/// A request that succeeded: what was done, how many tries, how long.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PowerOutcome {
    /// Redacted BMC URL.
    pub bmc: String,
    pub request: PowerRequest,
    /// The action actually sent: None when the machine was already in the wanted state;
    /// `On` for a cycle or reset of a machine that was off.
    pub sent: Option<PowerAction>,
    /// The power state seen before acting (power requests only).
    pub initial_state: Option<PowerState>,
    /// The verified state at the end (power requests only).
    pub final_state: Option<PowerState>,
    /// Times the action (or boot setting) was sent, retries included; 0 when none was needed.
    pub attempts: u32,
    #[serde(serialize_with = "millis")]
    pub elapsed: Duration,
}

fn millis<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_millis() as u64)
}

impl fmt::Display for PowerOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} on {}: ", self.request, self.bmc)?;
        match (self.request, self.sent, self.final_state) {
            (PowerRequest::Power { .. }, None, Some(s)) => write!(f, "already {s}")?,
            (PowerRequest::Power { .. }, Some(sent), Some(s)) => {
                write!(f, "sent {sent}, verified {s}")?
            }
            _ => write!(f, "done")?,
        }
        write!(
            f,
            " ({} attempt{}, {} ms)",
            self.attempts,
            if self.attempts == 1 { "" } else { "s" },
            self.elapsed.as_millis()
        )
    }
}

/// A request that failed, with the tries and time it took.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{request} failed after {attempts} attempt(s) in {} ms: {error}", elapsed.as_millis())]
pub struct PowerFailure {
    pub request: PowerRequest,
    #[source]
    pub error: PowerError,
    pub attempts: u32,
    pub elapsed: Duration,
}

type LockMap = Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>;

/// Holds a BMC's turn and a global permit; gives the BMC's lock entry back when last.
struct Slot {
    key: String,
    locks: LockMap,
    guard: Option<OwnedMutexGuard<()>>,
    _permit: Option<OwnedSemaphorePermit>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut map = self.locks.lock().unwrap_or_else(|e| e.into_inner());
        // Entries are cloned only under this map lock, so only the map's reference and
        // our guard's (if we got the lock) mean nobody else waits for this BMC.
        let ours = if self.guard.is_some() { 2 } else { 1 };
        if let Some(lock) = map.get(&self.key)
            && Arc::strong_count(lock) == ours
        {
            map.remove(&self.key);
        }
        self.guard.take();
    }
}

/// What a successful operation did: (action sent, state before, state after).
type Done = (Option<PowerAction>, Option<PowerState>, Option<PowerState>);

type DriverCall<'a, T> = Pin<Box<dyn Future<Output = Result<T, PowerError>> + Send + 'a>>;

/// Runs power operations reliably. Cheap to share behind an `Arc`.
pub struct PowerController {
    config: PowerConfig,
    global: Arc<Semaphore>,
    locks: LockMap,
}

impl PowerController {
    pub fn new(config: PowerConfig) -> PowerController {
        PowerController {
            global: Arc::new(Semaphore::new(config.max_concurrent.max(1))),
            config,
            locks: Default::default(),
        }
    }

    pub fn config(&self) -> &PowerConfig {
        &self.config
    }

    fn bmc_lock(&self, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut map = self.locks.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(key.to_string()).or_default().clone()
    }

    /// Waits for the BMC's turn, then for a global permit (in that order, so requests
    /// queued behind a busy BMC do not hold permits others could use).
    async fn acquire(&self, target: &BmcTarget) -> Slot {
        let key = target.bmc_key();
        let lock = self.bmc_lock(&key);
        let guard = lock.lock_owned().await;
        let permit = self
            .global
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        Slot {
            key,
            locks: self.locks.clone(),
            guard: Some(guard),
            _permit: Some(permit),
        }
    }

    /// Like `acquire`, but None at once when the BMC is busy with another operation
    /// or every global permit is taken.
    fn try_acquire(&self, target: &BmcTarget) -> Option<Slot> {
        let key = target.bmc_key();
        let lock = self.bmc_lock(&key);
        let mut slot = Slot {
            key,
            locks: self.locks.clone(),
            guard: None,
            _permit: None,
        };
        // On any early return the slot's Drop gives back a lock entry made for nothing.
        slot.guard = Some(lock.try_lock_owned().ok()?);
        slot._permit = Some(self.global.clone().try_acquire_owned().ok()?);
        Some(slot)
    }

    fn driver(&self, target: &BmcTarget) -> Result<Box<dyn PowerDriver>, PowerError> {
        // Drivers bound each request a little under the controller's call timeout so
        // their own (more precise) timeout error usually wins.
        let request_timeout = self
            .config
            .call_timeout
            .saturating_sub(Duration::from_millis(500))
            .max(Duration::from_millis(500));
        driver_with_options(target, &DriverOptions { request_timeout })
    }

    /// One driver call under the call timeout, retried with backoff while the error is
    /// transient. Returns the result and the number of tries.
    async fn call<'a, T>(
        &self,
        bmc: &str,
        what: &str,
        retries: u32,
        mut f: impl FnMut() -> DriverCall<'a, T>,
    ) -> (Result<T, PowerError>, u32) {
        let mut delay = self.config.backoff_initial;
        let mut tries = 0;
        loop {
            tries += 1;
            let result = match tokio::time::timeout(self.config.call_timeout, f()).await {
                Ok(r) => r,
                Err(_) => Err(PowerError::timeout(bmc, what, self.config.call_timeout)),
            };
            match result {
                Err(e) if e.is_transient() && tries <= retries => {
                    tracing::debug!(bmc, what, error = %e, tries, "transient BMC error; retrying");
                    metrics::counter!("rackboot_power_retries_total", "kind" => e.kind().as_str())
                        .increment(1);
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(self.config.backoff_max);
                }
                r => return (r, tries),
            }
        }
    }

    /// Applies a power action and verifies it took effect. Idempotent: asking for the
    /// state the machine is already in sends nothing; a cycle or reset of a machine
    /// that is off powers it on.
    pub async fn power(
        &self,
        target: &BmcTarget,
        action: PowerAction,
    ) -> Result<PowerOutcome, PowerFailure> {
        let request = PowerRequest::Power { action };
        let start = Instant::now();
        let _slot = self.acquire(target).await;
        let mut attempts = 0;
        let result = match self.driver(target) {
            Ok(driver) => {
                let r = self
                    .power_with(&*driver, target, action, &mut attempts)
                    .await;
                self.close(&*driver).await;
                r
            }
            Err(e) => Err(e),
        };
        self.finish(target, request, result, attempts, start)
    }

    async fn power_with(
        &self,
        driver: &dyn PowerDriver,
        target: &BmcTarget,
        action: PowerAction,
        attempts: &mut u32,
    ) -> Result<Done, PowerError> {
        let bmc = target.redacted();
        let retries = self.config.retries;
        let (initial, _) = self
            .call(&bmc, "reading the power state", retries, || {
                driver.power_state()
            })
            .await;
        let initial = initial?;
        let send = match (action, initial) {
            (PowerAction::On, PowerState::On)
            | (PowerAction::Off | PowerAction::SoftOff, PowerState::Off) => None,
            (PowerAction::Cycle | PowerAction::Reset, PowerState::Off) => Some(PowerAction::On),
            (a, _) => Some(a),
        };
        let Some(send) = send else {
            return Ok((None, Some(initial), Some(initial)));
        };
        let what = format!("sending power {send}");
        let (sent, tries) = self.call(&bmc, &what, retries, || driver.power(send)).await;
        *attempts = tries;
        sent?;
        let final_state = self.verify(driver, &bmc, send).await?;
        Ok((Some(send), Some(initial), Some(final_state)))
    }

    /// A BMC can accept a boot override and not apply it (a firmware that only
    /// takes some devices, a wrong mode bit): read it back where the driver can.
    async fn read_boot_device_back(
        &self,
        driver: &dyn PowerDriver,
        bmc: &str,
        device: BootDevice,
    ) -> Result<(), PowerError> {
        let (read, _) = self
            .call(
                bmc,
                "reading the boot device back",
                self.config.retries,
                || driver.boot_device(),
            )
            .await;
        match read? {
            BootDeviceReading::Unknown => Ok(()),
            BootDeviceReading::Device(d) if d == device => Ok(()),
            other => Err(PowerError::Bmc {
                bmc: bmc.to_string(),
                message: format!("accepted boot device {device} but reads back {other}"),
                transient: false,
            }),
        }
    }

    /// Polls the state until the action's expected state holds or the verify timeout.
    async fn verify(
        &self,
        driver: &dyn PowerDriver,
        bmc: &str,
        sent: PowerAction,
    ) -> Result<PowerState, PowerError> {
        let expected = sent.expected_state();
        let limit = match sent {
            PowerAction::SoftOff => self.config.soft_off_timeout,
            _ => self.config.verify_timeout,
        };
        let start = Instant::now();
        let deadline = start + limit;
        // A cycle or reset ends in the state it started from: give the BMC one
        // interval to begin before believing an "on".
        if matches!(sent, PowerAction::Cycle | PowerAction::Reset) {
            tokio::time::sleep(self.config.poll_interval.min(limit)).await;
        }
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let bound = self
                .config
                .call_timeout
                .min(remaining.max(Duration::from_millis(1)));
            let last = match tokio::time::timeout(bound, driver.power_state()).await {
                Ok(Ok(state)) if state == expected => return Ok(state),
                Ok(Ok(state)) => format!("still {state}"),
                Ok(Err(e)) if !e.is_transient() => return Err(e),
                Ok(Err(e)) => e.to_string(),
                Err(_) => "status read timed out".to_string(),
            };
            let now = Instant::now();
            if now >= deadline {
                return Err(PowerError::timeout(
                    bmc,
                    format!("waiting for power {expected} after {sent} (last: {last})"),
                    now - start,
                ));
            }
            tokio::time::sleep(self.config.poll_interval.min(deadline - now)).await;
        }
    }

    /// Sets the next boot device. Not verified: the trait has no portable read-back
    /// (most BMCs clear a one-time override when the machine boots anyway).
    pub async fn set_boot_device(
        &self,
        target: &BmcTarget,
        device: BootDevice,
        persistence: BootPersistence,
        mode: Option<BootMode>,
    ) -> Result<PowerOutcome, PowerFailure> {
        let request = PowerRequest::BootDevice {
            device,
            persistence,
            mode,
        };
        let start = Instant::now();
        let _slot = self.acquire(target).await;
        let mut attempts = 0;
        let result = match self.driver(target) {
            Ok(driver) => {
                let bmc = target.redacted();
                let (r, tries) = self
                    .call(&bmc, "setting the boot device", self.config.retries, || {
                        driver.set_boot_device(device, persistence, mode)
                    })
                    .await;
                attempts = tries;
                let r = match r {
                    Ok(()) => self.read_boot_device_back(&*driver, &bmc, device).await,
                    Err(e) => Err(e),
                };
                self.close(&*driver).await;
                r.map(|()| (None, None, None))
            }
            Err(e) => Err(e),
        };
        self.finish(target, request, result, attempts, start)
    }

    /// The current power state, retried on transient errors. Waits its turn behind any
    /// operation already running on the same BMC.
    pub async fn power_state(&self, target: &BmcTarget) -> Result<PowerState, PowerError> {
        let _slot = self.acquire(target).await;
        self.read_state(target).await
    }

    /// The current power state, or None at once if the BMC is busy with another
    /// operation or the global limit is reached (for background polling).
    pub async fn power_state_if_idle(
        &self,
        target: &BmcTarget,
    ) -> Option<Result<PowerState, PowerError>> {
        let _slot = self.try_acquire(target)?;
        Some(self.read_state(target).await)
    }

    async fn read_state(&self, target: &BmcTarget) -> Result<PowerState, PowerError> {
        let driver = self.driver(target)?;
        let (r, _) = self
            .call(
                &target.redacted(),
                "reading the power state",
                self.config.retries,
                || driver.power_state(),
            )
            .await;
        self.close(&*driver).await;
        r
    }

    /// Reachability and identity; one try (a health check should answer fast).
    pub async fn ping(&self, target: &BmcTarget) -> Result<BmcInfo, PowerError> {
        let _slot = self.acquire(target).await;
        let driver = self.driver(target)?;
        let (r, _) = self
            .call(&target.redacted(), "pinging the BMC", 0, || driver.ping())
            .await;
        self.close(&*driver).await;
        r
    }

    async fn close(&self, driver: &dyn PowerDriver) {
        if tokio::time::timeout(self.config.call_timeout, driver.close())
            .await
            .is_err()
        {
            tracing::debug!("closing the BMC session timed out");
        }
    }

    fn finish(
        &self,
        target: &BmcTarget,
        request: PowerRequest,
        result: Result<Done, PowerError>,
        attempts: u32,
        start: Instant,
    ) -> Result<PowerOutcome, PowerFailure> {
        let elapsed = start.elapsed();
        let op = match request {
            PowerRequest::Power { action } => action.as_str(),
            PowerRequest::BootDevice { .. } => "boot_device",
        };
        metrics::histogram!("rackboot_power_operation_seconds", "op" => op)
            .record(elapsed.as_secs_f64());
        match result {
            Ok((sent, initial_state, final_state)) => {
                metrics::counter!("rackboot_power_operations_total", "op" => op, "result" => "ok")
                    .increment(1);
                let outcome = PowerOutcome {
                    bmc: target.redacted(),
                    request,
                    sent,
                    initial_state,
                    final_state,
                    attempts,
                    elapsed,
                };
                tracing::info!("{outcome}");
                Ok(outcome)
            }
            Err(error) => {
                metrics::counter!("rackboot_power_operations_total", "op" => op, "result" => error.kind().as_str())
                    .increment(1);
                let failure = PowerFailure {
                    request,
                    error,
                    attempts,
                    elapsed,
                };
                tracing::warn!("{failure}");
                Err(failure)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PowerErrorKind;
    use crate::fake::FakeBmc;

    fn fast() -> PowerConfig {
        PowerConfig {
            max_concurrent: 8,
            call_timeout: Duration::from_millis(500),
            verify_timeout: Duration::from_millis(800),
            soft_off_timeout: Duration::from_millis(800),
            poll_interval: Duration::from_millis(20),
            retries: 2,
            backoff_initial: Duration::from_millis(10),
            backoff_max: Duration::from_millis(40),
        }
    }

    fn fresh(name: &str) -> (BmcTarget, Arc<FakeBmc>) {
        FakeBmc::remove(name);
        (
            format!("fake://{name}").parse().unwrap(),
            FakeBmc::get(name),
        )
    }

    #[tokio::test]
    async fn retries_transient_action_errors() {
        let (target, bmc) = fresh("ctl-retry");
        bmc.fail_next_actions(PowerErrorKind::Unreachable, 2);
        let c = PowerController::new(fast());
        let out = c.power(&target, PowerAction::On).await.unwrap();
        assert_eq!(out.attempts, 3);
        assert_eq!(out.sent, Some(PowerAction::On));
        assert_eq!(
            (out.initial_state, out.final_state),
            (Some(PowerState::Off), Some(PowerState::On))
        );
        assert_eq!(bmc.power(), PowerState::On);

        // One retry allowed, two failures scripted: the error comes back, after 2 tries.
        let c = PowerController::new(PowerConfig {
            retries: 1,
            ..fast()
        });
        bmc.fail_next_actions(PowerErrorKind::Timeout, 2);
        let err = c.power(&target, PowerAction::Off).await.unwrap_err();
        assert_eq!(
            (err.attempts, err.error.kind()),
            (2, PowerErrorKind::Timeout)
        );
        assert_eq!(bmc.power(), PowerState::On);
    }

    #[tokio::test]
    async fn never_retries_authentication_or_unsupported() {
        for kind in [PowerErrorKind::Authentication, PowerErrorKind::Unsupported] {
            let (target, bmc) = fresh(&format!("ctl-noretry-{}", kind.as_str()));
            bmc.fail_next_actions(kind, 5);
            let c = PowerController::new(fast());
            let err = c.power(&target, PowerAction::On).await.unwrap_err();
            assert_eq!((err.attempts, err.error.kind()), (1, kind));
            // One status read, one action.
            assert_eq!(bmc.calls(), 2);
        }
        // Wrong credentials fail the first read, before any action.
        let (target, bmc) = fresh("ctl-creds");
        bmc.set_credentials("admin", "right");
        let err = PowerController::new(fast())
            .power(&target, PowerAction::On)
            .await
            .unwrap_err();
        assert_eq!(
            (err.attempts, err.error.kind()),
            (0, PowerErrorKind::Authentication)
        );
        assert_eq!(bmc.calls(), 1);
    }

    #[tokio::test]
    async fn verify_times_out_when_the_state_never_changes() {
        let (target, bmc) = fresh("ctl-verify-timeout");
        bmc.set_ignore_actions(true);
        let start = Instant::now();
        let err = PowerController::new(fast())
            .power(&target, PowerAction::On)
            .await
            .unwrap_err();
        let took = start.elapsed();
        assert_eq!(err.error.kind(), PowerErrorKind::Timeout);
        let text = err.to_string();
        assert!(
            text.contains("waiting for power on after on (last: still off)"),
            "{text}"
        );
        assert!(text.contains("fake://ctl-verify-timeout"), "{text}");
        // Upper bound only catches hangs (~0.8 s normally; verify uses std time).
        assert!(
            took >= Duration::from_millis(800) && took < Duration::from_secs(10),
            "{took:?}"
        );
        assert_eq!(
            bmc.actions(),
            vec![PowerAction::On],
            "a verify timeout is not retried"
        );
    }

    #[tokio::test]
    async fn verify_waits_for_a_slow_bmc_and_tolerates_transient_reads() {
        let (target, bmc) = fresh("ctl-verify-slow");
        bmc.set_power(PowerState::On);
        bmc.set_apply_delay(Duration::from_millis(200));
        let c = PowerController::new(fast());
        let out = c.power(&target, PowerAction::Cycle).await.unwrap();
        assert!(out.elapsed >= Duration::from_millis(200), "{out}");
        assert_eq!(out.final_state, Some(PowerState::On));

        bmc.set_apply_delay(Duration::from_millis(100));
        let slow_off = tokio::spawn({
            let target = target.clone();
            async move {
                PowerController::new(fast())
                    .power(&target, PowerAction::Off)
                    .await
            }
        });
        tokio::time::sleep(Duration::from_millis(30)).await;
        bmc.fail_next(PowerErrorKind::Unreachable, 2);
        let out = slow_off.await.unwrap().unwrap();
        assert_eq!(out.final_state, Some(PowerState::Off));
    }

    #[tokio::test]
    async fn idempotent_and_cycle_of_an_off_machine_powers_on() {
        let (target, bmc) = fresh("ctl-idem");
        let c = PowerController::new(fast());
        let out = c.power(&target, PowerAction::Off).await.unwrap();
        assert_eq!((out.sent, out.attempts), (None, 0));
        assert!(out.to_string().contains("already off"), "{out}");
        let out = c.power(&target, PowerAction::Cycle).await.unwrap();
        assert_eq!(out.sent, Some(PowerAction::On));
        assert_eq!(bmc.actions(), vec![PowerAction::On]);
        let out = c.power(&target, PowerAction::Reset).await.unwrap();
        assert_eq!(out.sent, Some(PowerAction::Reset));
    }

    // Paused clock: the fake's latency and the call timeout are tokio timers,
    // so the bound is exact, not at the mercy of a loaded machine.
    #[tokio::test(start_paused = true)]
    async fn hanging_calls_time_out_within_bounds() {
        let (target, bmc) = fresh("ctl-hang");
        bmc.set_latency(Duration::from_secs(30));
        let start = tokio::time::Instant::now();
        let err = PowerController::new(fast())
            .power(&target, PowerAction::On)
            .await
            .unwrap_err();
        // 3 reads of 500 ms plus 10 + 20 ms of backoff.
        assert_eq!(err.error.kind(), PowerErrorKind::Timeout);
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "{:?}",
            start.elapsed()
        );
        assert_eq!(bmc.calls(), 3);
    }

    #[tokio::test]
    async fn one_operation_per_bmc_at_a_time() {
        let (target, bmc) = fresh("ctl-serial");
        bmc.set_latency(Duration::from_millis(40));
        let c = Arc::new(PowerController::new(fast()));
        let tasks: Vec<_> = (0..5)
            .map(|i| {
                let (c, target) = (c.clone(), target.clone());
                tokio::spawn(async move {
                    if i % 2 == 0 {
                        c.power_state(&target).await.map(drop)
                    } else {
                        c.set_boot_device(&target, BootDevice::Pxe, BootPersistence::Once, None)
                            .await
                            .map(drop)
                            .map_err(|f| f.error)
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        // Three state reads; two boot-device sets, each read back.
        assert_eq!(bmc.calls(), 7);
        assert_eq!(bmc.max_concurrent_calls(), 1);
        // The same BMC through another scheme's URL shares the key; others do not.
        assert_ne!(target.bmc_key(), "fake:other");
        assert!(
            c.locks.lock().unwrap().is_empty(),
            "lock entries given back"
        );
    }

    #[tokio::test]
    async fn busy_bmc_is_skipped_by_power_state_if_idle() {
        let (target, bmc) = fresh("ctl-idle");
        bmc.set_latency(Duration::from_millis(200));
        let c = Arc::new(PowerController::new(fast()));
        let busy = tokio::spawn({
            let (c, target) = (c.clone(), target.clone());
            async move { c.power_state(&target).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(c.power_state_if_idle(&target).await.is_none());
        assert_eq!(busy.await.unwrap().unwrap(), PowerState::Off);
        assert_eq!(
            c.power_state_if_idle(&target).await,
            Some(Ok(PowerState::Off))
        );
        assert!(c.locks.lock().unwrap().is_empty());
    }

    // Paused clock: latency, permits and timeouts are tokio-timed, so both
    // bounds hold exactly however loaded the machine is.
    #[tokio::test(start_paused = true)]
    async fn global_limit_bounds_operations_in_flight() {
        let targets: Vec<_> = (0..6)
            .map(|i| {
                let (t, bmc) = fresh(&format!("ctl-global-{i}"));
                bmc.set_latency(Duration::from_millis(200));
                t
            })
            .collect();
        let run = |limit: usize| {
            let targets = targets.clone();
            async move {
                let c = Arc::new(PowerController::new(PowerConfig {
                    max_concurrent: limit,
                    ..fast()
                }));
                let start = tokio::time::Instant::now();
                let tasks: Vec<_> = targets
                    .into_iter()
                    .map(|t| {
                        let c = c.clone();
                        tokio::spawn(async move { c.power_state(&t).await })
                    })
                    .collect();
                for t in tasks {
                    t.await.unwrap().unwrap();
                }
                start.elapsed()
            }
        };
        let limited = run(2).await;
        assert!(
            limited >= Duration::from_millis(600),
            "limit 2: {limited:?}"
        );
        let unlimited = run(6).await;
        assert!(
            unlimited < Duration::from_millis(500),
            "limit 6: {unlimited:?}"
        );
    }

    #[tokio::test]
    async fn boot_device_sent_once_with_mode() {
        let (target, _) = fresh("ctl-boot");
        let c = PowerController::new(fast());
        let out = c
            .set_boot_device(
                &target,
                BootDevice::Disk,
                BootPersistence::Persistent,
                Some(BootMode::Uefi),
            )
            .await
            .unwrap();
        assert_eq!(out.attempts, 1);
        let boot = FakeBmc::get("ctl-boot").boot().unwrap();
        assert_eq!(
            c.driver(&target).unwrap().boot_device().await.unwrap(),
            BootDeviceReading::Device(BootDevice::Disk)
        );
        assert_eq!(
            (boot.device, boot.persistence, boot.mode),
            (
                BootDevice::Disk,
                BootPersistence::Persistent,
                Some(BootMode::Uefi)
            )
        );
    }

    #[tokio::test]
    async fn boot_device_a_bmc_ignores_is_a_failure() {
        let (target, bmc) = fresh("ctl-boot-ignored");
        bmc.set_ignore_actions(true);
        let c = PowerController::new(fast());
        let err = c
            .set_boot_device(&target, BootDevice::Pxe, BootPersistence::Once, None)
            .await
            .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("accepted boot device pxe but reads back no override"),
            "{text}"
        );
        assert!(bmc.boot().is_none());
    }
}
