//! rackboot: every service in one process (`rackboot serve`), and the CLI for them.

// mimalloc: malloc/free were ~10% of the DHCP hot path's CPU with glibc's
// allocator (perf, 4,000 exchanges/s).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod adhoc;
mod client;
mod config;
mod deploy_cli;
mod install_cli;
mod lab;
mod output;
mod power_cli;
mod serve;
mod webhook_cli;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "rackboot",
    version,
    about = "Bare-metal provisioning: DHCP, TFTP, boot HTTP, API, in one binary"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the services (DHCP, TFTP, boot HTTP, API) in the foreground.
    Serve(serve::ServeArgs),
    /// Boot every PXE machine on a network into one kernel (ad-hoc, like pixiecore).
    Boot(adhoc::BootArgs),
    /// Machines: list, show, add, set-boot, delete.
    #[command(subcommand)]
    Machine(client::MachineCmd),
    /// Profiles: list, show, add (from flags or a file), delete.
    #[command(subcommand)]
    Profile(client::ProfileCmd),
    /// Selectors mapping machines to profiles.
    #[command(subcommand)]
    Selector(client::SelectorCmd),
    /// DHCP leases.
    #[command(subcommand)]
    Lease(client::LeaseCmd),
    /// Print events; with --follow, stream them live.
    Events(client::EventsArgs),
    /// A machine's boot timeline (every event for it, oldest first).
    Timeline(client::TimelineArgs),
    /// Server status.
    Status(client::ClientArgs),
    /// The OS catalog: import ISOs or trees, list, delete.
    #[command(subcommand)]
    Os(install_cli::OsCmd),
    /// Install an OS on a machine with its installer and a rendered unattended file.
    Install(install_cli::InstallArgs),
    /// Install requests (pending, completed, cancelled).
    Installs(install_cli::InstallsArgs),
    /// Preview what a machine gets on its next network boot (script and install file).
    Render(install_cli::RenderArgs),
    /// Templates for unattended install files: list, show, put, delete.
    #[command(subcommand)]
    Template(install_cli::TemplateCmd),
    /// Deploy an image: boot the agent, inspect, erase, RAID, write, configure,
    /// boot from disk; with live per-machine progress and a summary.
    Deploy(deploy_cli::DeployArgs),
    /// Take active machines back: erase their disks (the agent), power off.
    Undeploy(deploy_cli::SimpleWorkflowArgs),
    /// Collect hardware facts with the agent (CPU, memory, DMI, disks, NICs, LLDP).
    Inspect(deploy_cli::SimpleWorkflowArgs),
    /// Erase disks with the agent and make machines available.
    Clean(deploy_cli::SimpleWorkflowArgs),
    /// Boot the agent without touching disks (rackboot unrescue to leave).
    Rescue(deploy_cli::SimpleWorkflowArgs),
    /// Leave rescue: boot from disk again.
    Unrescue(deploy_cli::SimpleWorkflowArgs),
    /// Workflows: list, show, retry, abort, run; definitions.
    #[command(subcommand)]
    Workflow(deploy_cli::WorkflowCmd),
    /// The image catalog: import, list, show, delete.
    #[command(subcommand)]
    Image(deploy_cli::ImageCmd),
    /// The agent's RAM-disk.
    #[command(subcommand)]
    Ramdisk(deploy_cli::RamdiskCmd),
    /// Webhooks that receive alerts (signed JSON): add, list, show, delete, deliveries, test.
    #[command(subcommand)]
    Webhook(webhook_cli::WebhookCmd),
    /// The virtual rack: QEMU machines on a private bridge in a network namespace.
    #[command(subcommand)]
    Lab(lab::LabCmd),
    /// Check a config file and print it as rackboot understands it.
    CheckConfig {
        #[arg(long, short)]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => serve::run(args).await,
            Command::Boot(args) => adhoc::run(args).await,
            Command::Machine(cmd) => client::machine(cmd).await,
            Command::Profile(cmd) => client::profile(cmd).await,
            Command::Selector(cmd) => client::selector(cmd).await,
            Command::Lease(cmd) => client::lease(cmd).await,
            Command::Events(args) => client::events(args).await,
            Command::Timeline(args) => client::timeline(args).await,
            Command::Status(args) => client::status(args).await,
            Command::Lab(cmd) => lab::run(cmd).await,
            Command::Os(cmd) => install_cli::os(cmd).await,
            Command::Install(args) => install_cli::install(args).await,
            Command::Installs(args) => install_cli::installs(args).await,
            Command::Render(args) => install_cli::render(args).await,
            Command::Template(cmd) => install_cli::template(cmd).await,
            Command::Deploy(args) => deploy_cli::deploy(args).await,
            Command::Undeploy(args) => deploy_cli::simple("undeploy", args).await,
            Command::Inspect(args) => deploy_cli::simple("inspect", args).await,
            Command::Clean(args) => deploy_cli::simple("clean", args).await,
            Command::Rescue(args) => deploy_cli::simple("rescue", args).await,
            Command::Unrescue(args) => deploy_cli::simple("unrescue", args).await,
            Command::Workflow(cmd) => deploy_cli::workflow(cmd).await,
            Command::Image(cmd) => deploy_cli::image(cmd).await,
            Command::Ramdisk(cmd) => deploy_cli::ramdisk(cmd).await,
            Command::Webhook(cmd) => webhook_cli::webhook(cmd).await,
            Command::CheckConfig { config } => config::check(&config),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
