//! The processes under test: spawning them pinned to the server core, learning their ports,
//! waiting until they are ready, and reading their CPU time and memory from /proc. Every child
//! is killed when its `Proc` is dropped, on success and on every error path alike.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdout, Command};

/// How long a server may take to print its address or become ready.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Where processes run: servers on one core, the load generator on another.
#[derive(Debug, Clone)]
pub struct Pinning {
    /// `taskset -c CPU` for every server, when the machine has two CPUs or more.
    pub server_cpu: Option<usize>,
    /// The core the generator pinned itself to.
    pub generator_cpu: Option<usize>,
}

impl Pinning {
    /// Pins the calling thread (the generator's current-thread runtime) to the last CPU, when
    /// there are at least two. Threads spawned later inherit the mask.
    pub fn apply() -> Self {
        let cores = core_affinity::get_core_ids().unwrap_or_default();
        if cores.len() < 2 {
            return Self {
                server_cpu: None,
                generator_cpu: None,
            };
        }
        let last = cores[cores.len() - 1];
        let pinned = core_affinity::set_for_current(last);
        Self {
            server_cpu: Some(cores[0].id),
            generator_cpu: pinned.then_some(last.id),
        }
    }

    pub fn describe(&self) -> String {
        match (self.server_cpu, self.generator_cpu) {
            (Some(s), Some(g)) => format!(
                "servers (allow_server, mcp-authz, Envoy, upstream) pinned to CPU {s} with \
                 `taskset -c {s}`; load generator (one current-thread tokio runtime, plus the \
                 in-process fake IdP) pinned to CPU {g}"
            ),
            (Some(s), None) => format!(
                "servers pinned to CPU {s}; the load generator could not pin itself and runs \
                 on any CPU"
            ),
            _ => "not pinned (fewer than two CPUs): servers and generator share the CPU".into(),
        }
    }
}

/// A running child process.
pub struct Proc {
    pub role: &'static str,
    pub pid: u32,
    child: Child,
    /// Kept open so a child writing to stdout never sees a closed pipe.
    stdout: Option<BufReader<ChildStdout>>,
    log: PathBuf,
}

impl Proc {
    /// Spawns `program args` (pinned when asked), stderr to `log`, killed on drop.
    pub fn spawn(
        role: &'static str,
        program: &Path,
        args: &[&str],
        envs: &[(&str, &str)],
        pin: &Pinning,
        log: PathBuf,
    ) -> Result<Self, String> {
        let mut cmd = match pin.server_cpu {
            Some(cpu) => {
                let mut c = Command::new("taskset");
                c.arg("-c").arg(cpu.to_string()).arg(program);
                c
            }
            None => Command::new(program),
        };
        let stderr = std::fs::File::create(&log)
            .map_err(|e| format!("cannot create `{}`: {e}", log.display()))?;
        cmd.args(args)
            .envs(envs.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr))
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {role} `{}`: {e}", program.display()))?;
        // taskset execs the program: the pid is the server's own.
        let pid = child.id().ok_or_else(|| format!("{role} exited at once"))?;
        let stdout = child.stdout.take().map(BufReader::new);
        Ok(Self {
            role,
            pid,
            child,
            stdout,
            log,
        })
    }

    /// Reads the first stdout line as the bound address (allow_server, the upstream).
    pub async fn read_addr(&mut self) -> Result<SocketAddr, String> {
        let Some(out) = self.stdout.as_mut() else {
            return Err(format!("{}: no stdout", self.role));
        };
        let mut line = String::new();
        let read = tokio::time::timeout(START_TIMEOUT, out.read_line(&mut line)).await;
        match read {
            Ok(Ok(n)) if n > 0 => line
                .trim()
                .parse()
                .map_err(|e| format!("{}: `{}` is not an address: {e}", self.role, line.trim())),
            _ => Err(format!(
                "{} printed no address{}",
                self.role,
                self.log_tail()
            )),
        }
    }

    /// Polls `url` until it answers 200, the child exits, or the start timeout passes.
    pub async fn wait_http_ok(&mut self, url: &str) -> Result<(), String> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .map_err(|e| e.to_string())?;
        let deadline = tokio::time::Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(r) = client.get(url).send().await
                && r.status().is_success()
            {
                return Ok(());
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!(
                    "{} exited ({status}) before `{url}` answered{}",
                    self.role,
                    self.log_tail()
                ));
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(format!(
                    "{}: `{url}` not ready after {}s{}",
                    self.role,
                    START_TIMEOUT.as_secs(),
                    self.log_tail()
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Fails when the process has exited (a crash under load).
    pub fn check_alive(&mut self) -> Result<(), String> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(format!(
                "{} exited ({status}){}",
                self.role,
                self.log_tail()
            )),
            Err(e) => Err(format!("{}: {e}", self.role)),
        }
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(15)..].join("\n");
        if tail.is_empty() {
            String::new()
        } else {
            format!("; last lines of `{}`:\n{tail}", self.log.display())
        }
    }

    pub async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await;
    }
}

// === /proc ===

/// Clock ticks per second, for /proc/<pid>/stat times.
pub fn clock_ticks() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .filter(|&t| t > 0)
        .unwrap_or(100)
}

/// utime + stime of a process, in clock ticks (`pid` 0 means this process).
pub fn cpu_ticks(pid: u32) -> Result<u64, String> {
    let path = if pid == 0 {
        "/proc/self/stat".to_owned()
    } else {
        format!("/proc/{pid}/stat")
    };
    let stat = std::fs::read_to_string(&path).map_err(|e| format!("`{path}`: {e}"))?;
    // The command name may contain spaces and parentheses: fields start after the last `)`.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| format!("`{path}`: unexpected format"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Field 3 (state) is fields[0]; utime is field 14, stime field 15.
    let field = |i: usize| -> Result<u64, String> {
        fields
            .get(i)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("`{path}`: no field {}", i + 3))
    };
    Ok(field(11)? + field(12)?)
}

/// A `Vm*` line of /proc/<pid>/status, in KiB.
pub fn vm_kib(pid: u32, key: &str) -> Result<u64, String> {
    status_value(pid, key)
}

/// The number of a /proc/<pid>/status line (`VmRSS:   1234 kB`, `Threads:  9`).
pub fn status_value(pid: u32, key: &str) -> Result<u64, String> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).map_err(|e| format!("`{path}`: {e}"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| format!("`{path}`: no `{key}`"))
}

/// Open file descriptors of a process: the entries of /proc/<pid>/fd.
pub fn open_fds(pid: u32) -> Result<u64, String> {
    let path = format!("/proc/{pid}/fd");
    let entries = std::fs::read_dir(&path).map_err(|e| format!("`{path}`: {e}"))?;
    Ok(entries.count() as u64)
}
