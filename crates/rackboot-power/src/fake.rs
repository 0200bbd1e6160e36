//! `fake://name`: an in-memory BMC for tests. Every driver built for the same name
//! shares one [`FakeBmc`], which tests script: failures for the next calls, a delay
//! before actions take effect (like real hardware), actions that never take effect,
//! per-call latency, and credentials to check.
//!
//! Off unless the process opts in ([`enable`]; `rackboot serve` does when its config
//! says `[power] allow_fake_bmc = true`): a server must not report power actions
//! verified against a BMC that exists only in its own memory.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;

use crate::{
    BmcInfo, BmcTarget, BootDevice, BootDeviceReading, BootMode, BootPersistence, DriverOptions,
    PowerAction, PowerDriver, PowerError, PowerErrorKind, PowerState,
};

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Lets `fake://` URLs be stored and driven in this process (tests, demos).
pub fn enable() {
    ENABLED.store(true, Ordering::Relaxed);
}

/// Whether `fake://` URLs are accepted here (always in this crate's unit tests).
pub fn enabled() -> bool {
    cfg!(test) || ENABLED.load(Ordering::Relaxed)
}

/// The refusal for a `fake://` URL in a process that did not opt in.
pub(crate) fn refused(bmc: String) -> PowerError {
    PowerError::Unsupported {
        bmc,
        detail: "fake:// BMCs exist only in the server's memory, for tests; \
                 set [power] allow_fake_bmc = true to use them"
            .into(),
    }
}

/// The boot override last set on a fake BMC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FakeBoot {
    pub device: BootDevice,
    pub persistence: BootPersistence,
    pub mode: Option<BootMode>,
}

#[derive(Debug)]
struct FakeState {
    power: PowerState,
    /// A state change accepted but not yet visible.
    pending: Option<(PowerState, Instant)>,
    boot: Option<FakeBoot>,
    failures: VecDeque<PowerErrorKind>,
    action_failures: VecDeque<PowerErrorKind>,
    apply_delay: Duration,
    ignore_actions: bool,
    latency: Duration,
    credentials: Option<(String, String)>,
    actions: Vec<PowerAction>,
}

/// One simulated BMC.
#[derive(Debug)]
pub struct FakeBmc {
    name: String,
    state: Mutex<FakeState>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    calls: AtomicUsize,
}

fn registry() -> &'static Mutex<HashMap<String, Arc<FakeBmc>>> {
    static REGISTRY: OnceLock<Mutex<HashMap<String, Arc<FakeBmc>>>> = OnceLock::new();
    REGISTRY.get_or_init(Default::default)
}

impl FakeBmc {
    /// The fake BMC called `name`, created powered off on first use.
    pub fn get(name: &str) -> Arc<FakeBmc> {
        let mut reg = registry().lock().unwrap_or_else(|e| e.into_inner());
        reg.entry(name.to_string())
            .or_insert_with(|| {
                Arc::new(FakeBmc {
                    name: name.to_string(),
                    state: Mutex::new(FakeState {
                        power: PowerState::Off,
                        pending: None,
                        boot: None,
                        failures: VecDeque::new(),
                        action_failures: VecDeque::new(),
                        apply_delay: Duration::ZERO,
                        ignore_actions: false,
                        latency: Duration::ZERO,
                        credentials: None,
                        actions: Vec::new(),
                    }),
                    in_flight: AtomicUsize::new(0),
                    max_in_flight: AtomicUsize::new(0),
                    calls: AtomicUsize::new(0),
                })
            })
            .clone()
    }

    /// Forgets the fake BMC (the next `get` makes a fresh one).
    pub fn remove(name: &str) {
        registry()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FakeState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The state a driver would read now.
    pub fn power(&self) -> PowerState {
        let mut s = self.lock();
        Self::settle(&mut s);
        s.power
    }

    pub fn set_power(&self, state: PowerState) {
        let mut s = self.lock();
        s.power = state;
        s.pending = None;
    }

    pub fn boot(&self) -> Option<FakeBoot> {
        self.lock().boot
    }

    /// The next `count` calls (any method) fail with `kind`, in order after earlier scripted ones.
    pub fn fail_next(&self, kind: PowerErrorKind, count: usize) {
        let mut s = self.lock();
        s.failures.extend(std::iter::repeat_n(kind, count));
    }

    /// The next `count` power actions (only) fail with `kind`; status reads still work.
    pub fn fail_next_actions(&self, kind: PowerErrorKind, count: usize) {
        let mut s = self.lock();
        s.action_failures.extend(std::iter::repeat_n(kind, count));
    }

    /// Accepted actions become visible only after `delay`.
    pub fn set_apply_delay(&self, delay: Duration) {
        self.lock().apply_delay = delay;
    }

    /// Accept actions but never change state (a BMC that lies).
    pub fn set_ignore_actions(&self, ignore: bool) {
        self.lock().ignore_actions = ignore;
    }

    /// Every call takes this long (to observe concurrency).
    pub fn set_latency(&self, latency: Duration) {
        self.lock().latency = latency;
    }

    /// Require these credentials; others get an authentication error.
    pub fn set_credentials(&self, username: &str, password: &str) {
        self.lock().credentials = Some((username.to_string(), password.to_string()));
    }

    /// Power actions accepted so far, in order.
    pub fn actions(&self) -> Vec<PowerAction> {
        self.lock().actions.clone()
    }

    /// Calls of any kind made so far.
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    /// The most calls that were ever in progress at once.
    pub fn max_concurrent_calls(&self) -> usize {
        self.max_in_flight.load(Ordering::SeqCst)
    }

    fn settle(s: &mut FakeState) {
        if let Some((state, at)) = s.pending
            && Instant::now() >= at
        {
            s.power = state;
            s.pending = None;
        }
    }
}

/// The driver for `fake://name`.
pub struct FakeDriver {
    bmc: Arc<FakeBmc>,
    redacted: String,
    username: String,
    password: String,
}

impl FakeDriver {
    pub fn new(target: &BmcTarget) -> FakeDriver {
        FakeDriver {
            bmc: FakeBmc::get(target.url.host()),
            redacted: target.redacted(),
            username: target.username.clone(),
            password: target.password.clone(),
        }
    }

    pub(crate) fn boxed(
        target: &BmcTarget,
        _options: &DriverOptions,
    ) -> Result<Box<dyn PowerDriver>, PowerError> {
        if !enabled() {
            return Err(refused(target.redacted()));
        }
        Ok(Box::new(FakeDriver::new(target)))
    }

    fn error(&self, kind: PowerErrorKind) -> PowerError {
        let bmc = self.redacted.clone();
        let detail = "scripted failure".to_string();
        match kind {
            PowerErrorKind::Authentication => PowerError::Authentication { bmc, detail },
            PowerErrorKind::Unreachable => PowerError::Unreachable { bmc, detail },
            PowerErrorKind::Timeout => PowerError::timeout(&bmc, detail, Duration::ZERO),
            PowerErrorKind::Unsupported => PowerError::Unsupported { bmc, detail },
            PowerErrorKind::Bmc => PowerError::Bmc {
                bmc,
                message: detail,
                transient: false,
            },
            PowerErrorKind::Protocol => PowerError::Protocol {
                bmc,
                message: detail,
            },
            PowerErrorKind::InvalidUrl => PowerError::InvalidUrl(detail),
        }
    }

    /// Common entry of every call: counts, latency, credentials, scripted failures.
    async fn enter(&self) -> Result<InFlight<'_>, PowerError> {
        let guard = InFlight::new(&self.bmc);
        let (latency, failure, creds) = {
            let mut s = self.bmc.lock();
            (s.latency, s.failures.pop_front(), s.credentials.clone())
        };
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        if let Some((user, pass)) = creds
            && (user != self.username || pass != self.password)
        {
            return Err(PowerError::Authentication {
                bmc: self.redacted.clone(),
                detail: "wrong user name or password".into(),
            });
        }
        match failure {
            Some(kind) => Err(self.error(kind)),
            None => Ok(guard),
        }
    }
}

struct InFlight<'a>(&'a FakeBmc);

impl<'a> InFlight<'a> {
    fn new(bmc: &'a FakeBmc) -> Self {
        bmc.calls.fetch_add(1, Ordering::SeqCst);
        let now = bmc.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        bmc.max_in_flight.fetch_max(now, Ordering::SeqCst);
        InFlight(bmc)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

#[async_trait]
impl PowerDriver for FakeDriver {
    async fn power_state(&self) -> Result<PowerState, PowerError> {
        let _call = self.enter().await?;
        Ok(self.bmc.power())
    }

    async fn power(&self, action: PowerAction) -> Result<(), PowerError> {
        let _call = self.enter().await?;
        let failure = self.bmc.lock().action_failures.pop_front();
        if let Some(kind) = failure {
            return Err(self.error(kind));
        }
        let mut s = self.bmc.lock();
        FakeBmc::settle(&mut s);
        if matches!(action, PowerAction::Cycle | PowerAction::Reset) && s.power == PowerState::Off {
            // Like IPMI: "Command not supported in present state".
            return Err(PowerError::Bmc {
                bmc: self.redacted.clone(),
                message: format!("cannot {action} while powered off"),
                transient: false,
            });
        }
        s.actions.push(action);
        if s.ignore_actions {
            return Ok(());
        }
        let at = Instant::now() + s.apply_delay;
        if action == PowerAction::Cycle {
            // Visibly off at once, back on after the delay (as sushy-tools and real BMCs do).
            s.power = PowerState::Off;
        }
        if s.apply_delay.is_zero() {
            s.power = action.expected_state();
            s.pending = None;
        } else {
            s.pending = Some((action.expected_state(), at));
        }
        Ok(())
    }

    async fn set_boot_device(
        &self,
        device: BootDevice,
        persistence: BootPersistence,
        mode: Option<BootMode>,
    ) -> Result<(), PowerError> {
        let _call = self.enter().await?;
        let mut s = self.bmc.lock();
        if !s.ignore_actions {
            s.boot = Some(FakeBoot {
                device,
                persistence,
                mode,
            });
        }
        Ok(())
    }

    async fn boot_device(&self) -> Result<BootDeviceReading, PowerError> {
        let _call = self.enter().await?;
        Ok(match &self.bmc.lock().boot {
            Some(b) => BootDeviceReading::Device(b.device),
            None => BootDeviceReading::Other,
        })
    }

    async fn ping(&self) -> Result<BmcInfo, PowerError> {
        let _call = self.enter().await?;
        Ok(BmcInfo {
            protocol: "fake".into(),
            vendor: Some("rackboot".into()),
            model: Some(format!("fake BMC {}", self.bmc.name())),
            firmware: Some(env!("CARGO_PKG_VERSION").into()),
            power: Some(self.bmc.power()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn driver(name: &str) -> FakeDriver {
        FakeBmc::remove(name);
        FakeDriver::new(&format!("fake://{name}").parse().unwrap())
    }

    #[tokio::test]
    async fn actions_change_state_after_the_delay() {
        let d = driver("fake-unit-delay");
        assert_eq!(d.power_state().await.unwrap(), PowerState::Off);
        // 2 s: the read right after the action must still see the old state
        // even on a loaded machine.
        d.bmc.set_apply_delay(Duration::from_secs(2));
        d.power(PowerAction::On).await.unwrap();
        assert_eq!(d.power_state().await.unwrap(), PowerState::Off);
        tokio::time::sleep(Duration::from_millis(2200)).await;
        assert_eq!(d.power_state().await.unwrap(), PowerState::On);
        d.power(PowerAction::Cycle).await.unwrap();
        assert_eq!(d.power_state().await.unwrap(), PowerState::Off);
        tokio::time::sleep(Duration::from_millis(2200)).await;
        assert_eq!(d.power_state().await.unwrap(), PowerState::On);
        assert_eq!(d.bmc.actions(), vec![PowerAction::On, PowerAction::Cycle]);
    }

    #[tokio::test]
    async fn scripted_failures_then_success() {
        let d = driver("fake-unit-fail");
        d.bmc.fail_next(PowerErrorKind::Unreachable, 2);
        assert_eq!(
            d.power_state().await.unwrap_err().kind(),
            PowerErrorKind::Unreachable
        );
        assert!(d.ping().await.is_err());
        assert!(d.ping().await.is_ok());
        assert_eq!(d.bmc.calls(), 3);
    }

    #[tokio::test]
    async fn wrong_credentials_rejected() {
        let d = driver("fake-unit-creds");
        d.bmc.set_credentials("admin", "right");
        let err = d.ping().await.unwrap_err();
        assert_eq!(err.kind(), PowerErrorKind::Authentication);
        let ok = FakeDriver::new(
            &"fake://fake-unit-creds"
                .parse::<BmcTarget>()
                .unwrap()
                .with_username("admin")
                .with_password("right"),
        );
        assert!(ok.ping().await.is_ok());
    }

    #[tokio::test]
    async fn cycle_while_off_is_refused() {
        let d = driver("fake-unit-cycle-off");
        let err = d.power(PowerAction::Cycle).await.unwrap_err();
        assert_eq!(err.kind(), PowerErrorKind::Bmc);
        assert!(!err.is_transient());
    }
}
