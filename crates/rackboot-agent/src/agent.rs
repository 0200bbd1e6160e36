//! The agent's main loop: `Hello` until the server answers, then heartbeats;
//! a command runs on a worker thread while this thread keeps heartbeating,
//! posts progress (at most once per `progress_every`) and, when the step
//! ends, its result (retried until the server takes it).

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rackboot_agent_proto::{
    Action, Command, Heartbeat, Hello, HelloReply, PROTOCOL_VERSION, RunningStep, StepOutput,
    StepReport, error_codes,
};

use crate::alog;
use crate::client::{ApiError, Client};
use crate::context::{Env, StepContext, StepError, Tuning};
use crate::logbuf;
use crate::steps::{self, inspect, power::PowerAction};

/// Waits of the loop. The defaults are the protocol's; tests shorten them.
#[derive(Debug, Clone)]
pub struct Timing {
    /// Retry waits grow from `backoff_min` to `backoff_max` (jittered ±20%).
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// Wait after a 401/403 (the token may become valid, or the machine reboots).
    pub auth_retry: Duration,
    /// Least time between two progress posts.
    pub progress_every: Duration,
}

impl Default for Timing {
    fn default() -> Timing {
        Timing {
            backoff_min: Duration::from_secs(1),
            backoff_max: Duration::from_secs(30),
            auth_retry: Duration::from_secs(30),
            progress_every: Duration::from_secs(1),
        }
    }
}

/// Why [`Agent::run`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// A reboot or power-off was reported `Accepted`: do it now.
    Power(PowerAction),
    /// The stop flag was set (tests).
    Stopped,
}

/// Exponential backoff with jitter that says when a failure is worth a log
/// line: at each new step, then every tenth failure at the ceiling.
#[derive(Debug)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    current: Option<Duration>,
    failures_at_max: u32,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Backoff {
        Backoff {
            min,
            max,
            current: None,
            failures_at_max: 0,
        }
    }

    pub fn reset(&mut self) {
        self.current = None;
        self.failures_at_max = 0;
    }

    /// The un-jittered wait after one more failure, and whether to log it.
    pub fn step(&mut self) -> (Duration, bool) {
        let next = match self.current {
            None => self.min,
            Some(c) => (c * 2).min(self.max),
        };
        let new_step = self.current != Some(next);
        self.current = Some(next);
        if next == self.max && !new_step {
            self.failures_at_max += 1;
        }
        (next, new_step || self.failures_at_max.is_multiple_of(10))
    }

    /// The next wait, jittered, and whether to log the failure.
    pub fn next_wait(&mut self) -> (Duration, bool) {
        let (d, log) = self.step();
        (jitter(d), log)
    }
}

/// ±20%, so a rack of agents restarted together does not retry in lockstep.
pub fn jitter(d: Duration) -> Duration {
    let r = (crate::random::uuid().as_u128() % 1000) as f64 / 1000.0;
    d.mul_f64(0.8 + 0.4 * r)
}

struct Running {
    attempt: uuid::Uuid,
    step: String,
    power: Option<PowerAction>,
    ctx: StepContext,
    rx: mpsc::Receiver<Result<StepOutput, StepError>>,
    deadline: Instant,
    posted_version: u64,
    last_post: Option<Instant>,
}

pub struct Agent {
    client: Client,
    env: Arc<Env>,
    pub timing: Timing,
    pub tuning: Tuning,
    instance: uuid::Uuid,
    boot_id: String,
    stop: Arc<AtomicBool>,
}

impl Agent {
    pub fn new(client: Client, env: Env) -> Agent {
        let boot_id = if env.sim.is_some() {
            // Every simulated agent process is one boot of its own machine.
            crate::random::uuid().to_string()
        } else {
            inspect::boot_id(&env)
        };
        Agent {
            client,
            env: Arc::new(env),
            timing: Timing::default(),
            tuning: Tuning::default(),
            instance: crate::random::uuid(),
            boot_id,
            stop: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Set it to make [`Agent::run`] return (a running step is cancelled).
    pub fn stop_flag(&self) -> Arc<AtomicBool> {
        self.stop.clone()
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Sleeps, waking early when stopped. False when stopped.
    fn pause(&self, d: Duration) -> bool {
        let end = Instant::now() + d;
        while !self.stopped() {
            let now = Instant::now();
            if now >= end {
                return true;
            }
            std::thread::sleep((end - now).min(Duration::from_millis(50)));
        }
        false
    }

    fn log_auth(&self, what: &str, e: &ApiError) {
        alog!(
            "{what}: the server refuses this agent's token ({e}). The token is not (or no \
             longer) valid for this machine or address; a newer boot of the machine revokes \
             older tokens. Retrying every {:?}.",
            self.timing.auth_retry
        );
    }

    /// Says hello until the server answers.
    fn hello(&self) -> Option<HelloReply> {
        let hello = Hello {
            protocol: PROTOCOL_VERSION,
            agent_version: env!("CARGO_PKG_VERSION").to_string(),
            boot_id: self.boot_id.clone(),
            instance: self.instance,
            macs: inspect::macs(&self.env),
            // A restarted agent never resumes a half-done step: the server
            // fails that attempt and retries it.
            running: None,
        };
        let mut backoff = Backoff::new(self.timing.backoff_min, self.timing.backoff_max);
        let mut auth_logged = false;
        while !self.stopped() {
            match self.client.hello(&hello) {
                Ok(reply) => {
                    alog!(
                        "registered with {} as {} ({}), heartbeat every {} s, macs {}",
                        self.client.base(),
                        reply.machine_name,
                        reply.machine_id,
                        reply.heartbeat_secs,
                        hello.macs.join(",")
                    );
                    return Some(reply);
                }
                Err(e) if e.is_auth() => {
                    if !auth_logged {
                        self.log_auth("hello", &e);
                        auth_logged = true;
                    }
                    self.pause(self.timing.auth_retry);
                }
                Err(e) => {
                    let (d, log) = backoff.next_wait();
                    if log {
                        alog!("hello failed: {e}; retrying in {:.1} s", d.as_secs_f64());
                    }
                    self.pause(d);
                }
            }
        }
        None
    }

    /// Runs until a power action is due or the stop flag is set.
    pub fn run(&self) -> Exit {
        alog!(
            "rackboot-agent {} starting (instance {}, boot {}){}",
            env!("CARGO_PKG_VERSION"),
            self.instance,
            self.boot_id,
            if self.env.sim.is_some() {
                ", simulation mode"
            } else {
                ""
            }
        );
        let Some(mut reply) = self.hello() else {
            return Exit::Stopped;
        };
        let mut running: Option<Running> = None;
        let mut next_heartbeat = Instant::now();
        let mut backoff = Backoff::new(self.timing.backoff_min, self.timing.backoff_max);
        let mut auth_logged = false;
        loop {
            if self.stopped() {
                if let Some(r) = &running {
                    r.ctx.cancel.store(true, Ordering::Relaxed);
                }
                return Exit::Stopped;
            }
            if let Some(r) = running.as_mut() {
                match r.rx.try_recv() {
                    Ok(result) => {
                        let r = running.take().expect("running");
                        if let Some(exit) = self.finish(r, result) {
                            return exit;
                        }
                        next_heartbeat = Instant::now();
                        continue;
                    }
                    Err(mpsc::TryRecvError::Empty) => {}
                    Err(mpsc::TryRecvError::Disconnected) => {
                        let r = running.take().expect("running");
                        let e =
                            StepError::new(error_codes::IO, "the step's thread vanished", false);
                        if let Some(exit) = self.finish(r, Err(e)) {
                            return exit;
                        }
                        next_heartbeat = Instant::now();
                        continue;
                    }
                }
                if Instant::now() > r.deadline && !r.ctx.is_cancelled() {
                    alog!(
                        "{} ({}) ran past its timeout: cancelling it",
                        r.step,
                        r.attempt
                    );
                    r.ctx.cancel.store(true, Ordering::Relaxed);
                }
                self.maybe_post_progress(r);
            }
            if Instant::now() >= next_heartbeat {
                let hb = Heartbeat {
                    instance: self.instance,
                    running: running.as_ref().map(|r| RunningStep {
                        attempt: r.attempt,
                        progress: r.ctx.progress.snapshot(),
                    }),
                };
                match self.client.heartbeat(&hb) {
                    Ok(hb_reply) => {
                        backoff.reset();
                        auth_logged = false;
                        next_heartbeat = Instant::now()
                            + Duration::from_secs(u64::from(reply.heartbeat_secs.max(1)));
                        if let Some(r) = &running
                            && hb_reply.cancel.contains(&r.attempt)
                            && !r.ctx.is_cancelled()
                        {
                            alog!("the server cancelled {} ({})", r.step, r.attempt);
                            r.ctx.cancel.store(true, Ordering::Relaxed);
                        }
                        if let Some(cmd) = hb_reply.command {
                            match &running {
                                None => running = Some(self.start(cmd)),
                                Some(r) if r.attempt != cmd.attempt => alog!(
                                    "ignoring command {} ({}): {} is still running",
                                    cmd.step,
                                    cmd.attempt,
                                    r.attempt
                                ),
                                Some(_) => {}
                            }
                        }
                    }
                    Err(e) if e.status() == Some(404) => {
                        // The server no longer knows this instance (its state
                        // was reset): register again.
                        alog!("heartbeat: {e}; saying hello again");
                        match self.hello() {
                            Some(r) => reply = r,
                            None => continue,
                        }
                        next_heartbeat = Instant::now();
                    }
                    Err(e) if e.is_auth() => {
                        if !auth_logged {
                            self.log_auth("heartbeat", &e);
                            auth_logged = true;
                        }
                        next_heartbeat = Instant::now() + self.timing.auth_retry;
                    }
                    Err(e) => {
                        let (d, log) = backoff.next_wait();
                        if log {
                            alog!(
                                "heartbeat failed: {e}; retrying in {:.1} s",
                                d.as_secs_f64()
                            );
                        }
                        next_heartbeat = Instant::now() + d;
                    }
                }
            }
            let until_heartbeat = next_heartbeat.saturating_duration_since(Instant::now());
            let nap = if running.is_some() {
                until_heartbeat.min(Duration::from_millis(50))
            } else {
                until_heartbeat
            };
            self.pause(nap);
        }
    }

    fn start(&self, cmd: Command) -> Running {
        let mut ctx = StepContext::new(self.env.clone());
        ctx.auth = Some(self.client.auth());
        ctx.tuning = self.tuning.clone();
        let power = match cmd.action {
            Action::Reboot => Some(PowerAction::Reboot),
            Action::PowerOff => Some(PowerAction::PowerOff),
            _ => None,
        };
        alog!(
            "starting {} ({}), attempt {}, timeout {} s",
            cmd.step,
            cmd.action.kind(),
            cmd.attempt,
            cmd.timeout_secs
        );
        let (tx, rx) = mpsc::channel();
        let worker_ctx = ctx.clone();
        let action = cmd.action.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("step-{}", cmd.action.kind()))
            .spawn(move || {
                let result =
                    std::panic::catch_unwind(AssertUnwindSafe(|| steps::run(&worker_ctx, &action)))
                        .unwrap_or_else(|panic| {
                            let why = panic
                                .downcast_ref::<String>()
                                .cloned()
                                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                                .unwrap_or_default();
                            Err(StepError::new(
                                error_codes::IO,
                                format!("agent bug: the step panicked: {why}"),
                                false,
                            ))
                        });
                let _ = tx.send(result);
            });
        if let Err(e) = spawned {
            alog!("cannot start a thread for {}: {e}", cmd.step);
        }
        Running {
            attempt: cmd.attempt,
            step: cmd.step,
            power,
            ctx,
            rx,
            deadline: Instant::now() + Duration::from_secs(cmd.timeout_secs.max(1)),
            posted_version: 0,
            last_post: None,
        }
    }

    fn maybe_post_progress(&self, r: &mut Running) {
        let version = r.ctx.progress.version();
        if version == r.posted_version
            || r.last_post
                .is_some_and(|t| t.elapsed() < self.timing.progress_every)
        {
            return;
        }
        let Some(p) = r.ctx.progress.snapshot() else {
            return;
        };
        r.posted_version = version;
        r.last_post = Some(Instant::now());
        match self.client.progress(r.attempt, &p) {
            Ok(()) => {}
            Err(e) if e.is_conflict() => {
                alog!(
                    "{} ({}) is no longer current on the server: cancelling it",
                    r.step,
                    r.attempt
                );
                r.ctx.cancel.store(true, Ordering::Relaxed);
            }
            // Progress is best effort; the next heartbeat carries it too.
            Err(e) => alog!("progress of {}: {e}", r.attempt),
        }
    }

    /// Posts the result; returns the power action to perform, if any.
    fn finish(&self, r: Running, result: Result<StepOutput, StepError>) -> Option<Exit> {
        let report = match result {
            Ok(output) => {
                alog!("{} ({}) succeeded", r.step, r.attempt);
                StepReport::Succeeded { output }
            }
            Err(e) => {
                alog!("{} ({}) failed: {e}", r.step, r.attempt);
                e.report()
            }
        };
        let failed = matches!(report, StepReport::Failed { .. });
        let accepted = self.post_result(&r, &report);
        if failed && let Err(e) = self.client.upload_log(Some(r.attempt), &logbuf::tail()) {
            alog!("uploading the log of {}: {e}", r.attempt);
        }
        match (accepted, r.power, &report) {
            (true, Some(action), StepReport::Succeeded { .. }) => Some(Exit::Power(action)),
            _ => None,
        }
    }

    /// Posts a result until the server takes it (true) or says the attempt
    /// is no longer current (false).
    fn post_result(&self, r: &Running, report: &StepReport) -> bool {
        let mut backoff = Backoff::new(self.timing.backoff_min, self.timing.backoff_max);
        let mut auth_logged = false;
        while !self.stopped() {
            match self.client.result(r.attempt, report) {
                Ok(()) => return true,
                Err(e) if e.is_conflict() => {
                    alog!(
                        "{} ({}) is no longer current on the server ({e}): dropping its result",
                        r.step,
                        r.attempt
                    );
                    return false;
                }
                Err(e) if e.is_auth() => {
                    if !auth_logged {
                        self.log_auth("posting a result", &e);
                        auth_logged = true;
                    }
                    self.pause(self.timing.auth_retry);
                }
                Err(e) => {
                    let (d, log) = backoff.next_wait();
                    if log {
                        alog!(
                            "posting the result of {}: {e}; retrying in {:.1} s",
                            r.attempt,
                            d.as_secs_f64()
                        );
                    }
                    self.pause(d);
                }
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_the_ceiling_and_logs_sparsely() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
        let steps: Vec<(u64, bool)> = (0..17)
            .map(|_| b.step())
            .map(|(d, l)| (d.as_secs(), l))
            .collect();
        let waits: Vec<u64> = steps.iter().map(|s| s.0).collect();
        assert_eq!(
            waits,
            [
                1, 2, 4, 8, 16, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30
            ]
        );
        let logged: Vec<usize> = steps
            .iter()
            .enumerate()
            .filter(|(_, s)| s.1)
            .map(|(i, _)| i)
            .collect();
        // Each new step, then the tenth failure at the ceiling.
        assert_eq!(logged, [0, 1, 2, 3, 4, 5, 15]);
        b.reset();
        assert_eq!(b.step(), (Duration::from_secs(1), true));
        for _ in 0..100 {
            let j = jitter(Duration::from_secs(10));
            assert!(
                j >= Duration::from_secs(8) && j <= Duration::from_secs(12),
                "{j:?}"
            );
        }
    }
}
