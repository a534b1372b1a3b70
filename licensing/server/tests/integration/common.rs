//! Test harness: the real server binary on 127.0.0.1:0, a blocking HTTP client,
//! fingerprints and request bodies.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use outpost_licensing::fingerprint::MachineFacts;
use outpost_licensing::keys::LicenseKeys;
use outpost_licensing::protocol::{new_nonce, ActivationRequest};
use outpost_licensing::{Fingerprint, LicenseFile};
use serde_json::{json, Value};

/// The admin token every test server accepts.
pub const TOKEN: &str = "test-admin-token-0123456789";
/// The vendor every fixture creates.
pub const VENDOR: &str = "acme";

/// Path of the server binary.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_outpost-license-server")
}

/// A running server; killed when dropped.
pub struct Server {
    child: Child,
    /// Base URL, `http://127.0.0.1:PORT`.
    pub url: String,
    /// Its stderr (logs).
    pub log: PathBuf,
}

/// Options of a test server.
#[derive(Clone)]
pub struct Opts {
    /// Database URL.
    pub db: String,
    /// Key directory.
    pub keys: PathBuf,
    /// Directory for the log file.
    pub dir: PathBuf,
    /// Extra arguments.
    pub args: Vec<String>,
}

impl Opts {
    /// A server on this database, with keys and logs in `dir`, without rate limits.
    pub fn new(db: &str, dir: &Path) -> Opts {
        Opts {
            db: db.to_string(),
            keys: dir.join("keys"),
            dir: dir.to_path_buf(),
            args: vec![
                "--rate-per-ip".into(),
                "0".into(),
                "--rate-per-serial".into(),
                "0".into(),
            ],
        }
    }

    /// A SQLite database file in `dir`.
    pub fn sqlite(dir: &Path) -> Opts {
        Opts::new(
            &format!("sqlite://{}", dir.join("license.db").display()),
            dir,
        )
    }
}

impl Server {
    /// Starts the server and waits for its `listening on` line.
    pub fn start(o: &Opts) -> Server {
        std::fs::create_dir_all(&o.dir).unwrap();
        let n = std::fs::read_dir(&o.dir).unwrap().count();
        let log = o.dir.join(format!("server-{n}.log"));
        let mut child = Command::new(bin())
            .arg("serve")
            .arg("--db")
            .arg(&o.db)
            .arg("--keys")
            .arg(&o.keys)
            .arg("--listen")
            .arg("127.0.0.1:0")
            .args(&o.args)
            .env("OUTPOST_ADMIN_TOKENS", TOKEN)
            .env_remove("OUTPOST_LICENSE_DB")
            .env_remove("OUTPOST_LICENSE_KEYS")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start the server");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(addr) = line.strip_prefix("listening on ") {
                    let _ = tx.send(addr.to_string());
                }
            }
        });
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(url) => Server { child, url, log },
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "server did not start; log:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
        }
    }

    /// SIGKILL, no shutdown.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits for a clean exit; returns whether it exited successfully.
    pub fn terminate(&mut self) -> bool {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        for _ in 0..200 {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.kill9();
        false
    }

    /// GET with an optional admin token: status and parsed JSON (or the text as a string).
    pub fn get(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        call("GET", &format!("{}{path}", self.url), token, None).expect("transport")
    }

    /// POST of raw bytes.
    pub fn post(&self, path: &str, token: Option<&str>, body: &[u8]) -> (u16, Value) {
        call("POST", &format!("{}{path}", self.url), token, Some(body)).expect("transport")
    }

    /// Admin GET that must succeed.
    pub fn admin_get(&self, path: &str) -> Value {
        let (status, v) = self.get(path, Some(TOKEN));
        assert_eq!(status, 200, "GET {path}: {v}");
        v
    }

    /// Admin POST of JSON that must succeed (200 or 201).
    pub fn admin_post(&self, path: &str, body: &Value) -> Value {
        let (status, v) = self.post(path, Some(TOKEN), body.to_string().as_bytes());
        assert!(status == 200 || status == 201, "POST {path}: {status} {v}");
        v
    }

    /// Activation: status and body.
    pub fn activate(&self, req: &ActivationRequest) -> (u16, Value) {
        self.post("/v1/activate", None, &serde_json::to_vec(req).unwrap())
    }

    /// Activation that must succeed: the licence.
    pub fn activate_ok(&self, req: &ActivationRequest) -> LicenseFile {
        let (status, v) = self.activate(req);
        assert_eq!(status, 200, "activation refused: {v}");
        assert_eq!(v["error_code"], 0);
        serde_json::from_value(v["license"].clone()).unwrap()
    }

    /// The licence keys from `GET /v1/keys`: all of them, or only the root.
    pub fn license_keys(&self, root_only: bool) -> LicenseKeys {
        let (status, v) = self.get("/v1/keys", None);
        assert_eq!(status, 200);
        let keys: Vec<(String, String)> = v["keys"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|k| !root_only || k["root"] == true)
            .map(|k| {
                (
                    k["key_id"].as_str().unwrap().to_string(),
                    k["public_key"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        LicenseKeys::from_hex(keys.iter().map(|(a, b)| (a.as_str(), b.as_str()))).unwrap()
    }

    /// The server's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// One HTTP call; `Err` on a transport failure.
pub fn call(
    method: &str,
    url: &str,
    token: Option<&str>,
    body: Option<&[u8]>,
) -> Result<(u16, Value), String> {
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(120))
        .build();
    let mut r = agent.request(method, url);
    if let Some(t) = token {
        r = r.set("Authorization", &format!("Bearer {t}"));
    }
    let res = match body {
        Some(b) => r.set("Content-Type", "application/json").send_bytes(b),
        None => r.call(),
    };
    let resp = match res {
        Ok(resp) => resp,
        Err(ureq::Error::Status(_, resp)) => resp,
        Err(e) => return Err(e.to_string()),
    };
    let status = resp.status();
    let text = resp.into_string().map_err(|e| e.to_string())?;
    let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Ok((status, v))
}

/// Sends raw bytes on a new connection and reads the whole answer (the request should
/// say `Connection: close`): status and parsed JSON body.
pub fn raw_http(base_url: &str, request: &[u8]) -> (u16, Value) {
    use std::io::{Read, Write};
    let addr = base_url.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    stream.write_all(request).unwrap();
    let mut answer = Vec::new();
    // The server may close before reading everything; what it sent is still readable.
    let _ = stream.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status: u16 = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status in {text:?}"));
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (
        status,
        serde_json::from_str(body).unwrap_or(Value::String(body.into())),
    )
}

/// A device fingerprint for the vendor, from made-up facts tagged `tag`.
pub fn fingerprint(tag: &str) -> Fingerprint {
    fingerprint_with(tag, None)
}

/// Like [`fingerprint`], with one component (`machine`, `board`, `cpu`, `mac`) changed.
pub fn fingerprint_with(tag: &str, changed: Option<&str>) -> Fingerprint {
    let mut facts = MachineFacts::default();
    for name in ["machine", "board", "cpu", "mac"] {
        let value = if changed == Some(name) {
            format!("{name}-{tag}-replaced")
        } else {
            format!("{name}-{tag}")
        };
        facts.values.insert(name.into(), value);
    }
    Fingerprint::from_facts(&facts, VENDOR).unwrap()
}

/// An activation request.
pub fn request(
    serial: &str,
    product: &str,
    fp: Option<Fingerprint>,
    package: Option<&str>,
) -> ActivationRequest {
    ActivationRequest {
        serial: serial.to_string(),
        vendor: VENDOR.into(),
        product_id: product.into(),
        fingerprint: fp,
        package_name: package.map(String::from),
        nonce: new_nonce().unwrap(),
    }
}

/// Creates vendor `acme` with models `m1` and `m2`, and vendor `other` with `m1`.
pub fn setup_vendor(s: &Server) {
    s.admin_post("/v1/admin/vendors", &json!({"id": VENDOR, "name": "Acme"}));
    for m in ["m1", "m2"] {
        s.admin_post(
            &format!("/v1/admin/vendors/{VENDOR}/models"),
            &json!({ "product_id": m }),
        );
    }
    s.admin_post(
        "/v1/admin/vendors",
        &json!({"id": "other", "name": "Other"}),
    );
    s.admin_post(
        "/v1/admin/vendors/other/models",
        &json!({"product_id": "m1"}),
    );
}

/// Creates serials: the batch answer's serial list.
pub fn serials(s: &Server, body: Value) -> Vec<String> {
    let v = s.admin_post("/v1/admin/serials", &body);
    v["serials"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap().to_string())
        .collect()
}

/// One serial of this kind for `acme`, covering `m1` (extra fields merged in).
pub fn one_serial(s: &Server, kind: &str, extra: Value) -> String {
    let mut body = json!({"vendor": VENDOR, "kind": kind, "models": ["m1"], "count": 1});
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            b.insert(k.clone(), v.clone());
        }
    }
    serials(s, body).remove(0)
}

/// Runs the binary with arguments (no server).
pub fn run_cli(args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .env_remove("OUTPOST_LICENSE_DB")
        .env_remove("OUTPOST_LICENSE_KEYS")
        .output()
        .expect("run the binary")
}

/// Unix time now.
pub fn now() -> u64 {
    outpost_licensing::unix_now()
}

/// The PostgreSQL URL for tests, or `None` (and a notice) when not configured.
pub fn postgres_url(test: &str) -> Option<String> {
    match std::env::var("OUTPOST_TEST_POSTGRES_URL") {
        Ok(u) if !u.trim().is_empty() => Some(u.trim().to_string()),
        _ => {
            println!(
                "SKIPPED {test}: set OUTPOST_TEST_POSTGRES_URL (see licensing/server/ci-postgres.sh) to run it"
            );
            eprintln!("SKIPPED {test}: OUTPOST_TEST_POSTGRES_URL is not set");
            None
        }
    }
}

/// A fresh PostgreSQL database for one test, dropped when this value is dropped.
pub struct PgDatabase {
    admin_url: String,
    name: String,
    /// URL of the new database.
    pub url: String,
}

fn pg_exec(url: &str, sql: &str) {
    use sqlx::{Connection, Executor};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut c = sqlx::postgres::PgConnection::connect(url)
            .await
            .expect("connect to PostgreSQL");
        c.execute(sql).await.expect(sql);
        let _ = c.close().await;
    });
}

impl PgDatabase {
    /// Creates `outpost_test_<random>` through the given URL's server.
    pub fn create(admin_url: &str) -> PgDatabase {
        let name = format!("outpost_test_{}", &new_nonce().unwrap()[..16]);
        pg_exec(admin_url, &format!("CREATE DATABASE {name}"));
        let (base, query) = match admin_url.split_once('?') {
            Some((b, q)) => (b, format!("?{q}")),
            None => (admin_url, String::new()),
        };
        let prefix = &base[..base.rfind('/').expect("a URL with a database name")];
        PgDatabase {
            admin_url: admin_url.to_string(),
            url: format!("{prefix}/{name}{query}"),
            name,
        }
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        let url = self.admin_url.clone();
        // Best effort: a failed drop leaves a uniquely named database behind.
        let _ = std::panic::catch_unwind(move || pg_exec(&url, &sql));
    }
}
