//! Lists media (a directory or an ISO image) as the importer sees it and
//! what it detects: `cargo run -p rackboot-oscatalog --example media_ls -- PATH`.

use rackboot_oscatalog::{EntryKind, MediaFs, detect, open_media};

fn walk(fs: &dyn MediaFs, dir: &str) {
    let entries = match fs.read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => {
            eprintln!("{dir}: {e}");
            return;
        }
    };
    for entry in entries {
        let path = if dir.is_empty() {
            entry.name.clone()
        } else {
            format!("{dir}/{}", entry.name)
        };
        match entry.kind {
            EntryKind::File { size } => println!("{size:>12} {path}"),
            EntryKind::Dir => {
                println!("{:>12} {path}/", "dir");
                walk(fs, &path);
            }
            EntryKind::Symlink { target } => println!("{:>12} {path} -> {target}", "link"),
        }
    }
}

fn main() {
    let Some(path) = std::env::args().nth(1) else {
        eprintln!("usage: media_ls PATH");
        std::process::exit(2);
    };
    let media = match open_media(std::path::Path::new(&path)) {
        Ok(media) => media,
        Err(e) => {
            eprintln!("{path}: {e}");
            std::process::exit(1);
        }
    };
    walk(media.as_ref(), "");
    match detect(media.as_ref()) {
        Ok(release) => println!("{release:#?}"),
        Err(e) => println!("not recognised: {e}"),
    }
}
