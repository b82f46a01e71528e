//! Times the phases of loading a config: the fast TOML path, validation, the digest, compiling; and
//! the peak RSS after each. `cargo run --release -p policy --example load_phases -- FILE.toml`
use policy::{Document, Table};
use std::sync::Arc;
use std::time::Instant;

fn rss_mib() -> String {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let f = |k: &str| {
        s.lines()
            .find(|l| l.starts_with(k))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
            / 1024
    };
    format!("rss {} MiB, peak {} MiB", f("VmRSS:"), f("VmHWM:"))
}

fn main() {
    let path = std::env::args().nth(1).expect("a config file");
    let t = Instant::now();
    let f = std::fs::File::open(&path).expect("open");
    let doc = policy::fastload::parse_reader(std::io::BufReader::with_capacity(1 << 20, f))
        .expect("the fast path reads it");
    println!(
        "fast parse  {:>8.3} s  {}",
        t.elapsed().as_secs_f64(),
        rss_mib()
    );
    let t = Instant::now();
    let issues = doc.validate();
    println!(
        "validate    {:>8.3} s  {} issues  {}",
        t.elapsed().as_secs_f64(),
        issues.len(),
        rss_mib()
    );
    let t = Instant::now();
    let d = policy::digest(&doc);
    println!("digest      {:>8.3} s  {d:016x}", t.elapsed().as_secs_f64());
    let t = Instant::now();
    let table = Table::compile(Arc::new(doc), 1, None).expect("compiles");
    println!(
        "compile     {:>8.3} s  {}",
        t.elapsed().as_secs_f64(),
        rss_mib()
    );
    println!("hot bytes   {}", table.hot_bytes());
    let t = Instant::now();
    let doc = Document::load(std::path::Path::new(&path)).expect("loads");
    println!(
        "Document::load {:>5.3} s  {}",
        t.elapsed().as_secs_f64(),
        rss_mib()
    );
    drop(doc);
}
