//! rackboot: every service in one process, and the CLI for them.

fn main() {
    println!("rackboot");
}
