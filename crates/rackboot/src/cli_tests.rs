//! The CLI definition: every command and argument says what it is, summaries
//! that name subcommands name them all, and `serve --help` shows true defaults.

use clap::Command;

use crate::command;

/// Every subcommand, with its path (`rackboot machine list`).
fn walk(cmd: &Command, path: String, out: &mut Vec<(String, Command)>) {
    for sub in cmd.get_subcommands() {
        let p = format!("{path} {}", sub.get_name());
        out.push((p.clone(), sub.clone()));
        walk(sub, p, out);
    }
}

fn all_commands() -> Vec<(String, Command)> {
    let mut out = Vec::new();
    walk(&command(), "rackboot".into(), &mut out);
    out
}

#[test]
fn every_command_and_argument_has_help() {
    let mut missing = Vec::new();
    for (path, cmd) in all_commands() {
        if cmd.get_name() == "help" {
            continue;
        }
        if cmd
            .get_about()
            .is_none_or(|a| a.to_string().trim().is_empty())
        {
            missing.push(format!("{path}: no summary"));
        }
        for arg in cmd.get_arguments() {
            let id = arg.get_id().as_str();
            if matches!(id, "help" | "version") || arg.is_hide_set() {
                continue;
            }
            if arg
                .get_help()
                .is_none_or(|h| h.to_string().trim().is_empty())
            {
                missing.push(format!("{path}: argument {id} has no help"));
            }
        }
    }
    assert!(missing.is_empty(), "{}", missing.join("\n"));
}

/// A subcommand whose summary is a shared struct's doc (the client
/// arguments' "Where the server is...") says nothing about itself.
#[test]
fn no_command_is_described_by_shared_arguments() {
    let shared = ["Where the server is", "How to talk to"];
    let bad: Vec<String> = all_commands()
        .into_iter()
        .filter(|(_, c)| {
            c.get_about()
                .is_some_and(|a| shared.iter().any(|s| a.to_string().starts_with(s)))
        })
        .map(|(p, _)| p)
        .collect();
    assert!(bad.is_empty(), "described by shared args: {bad:?}");
}

/// "Things: list, show, add." names every subcommand or none.
#[test]
fn summaries_that_list_subcommands_list_them_all() {
    let mut wrong = Vec::new();
    let mut check = |path: &str, parent: &Command| {
        let names: Vec<&str> = parent
            .get_subcommands()
            .map(|c| c.get_name())
            .filter(|n| *n != "help")
            .collect();
        if names.is_empty() {
            return;
        }
        let about = parent
            .get_about()
            .map(|a| a.to_string())
            .unwrap_or_default();
        let Some((_, list)) = about.split_once(": ") else {
            return;
        };
        let listed: Vec<&str> = list
            .trim_end_matches('.')
            .split([',', ';'])
            .map(|w| w.trim().split(' ').next().unwrap_or(""))
            .collect();
        let named = listed.iter().filter(|w| names.contains(w)).count();
        if named > 1 && named < names.len() {
            wrong.push(format!("{path}: {about:?} names {named} of {names:?}"));
        }
    };
    let root = command();
    check("rackboot", &root);
    for (path, cmd) in all_commands() {
        check(&path, &cmd);
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

fn help_of(path: &[&str]) -> String {
    let mut cmd = command();
    for name in path {
        cmd = cmd.find_subcommand(name).unwrap().clone();
    }
    cmd.render_long_help().to_string()
}

#[test]
fn serve_help_shows_the_real_defaults() {
    let help = help_of(&["serve"]);
    let config = crate::config::Config::default();
    let crate::config::Toggle::On(http) = config.listen.http else {
        panic!("http is on by default");
    };
    for want in [
        format!("[default: {}]", config.state_dir.display()),
        format!("[default: {http}]"),
        "[default: STATE_DIR/assets]".to_string(),
        "[default: sqlite:STATE_DIR/rackboot.db]".to_string(),
        "[default: port 69 on the boot HTTP address]".to_string(),
    ] {
        assert!(help.contains(&want), "serve --help lacks {want}:\n{help}");
    }
    // And they are what the config resolves to.
    let mut c = crate::config::Config {
        state_dir: "/srv/rb".into(),
        ..Default::default()
    };
    c.resolve();
    assert_eq!(c.boot.asset_dir, std::path::Path::new("/srv/rb/assets"));
    assert_eq!(c.store_url(), "sqlite:/srv/rb/rackboot.db");
    assert_eq!(
        c.listen.tftp,
        crate::config::Toggle::On(crate::config::default_tftp_for(c.listen.http))
    );
}

#[test]
fn completions_and_man_page_cover_every_command() {
    for shell in [
        clap_complete::Shell::Bash,
        clap_complete::Shell::Zsh,
        clap_complete::Shell::Fish,
    ] {
        let mut buf = Vec::new();
        clap_complete::generate(shell, &mut command(), "rackboot", &mut buf);
        let text = String::from_utf8(buf).unwrap();
        for name in ["serve", "machine", "set-boot", "check-config", "completion"] {
            assert!(text.contains(name), "{shell} completion lacks {name}");
        }
    }
    let mut buf = Vec::new();
    clap_mangen::Man::new(command()).render(&mut buf).unwrap();
    let page = String::from_utf8(buf).unwrap();
    assert!(page.contains(".TH rackboot"), "{page}");
    assert!(page.contains("check\\-config"), "{page}");
}
