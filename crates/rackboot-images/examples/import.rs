//! Imports one file into a catalog and verifies it, printing throughput:
//! `cargo run --release -p rackboot-images --example import -- CATALOG SOURCE NAME`

use std::path::PathBuf;
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [catalog, source, name] = args.as_slice() else {
        return Err("usage: import CATALOG SOURCE NAME".into());
    };
    let (catalog, source) = (PathBuf::from(catalog), PathBuf::from(source));
    let options = rackboot_images::ImportOptions {
        name: name.clone(),
        replace: true,
        ..Default::default()
    };
    let started = Instant::now();
    let record = rackboot_images::import(&catalog, &source, &options, &mut |p| {
        if p.raw_bytes % (256 << 20) == 0 {
            eprintln!("{:?} {} MiB", p.phase, p.raw_bytes >> 20);
        }
    })?;
    let secs = started.elapsed().as_secs_f64();
    let mib = record.raw_size as f64 / (1 << 20) as f64;
    println!("{}", serde_json::to_string_pretty(&record)?);
    println!(
        "import: {mib:.0} MiB raw -> {:.1} MiB in {secs:.2} s = {:.0} MiB/s",
        record.compressed_size as f64 / (1 << 20) as f64,
        mib / secs
    );
    let verified = rackboot_images::verify(&catalog, name)?;
    println!(
        "verify: {} frames in {:.2} s = {:.0} MiB/s",
        verified.frames,
        verified.millis as f64 / 1000.0,
        mib / (verified.millis as f64 / 1000.0)
    );
    Ok(())
}
