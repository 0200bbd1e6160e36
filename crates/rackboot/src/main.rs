//! rackboot: every service in one process (`rackboot serve`), and the CLI for them.

// mimalloc: malloc/free were ~10% of the DHCP hot path's CPU with glibc's
// allocator (perf, 4,000 exchanges/s).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[macro_use]
mod output;

mod adhoc;
mod client;
mod config;
mod deploy_cli;
mod import_cli;
mod install_cli;
mod install_wiring;
mod lab;
mod power_cli;
mod serve;
mod state;
mod tls;
mod token_cli;
mod webhook_cli;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "rackboot",
    version,
    about = "Bare-metal provisioning: DHCP, TFTP, boot HTTP, API, in one binary",
    long_about = "Bare-metal provisioning: DHCP, TFTP, boot HTTP and a REST API in one binary \
        (`rackboot serve`), and the CLI that drives them. Client commands find the server at \
        RACKBOOT_URL (default http://127.0.0.1:8080; an https:// server's certificate is pinned \
        on first use in ~/.config/rackboot/known_servers) and use the token in RACKBOOT_TOKEN \
        (`rackboot token create`), else the admin token in STATE_DIR/admin-token."
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
    /// Machines: enroll, inspect, boot intent, labels, BMC and power, maintenance.
    #[command(subcommand)]
    Machine(client::MachineCmd),
    /// Profiles (kernel, initrds, command line, or an iPXE script).
    #[command(subcommand)]
    Profile(client::ProfileCmd),
    /// Selectors: rules choosing a profile for machines by MAC, UUID, arch, name or labels.
    #[command(subcommand)]
    Selector(client::SelectorCmd),
    /// DHCP leases.
    #[command(subcommand)]
    Lease(client::LeaseCmd),
    /// Print the newest events; with --follow, then stream new ones live.
    Events(client::EventsArgs),
    /// A machine's boot timeline (every event for it, oldest first).
    Timeline(client::TimelineArgs),
    /// Server status: version, store, services, counts.
    Status(client::ClientArgs),
    /// The servers sharing this server's PostgreSQL store: live members,
    /// this one marked, and (`--machine`) which one owns a machine.
    Cluster(client::ClusterArgs),
    /// The OS catalog of installation media (ISOs or trees).
    #[command(subcommand)]
    Os(install_cli::OsCmd),
    /// Install an OS on a machine with its installer and a rendered unattended file.
    Install(install_cli::InstallArgs),
    /// Install requests (pending, completed, cancelled).
    Installs(install_cli::InstallsArgs),
    /// Preview what a machine gets on its next network boot (script and install
    /// file); exits 1 when it cannot boot.
    Render(install_cli::RenderArgs),
    /// Templates for unattended install files.
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
    /// Workflows and operators' workflow definitions.
    #[command(subcommand)]
    Workflow(deploy_cli::WorkflowCmd),
    /// The image catalog deploys write from.
    #[command(subcommand)]
    Image(deploy_cli::ImageCmd),
    /// The agent's RAM-disk.
    #[command(subcommand)]
    Ramdisk(deploy_cli::RamdiskCmd),
    /// Webhooks that receive alerts (signed JSON).
    #[command(subcommand)]
    Webhook(webhook_cli::WebhookCmd),
    /// API tokens with roles (viewer, operator, admin): create, list, revoke, whoami.
    #[command(subcommand)]
    Token(token_cli::TokenCmd),
    /// The virtual rack: QEMU machines on a private bridge in a network namespace.
    #[command(subcommand)]
    Lab(lab::LabCmd),
    /// Run every check `serve` makes before it starts (config file and flags,
    /// DHCP subnets, interfaces, log level...) and print the effective config.
    CheckConfig(config::CheckArgs),
    /// Print a shell completion script: `source <(rackboot completion bash)`.
    Completion {
        /// The shell to complete for.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff), or write one per command into a directory.
    Man {
        /// Write rackboot.1 and rackboot-COMMAND.1 pages here instead of
        /// printing rackboot.1, e.g. /usr/local/share/man/man1.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

/// The CLI definition, for completions, the man page and tests.
pub fn command() -> clap::Command {
    Cli::command()
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Generated from the CLI definition; no runtime needed.
    match &cli.command {
        Command::Completion { shell } => {
            let mut buf = Vec::new();
            clap_complete::generate(*shell, &mut command(), "rackboot", &mut buf);
            out!("{}", String::from_utf8_lossy(&buf));
            return ExitCode::SUCCESS;
        }
        Command::Man { dir } => return exit_with(man(dir.as_deref())),
        _ => {}
    }
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
            Command::Cluster(args) => client::cluster(args).await,
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
            Command::Token(cmd) => token_cli::token(cmd).await,
            Command::CheckConfig(args) => config::check(&args),
            Command::Completion { .. } | Command::Man { .. } => Ok(()),
        }
    });
    exit_with(result)
}

fn exit_with(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `rackboot man`: the top page on standard output, or every page into `dir`.
fn man(dir: Option<&std::path::Path>) -> anyhow::Result<()> {
    use anyhow::Context;
    let cmd = command();
    match dir {
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            clap_mangen::generate_to(cmd, dir)
                .with_context(|| format!("writing man pages into {}", dir.display()))?;
            eprintln!("man pages written to {}", dir.display());
        }
        None => {
            let mut buf = Vec::new();
            clap_mangen::Man::new(cmd)
                .render(&mut buf)
                .context("rendering the man page")?;
            out!("{}", String::from_utf8_lossy(&buf));
        }
    }
    Ok(())
}

#[cfg(test)]
mod cli_tests;
