//! [`Apache`]: Debian's Apache 2.4 as a lab backend, one instance per host with a configuration
//! of its own under the lab's work directory (nothing under /etc/apache2 is read or changed).
//! It runs in the foreground as our child, light enough (one event-MPM process, few threads)
//! for several instances on a 2-core machine.

use std::fs;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

use super::wait_until_serving;
use crate::lab::{Host, Lab};
use crate::process::Process;

/// Debian's Apache binary.
const APACHE_BIN: &str = "/usr/sbin/apache2";
/// Debian's Apache modules.
const MODULES_DIR: &str = "/usr/lib/apache2/modules";
/// Modules to load; log_config and unixd are compiled into Debian's binary.
const MODULES: [(&str, &str); 5] = [
    ("mpm_event_module", "mod_mpm_event.so"),
    ("authz_core_module", "mod_authz_core.so"),
    ("dir_module", "mod_dir.so"),
    ("mime_module", "mod_mime.so"),
    ("headers_module", "mod_headers.so"),
];
/// How long Apache gets for SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// Static files with the same paths as the echo server's `/size/N`, for benchmarks.
const SIZED_FILES: [usize; 2] = [1024, 100 * 1024];

/// A running Apache on a lab host, serving `index.html` = `backend NAME`, with the header
/// `X-Backend: NAME` on every response and an access log in the classic format whose first
/// field is the X-Forwarded-For header received.
#[derive(Debug)]
pub struct Apache {
    name: String,
    host: Host,
    addr: SocketAddrV4,
    dir: PathBuf,
    process: Option<Process>,
}

impl Apache {
    /// Writes the instance's configuration under `lab.work_dir()/apache-NAME/`, starts Apache
    /// on `host`'s address and `port`, and waits until it accepts connections.
    pub fn start(lab: &Lab, host: &Host, port: u16, name: &str) -> anyhow::Result<Apache> {
        if !Path::new(APACHE_BIN).is_file() {
            bail!("{APACHE_BIN} not found: install Debian's apache2 (apt-get install apache2)");
        }
        let dir = lab.work_dir().join(format!("apache-{name}"));
        let addr = SocketAddrV4::new(host.ip, port);
        write_instance(&dir, addr, host.ip6, name)
            .with_context(|| format!("writing Apache {name}'s files in {}", dir.display()))?;
        let mut apache = Apache {
            name: name.to_owned(),
            host: host.clone(),
            addr,
            dir,
            process: None,
        };
        apache.launch()?;
        Ok(apache)
    }

    /// Stops Apache (SIGTERM; SIGKILL if it has not exited within 10 s).
    pub fn stop(&mut self) -> anyhow::Result<()> {
        if let Some(mut process) = self.process.take() {
            process
                .terminate(STOP_GRACE)
                .with_context(|| format!("stopping Apache {}", self.name))?;
        }
        Ok(())
    }

    /// Stops Apache if it runs, then starts it again with the same configuration and waits
    /// until it accepts connections.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.stop()?;
        self.launch()
    }

    /// The access log's lines so far (empty before the first request).
    pub fn access_log(&self) -> anyhow::Result<Vec<String>> {
        let path = self.access_log_path();
        match fs::read_to_string(&path) {
            Ok(text) => Ok(text.lines().map(str::to_owned).collect()),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(error) => {
                Err(error).with_context(|| format!("reading Apache log {}", path.display()))
            }
        }
    }

    /// Waits until the access log has at least `lines` lines and returns them. Apache writes a
    /// line after it has sent the response, so a client may see the answer before the line.
    pub fn wait_for_access_log(
        &self,
        lines: usize,
        timeout: Duration,
    ) -> anyhow::Result<Vec<String>> {
        let deadline = Instant::now() + timeout;
        loop {
            let log = self.access_log()?;
            if log.len() >= lines {
                return Ok(log);
            }
            if Instant::now() >= deadline {
                bail!(
                    "Apache {}'s access log has {} lines after {timeout:?}, expected {lines}: {log:?}",
                    self.name,
                    log.len()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Where it listens on IPv6: on a host of a dual-stack lab only.
    pub fn addr6(&self) -> Option<SocketAddr> {
        self.host
            .ip6
            .map(|ip6| SocketAddr::new(ip6.into(), self.addr.port()))
    }

    /// Where it listens (IPv4).
    pub fn addr(&self) -> SocketAddrV4 {
        self.addr
    }

    /// The instance's directory: httpd.conf, htdocs/, logs/.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The access log file.
    pub fn access_log_path(&self) -> PathBuf {
        self.dir.join("logs/access.log")
    }

    /// Whether Apache's main process is running.
    pub fn is_running(&mut self) -> bool {
        self.process.as_mut().is_some_and(Process::is_running)
    }

    fn launch(&mut self) -> anyhow::Result<()> {
        let config = self.dir.join("httpd.conf");
        // Apache reports configuration errors on stderr before its error log is open.
        let stderr_path = self.dir.join("logs/stderr.log");
        let stderr = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&stderr_path)
            .with_context(|| format!("opening {}", stderr_path.display()))?;
        let mut command = self.host.command(APACHE_BIN);
        command
            .arg("-f")
            .arg(&config)
            .args(["-D", "FOREGROUND"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        let mut process = self.host.spawn(command)?;
        let dir = self.dir.clone();
        wait_until_serving(&self.host, &mut process, self.addr, || {
            format!(
                "\n{} says: {}\n{} says: {}",
                stderr_path.display(),
                tail(&stderr_path),
                dir.join("logs/error.log").display(),
                tail(&dir.join("logs/error.log"))
            )
        })
        .with_context(|| format!("starting Apache {} on host {}", self.name, self.host.name))?;
        self.process = Some(process);
        Ok(())
    }
}

/// The last lines of a log, for error messages.
fn tail(path: &Path) -> String {
    match fs::read_to_string(path) {
        Ok(text) => {
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(10)..].join("\n")
        }
        Err(error) => format!("(unreadable: {error})"),
    }
}

/// Creates the instance directory: configuration, documents, log and runtime directories.
fn write_instance(
    dir: &Path,
    addr: SocketAddrV4,
    ip6: Option<Ipv6Addr>,
    name: &str,
) -> anyhow::Result<()> {
    for sub in ["", "htdocs", "htdocs/size", "logs", "run", "lock"] {
        let path = dir.join(sub);
        fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        // Apache's workers run as www-data and must read the documents.
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755))
            .with_context(|| format!("making {} readable", path.display()))?;
    }
    write_readable(&dir.join("htdocs/index.html"), format!("backend {name}\n"))?;
    for size in SIZED_FILES {
        write_readable(&dir.join(format!("htdocs/size/{size}")), "x".repeat(size))?;
    }
    write_readable(&dir.join("httpd.conf"), config(dir, addr, ip6, name))
}

fn write_readable(path: &Path, contents: String) -> anyhow::Result<()> {
    fs::write(path, contents).with_context(|| format!("writing {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o644))
        .with_context(|| format!("making {} readable", path.display()))
}

fn config(dir: &Path, addr: SocketAddrV4, ip6: Option<Ipv6Addr>, name: &str) -> String {
    let dir = dir.display();
    let modules: String = MODULES
        .iter()
        .map(|(module, file)| format!("LoadModule {module} {MODULES_DIR}/{file}\n"))
        .collect();
    let ip: Ipv4Addr = *addr.ip();
    let port = addr.port();
    // On a dual-stack host, its IPv6 address too.
    let listen6 = ip6.map_or_else(String::new, |ip6| format!("Listen [{ip6}]:{port}\n"));
    format!(
        r#"# Apache backend "{name}" of a Tandem lab (generated; see tests/src/backends/apache.rs)
ServerRoot "{dir}"
ServerName {name}
Listen {ip}:{port}
{listen6}PidFile "{dir}/run/apache2.pid"
DefaultRuntimeDir "{dir}/run"
Mutex file:{dir}/lock default
ErrorLog "{dir}/logs/error.log"
LogLevel warn

{modules}
User www-data
Group www-data

# One child process with a few threads: several instances share a 2-core machine.
StartServers 1
ServerLimit 2
ThreadLimit 16
ThreadsPerChild 16
MaxRequestWorkers 32
MinSpareThreads 1
MaxSpareThreads 32
MaxConnectionsPerChild 0

Timeout 30
KeepAlive On
MaxKeepAliveRequests 0
KeepAliveTimeout 5

TypesConfig /dev/null
AddType text/html .html
DocumentRoot "{dir}/htdocs"
DirectoryIndex index.html
<Directory />
    Require all denied
</Directory>
<Directory "{dir}/htdocs">
    Require all granted
</Directory>

Header always set X-Backend "{name}"

# The classic setup's backend log: the client's address as the load balancer forwarded it.
LogFormat "%{{X-Forwarded-For}}i %l %u %t \"%r\" %>s %b" classic
CustomLog "{dir}/logs/access.log" classic
"#
    )
}
