//! What the report says about the machine and the tools: CPU model, cores, memory, kernel,
//! rustc and Envoy versions, the date, and the exact command.

use std::path::Path;
use std::time::SystemTime;

use crate::procs::Pinning;
use crate::results::Machine;

pub fn describe(envoy: Option<&Path>, pin: &Pinning) -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu_model = cpuinfo
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim() == "model name").then(|| v.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".into());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kib: f64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0.0);
    // Set by scripts/bench, which knows what the user typed.
    let command = std::env::var("MCP_AUTHZ_BENCH_COMMAND").unwrap_or_else(|_| {
        let args: Vec<String> = std::env::args().collect();
        args.join(" ")
    });
    Machine {
        cpu_model,
        cpus: cpuinfo
            .lines()
            .filter(|l| l.starts_with("processor"))
            .count(),
        memory_gib: mem_kib / 1024.0 / 1024.0,
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| format!("Linux {}", s.trim()))
            .unwrap_or_else(|_| "unknown".into()),
        rustc: first_line("rustc", &["--version"]),
        envoy: envoy.map_or_else(
            || "not used".into(),
            |e| {
                let v = first_line(&e.to_string_lossy(), &["--version"]);
                // `/path/to/envoy  version: <sha>/1.40.0/Clean/RELEASE/BoringSSL`
                v.split_once("version:")
                    .and_then(|(_, build)| build.trim().split('/').nth(1))
                    .map_or(v.clone(), str::to_owned)
            },
        ),
        date: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
        command,
        pinning: pin.describe(),
    }
}

fn first_line(program: &str, args: &[&str]) -> String {
    std::process::Command::new(program)
        .args(args)
        .output()
        .ok()
        .and_then(|o| {
            let text = if o.stdout.is_empty() {
                o.stderr
            } else {
                o.stdout
            };
            String::from_utf8(text).ok()
        })
        .and_then(|s| s.lines().find(|l| !l.trim().is_empty()).map(str::to_owned))
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|| "unknown".into())
}
