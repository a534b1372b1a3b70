//! Licensing end to end: the real `outpost-license-server` binary on loopback (SQLite
//! in a temp dir), the real `outpost` CLI and the runtime, through online activation,
//! offline use with the server stopped, offline and bulk activation, extension,
//! revocation, key rotation, proxies and every activation rule.
//!
//! The server binary is built by `cargo test --workspace` (it belongs to
//! `licensing/server`); run `cargo build -p outpost-license-server` first when testing
//! this crate alone.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use common::*;
use outpost_runtime::outpost_licensing::fingerprint::MachineFacts;
use outpost_runtime::outpost_licensing::protocol::{new_nonce, ActivationRequest};
use outpost_runtime::outpost_licensing::{Fingerprint, LicenseFile, LicenseStore};
use outpost_runtime::package::manifest::{LicenseKey, LicenseRequirement};
use outpost_runtime::{Config, ImageInput, Predictor};
use serde_json::{json, Value};

const TOKEN: &str = "e2e-admin-token-0123456789abcdef";
const VENDOR: &str = "acme";
const PRODUCT: &str = "ocr-orientation";

fn server_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(Path::parent).unwrap();
    let bin = dir.join(format!(
        "outpost-license-server{}",
        std::env::consts::EXE_SUFFIX
    ));
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build -p outpost-license-server` (cargo test --workspace builds it)",
        bin.display()
    );
    bin
}

struct Server {
    child: Child,
    url: String,
    db: String,
    keys: PathBuf,
}

impl Server {
    fn start(dir: &Path) -> Server {
        let db = format!("sqlite://{}", dir.join("licenses.db").display());
        Server::start_with(&db, &dir.join("server-keys"))
    }

    fn start_with(db: &str, keys: &Path) -> Server {
        let (db, keys) = (db.to_string(), keys.to_path_buf());
        let mut child = Command::new(server_bin())
            .args(["serve", "--db", &db, "--keys", keys.to_str().unwrap()])
            .args([
                "--listen",
                "127.0.0.1:0",
                "--rate-per-ip",
                "0",
                "--rate-per-serial",
                "0",
            ])
            .env("OUTPOST_ADMIN_TOKENS", TOKEN)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("server starts");
        let out = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("listening on ") {
                    let _ = tx.send(url.to_string());
                }
            }
        });
        let url = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("server listens");
        Server {
            child,
            url,
            db,
            keys,
        }
    }

    fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut r = ureq::request(method, &format!("{}{path}", self.url))
            .set("Authorization", &format!("Bearer {TOKEN}"));
        let res = match body {
            Some(b) => {
                r = r.set("Content-Type", "application/json");
                r.send_string(&b.to_string())
            }
            None => r.call(),
        };
        let resp = match res {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(e) => panic!("{method} {path}: {e}"),
        };
        let status = resp.status();
        let text = resp.into_string().unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    fn admin(&self, path: &str, body: Value) -> Value {
        let (status, v) = self.call("POST", path, Some(body));
        assert!(status == 200 || status == 201, "{path}: {status} {v}");
        v
    }

    /// Vendor `acme` with these models.
    fn add_vendor_and_models(&self, models: &[&str]) {
        self.admin("/v1/admin/vendors", json!({"id": VENDOR, "name": "Acme"}));
        for m in models {
            self.admin(
                &format!("/v1/admin/vendors/{VENDOR}/models"),
                json!({ "product_id": m }),
            );
        }
    }

    /// One serial of `kind` for `models`, with extra fields.
    fn serial(&self, kind: &str, models: &[&str], extra: Value) -> String {
        let mut body = json!({"vendor": VENDOR, "kind": kind, "models": models, "count": 1});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        self.admin("/v1/admin/serials", body)["serials"][0]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// Another device activates `serial` over HTTP.
    fn activate_as_other_device(
        &self,
        serial: &str,
        tag: &str,
        package: Option<&str>,
    ) -> (u16, Value) {
        let req = ActivationRequest {
            serial: serial.into(),
            vendor: VENDOR.into(),
            product_id: PRODUCT.into(),
            fingerprint: Some(other_machine(tag)),
            package_name: package.map(String::from),
            nonce: new_nonce().unwrap(),
        };
        self.call(
            "POST",
            "/v1/activate",
            Some(serde_json::to_value(req).unwrap()),
        )
    }

    fn root_key(&self) -> LicenseKey {
        let (_, v) = self.call("GET", "/v1/keys", None);
        let root = v["keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["root"] == true)
            .expect("a root key")
            .clone();
        LicenseKey {
            key_id: root["key_id"].as_str().unwrap().into(),
            public_key: root["public_key"].as_str().unwrap().into(),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn other_machine(tag: &str) -> Fingerprint {
    let mut facts = MachineFacts::default();
    for k in ["machine", "board", "cpu", "mac"] {
        facts.values.insert(k.into(), format!("{k}-{tag}"));
    }
    Fingerprint::from_facts(&facts, VENDOR).unwrap()
}

/// The device: a licensed package, its publisher key and a licence directory.
struct Device {
    _dir: tempfile::TempDir,
    pkg: TestPackage,
    licenses: PathBuf,
}

impl Device {
    fn new(root: LicenseKey, server: Option<&str>) -> Device {
        let onnx = cls_onnx();
        let mut m = cls_manifest(&onnx);
        m.license = Some(LicenseRequirement {
            vendor: VENDOR.into(),
            product_id: PRODUCT.into(),
            edition: None,
            keys: vec![root],
            server: server.map(String::from),
        });
        let dir = tempfile::tempdir().unwrap();
        let licenses = dir.path().join("licenses");
        Device {
            pkg: write_package(&m, onnx),
            _dir: dir,
            licenses,
        }
    }

    fn outpost(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_outpost"));
        cmd.args(args)
            .args(["--trusted-key", self.pkg.key_dir.to_str().unwrap()])
            .args(["--license-dir", self.licenses.to_str().unwrap()])
            .env_remove("OUTPOST_SERIAL")
            .env_remove("OUTPOST_LICENSE_SERVER")
            .env_remove("OUTPOST_APP_ID")
            .env_remove("HTTP_PROXY")
            .env_remove("HTTPS_PROXY")
            .env_remove("https_proxy")
            .env_remove("OUTPOST_LICENSE_CA")
            .env_remove("http_proxy")
            .env_remove("ALL_PROXY");
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    }

    fn pkg(&self) -> &str {
        self.pkg.path.to_str().unwrap()
    }

    fn activate(&self, serial: &str, server: &str, extra: &[&str]) -> Output {
        let mut args = vec![
            "license",
            "activate",
            "--serial",
            serial,
            "--package",
            self.pkg(),
            "--server",
            server,
        ];
        args.extend_from_slice(extra);
        self.outpost(&args, &[])
    }

    fn config(&self) -> Config {
        Config {
            license_dir: Some(self.licenses.clone()),
            ..self.pkg.config()
        }
    }

    /// Infers on the upside-down text image; the top label.
    fn top_label(&self, config: &Config) -> Result<String, outpost_runtime::Error> {
        let p = Predictor::open(&self.pkg.path, config)?;
        let img = std::fs::read(shared().join("images/text_upside_down.png")).unwrap();
        let got = p.infer(ImageInput::Encoded(&img))?;
        Ok(got.classifications().unwrap()[0].label.clone())
    }
}

fn code_of(o: &Output) -> Option<u32> {
    let err = String::from_utf8_lossy(&o.stderr);
    let at = err.find("error ")?;
    err[at + 6..].split(':').next()?.trim().parse().ok()
}

fn assert_refused(o: &Output, code: u32, what: &str) {
    assert!(!o.status.success(), "{what}: succeeded");
    assert_eq!(
        code_of(o),
        Some(code),
        "{what}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn online_activation_offline_use_and_every_rule_on_sqlite() {
    let work = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", work.path().join("licenses.db").display());
    every_rule_through_the_cli(&db, work.path());
}

/// The same against PostgreSQL, when `OUTPOST_TEST_POSTGRES_URL` is set (`.ci/run`
/// sets it; see `licensing/server/ci-postgres.sh`).
#[test]
fn online_activation_offline_use_and_every_rule_on_postgres() {
    let Some(admin_url) = std::env::var("OUTPOST_TEST_POSTGRES_URL")
        .ok()
        .filter(|u| !u.trim().is_empty())
    else {
        eprintln!("SKIPPED: OUTPOST_TEST_POSTGRES_URL is not set");
        return;
    };
    let name = format!("outpost_e2e_{}", &new_nonce().unwrap()[..12]);
    psql(&admin_url, &format!("CREATE DATABASE {name}"));
    let base = &admin_url[..admin_url.rfind('/').expect("URL with a database")];
    let work = tempfile::tempdir().unwrap();
    let result = std::panic::catch_unwind(|| {
        every_rule_through_the_cli(&format!("{base}/{name}"), work.path())
    });
    psql(
        &admin_url,
        &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
    );
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}

fn psql(url: &str, sql: &str) {
    let o = Command::new("psql")
        .args([url, "-v", "ON_ERROR_STOP=1", "-qc", sql])
        .output()
        .expect("psql (from Debian's postgresql-client) runs");
    assert!(
        o.status.success(),
        "{sql}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

fn every_rule_through_the_cli(db: &str, dir: &Path) {
    let server = Server::start_with(db, &dir.join("server-keys"));
    server.add_vendor_and_models(&[PRODUCT, "another-model"]);
    let url = server.url.clone();
    let d = Device::new(server.root_key(), None);

    // Online activation through the CLI, then inference.
    let serial = server.serial("per_device", &[PRODUCT], json!({"validity_days": 30}));
    let o = d.activate(&serial.to_lowercase().replace('-', ""), &url, &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(d.top_label(&d.config()).unwrap(), "180");
    let stored = LicenseStore::new(&d.licenses).list().unwrap();
    assert_eq!(stored.len(), 1);
    let lic = stored[0].license.clone().unwrap();
    let days = (lic.claims.expires_at - lic.claims.issued_at) / 86_400;
    assert_eq!(days, 30);

    // Rules, each through the real CLI against the real server.
    let unknown = outpost_runtime::outpost_licensing::Serial::generate()
        .unwrap()
        .to_string();
    assert_refused(&d.activate(&unknown, &url, &[]), 2002, "unknown serial");
    assert_refused(&d.activate("ABCD-EFGH-JKMN-PQRS", &url, &[]), 2001, "typo");

    let revoked = server.serial("per_device", &[PRODUCT], json!({}));
    server.admin(&format!("/v1/admin/serials/{revoked}/revoke"), json!({}));
    assert_refused(&d.activate(&revoked, &url, &[]), 2003, "revoked");

    // A serial whose own end date passes (the server refuses dates in the past).
    let expired = server.serial("trial", &[PRODUCT], json!({"not_after": now() + 2}));
    std::thread::sleep(Duration::from_millis(3100));
    assert_refused(&d.activate(&expired, &url, &[]), 2004, "expired serial");

    let taken = server.serial("per_device", &[PRODUCT], json!({}));
    assert_eq!(
        server.activate_as_other_device(&taken, "first", None).0,
        200
    );
    assert_refused(
        &d.activate(&taken, &url, &[]),
        2005,
        "used on another device",
    );

    let line = server.serial(
        "product_line",
        &[PRODUCT],
        json!({"package_name": "com.acme.scanner", "device_cap": 1}),
    );
    assert_refused(
        &d.activate(&line, &url, &["--app-id", "com.acme.other"]),
        2008,
        "wrong app",
    );
    assert_eq!(
        server
            .activate_as_other_device(&line, "phone-1", Some("com.acme.scanner"))
            .0,
        200
    );
    assert_refused(
        &d.activate(&line, &url, &["--app-id", "com.acme.scanner"]),
        2006,
        "cap reached",
    );

    let wrong_model = server.serial("per_device", &["another-model"], json!({}));
    assert_refused(
        &d.activate(&wrong_model, &url, &[]),
        2009,
        "serial for another model",
    );

    // The 51st activation of one serial on this device is refused.
    let busy = server.serial("trial", &[PRODUCT], json!({}));
    for i in 0..50 {
        let o = d.activate(&busy, &url, &[]);
        assert!(
            o.status.success(),
            "activation {i}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    assert_refused(&d.activate(&busy, &url, &[]), 2007, "51st activation");

    // Implicit activation: a serial set in the config activates on first open,
    // through HTTP_PROXY (a recording proxy in front of the server).
    let fresh = server.serial("per_device", &[PRODUCT], json!({}));
    let proxy = RecordingProxy::start(&url);
    let o = d.outpost(
        &[
            "infer",
            d.pkg(),
            shared().join("images/text_lines.png").to_str().unwrap(),
            "--serial",
            &fresh,
            "--json",
        ],
        &[
            ("OUTPOST_LICENSE_SERVER", &url),
            ("HTTP_PROXY", &proxy.url),
            ("NO_PROXY", ""),
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        proxy.connections() >= 1,
        "the activation did not go through HTTP_PROXY"
    );
    let out: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(out[0]["results"][0]["label"], "0");

    // Extension: re-activating after the vendor extends gives a later expiry.
    let before = find_licence(&d, &serial).claims.expires_at;
    server.admin(
        &format!("/v1/admin/serials/{serial}/extend"),
        json!({"days": 10}),
    );
    assert!(d.activate(&serial, &url, &[]).status.success());
    assert_eq!(
        find_licence(&d, &serial).claims.expires_at,
        before + 10 * 86_400
    );

    // Revocation stops new activations of an activated serial.
    server.admin(&format!("/v1/admin/serials/{serial}/revoke"), json!({}));
    assert_refused(&d.activate(&serial, &url, &[]), 2003, "revoked after use");

    // Offline use: the server is gone; installed licences keep working, by serial
    // or without one, and a new serial cannot activate (2010).
    server.stop();
    assert_eq!(d.top_label(&d.config()).unwrap(), "180");
    let with_serial = Config {
        serial: Some(fresh.clone()),
        license_server: Some(url.clone()),
        ..d.config()
    };
    assert_eq!(d.top_label(&with_serial).unwrap(), "180");
    let never = Config {
        serial: Some(
            outpost_runtime::outpost_licensing::Serial::generate()
                .unwrap()
                .to_string(),
        ),
        license_server: Some(url.clone()),
        ..d.config()
    };
    let err = d.top_label(&never).unwrap_err();
    assert_eq!(err.code(), 2010, "{err}");
    assert_refused(&d.activate(&unknown, &url, &[]), 2010, "no network");
}

#[test]
fn copied_offline_bulk_and_rotated_licences() {
    let work = tempfile::tempdir().unwrap();
    let server = Server::start(work.path());
    server.add_vendor_and_models(&[PRODUCT]);
    let root = server.root_key();
    let files = tempfile::tempdir().unwrap();
    let file = |name: &str| files.path().join(name).to_str().unwrap().to_string();

    // A licence copied from another machine: refused at import, and at open.
    let d = Device::new(root.clone(), None);
    let copied = server.serial("per_device", &[PRODUCT], json!({}));
    let (status, v) = server.activate_as_other_device(&copied, "elsewhere", None);
    assert_eq!(status, 200, "{v}");
    std::fs::write(file("copied.json"), v["license"].to_string()).unwrap();
    let o = d.outpost(
        &[
            "license",
            "import",
            &file("copied.json"),
            "--package",
            d.pkg(),
        ],
        &[],
    );
    assert_refused(&o, 2011, "import of a copied licence");
    let o = d.outpost(&["license", "import", &file("copied.json")], &[]);
    assert!(o.status.success(), "{o:?}");
    assert_eq!(d.top_label(&d.config()).unwrap_err().code(), 2011);

    // Offline activation, with the server stopped: request out, licence in.
    let (db, keys) = (server.db.clone(), server.keys.clone());
    server.stop();
    let server_cli = |args: &[&str]| Command::new(server_bin()).args(args).output().unwrap();
    let keys = keys.to_str().unwrap();
    let offline = issue_offline(&db, keys, "per_device");
    let d = Device::new(root.clone(), None);
    let o = d.outpost(
        &[
            "license",
            "request",
            "--serial",
            &offline,
            "--package",
            d.pkg(),
        ],
        &[],
    );
    assert!(o.status.success(), "{o:?}");
    std::fs::write(file("request.json"), &o.stdout).unwrap();
    let req = ActivationRequest::parse(&o.stdout).unwrap();
    assert_eq!(
        req.fingerprint,
        Some(Fingerprint::of_this_device(VENDOR).unwrap())
    );
    let o = server_cli(&[
        "offline-activate",
        "--db",
        &db,
        "--keys",
        keys,
        &file("request.json"),
        "--out",
        &file("licence.json"),
    ]);
    assert!(o.status.success(), "{o:?}");
    let o = d.outpost(
        &[
            "license",
            "import",
            &file("licence.json"),
            "--package",
            d.pkg(),
        ],
        &[],
    );
    assert!(o.status.success(), "{o:?}");
    assert_eq!(d.top_label(&d.config()).unwrap(), "180");

    // Bulk: two requests in, one archive out; the refused one is in the report.
    let bulk = issue_offline(&db, keys, "per_device");
    let d2 = Device::new(root.clone(), None);
    let o = d2.outpost(
        &[
            "license",
            "request",
            "--serial",
            &bulk,
            "--package",
            d2.pkg(),
        ],
        &[],
    );
    std::fs::write(file("dev2.json"), &o.stdout).unwrap();
    let mut bad = ActivationRequest::parse(&o.stdout).unwrap();
    bad.serial = outpost_runtime::outpost_licensing::Serial::generate()
        .unwrap()
        .to_string();
    std::fs::write(file("bogus.json"), serde_json::to_vec(&bad).unwrap()).unwrap();
    let o = server_cli(&[
        "bulk-activate",
        "--db",
        &db,
        "--keys",
        keys,
        "--out",
        &file("out.tar"),
        &file("dev2.json"),
        &file("bogus.json"),
    ]);
    assert!(o.status.success(), "{o:?}");
    let mut archive = tar::Archive::new(std::fs::File::open(file("out.tar")).unwrap());
    let mut report = Value::Null;
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry.path().unwrap().to_string_lossy().into_owned();
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).unwrap();
        if name == "report.json" {
            report = serde_json::from_slice(&bytes).unwrap();
        } else {
            assert_eq!(name, "dev2.license.json");
            std::fs::write(file("dev2.license.json"), &bytes).unwrap();
        }
    }
    assert!(report.to_string().contains("2002"), "{report}");
    let o = d2.outpost(
        &[
            "license",
            "import",
            &file("dev2.license.json"),
            "--package",
            d2.pkg(),
        ],
        &[],
    );
    assert!(o.status.success(), "{o:?}");
    assert_eq!(d2.top_label(&d2.config()).unwrap(), "180");

    // Key rotation: the server signs with a new key; packages that know only the
    // root key accept its licences, and licences from before keep working.
    assert!(server_cli(&["rotate-key", "--keys", keys]).status.success());
    let server = Server::start(work.path());
    let rotated = server.serial("per_device", &[PRODUCT], json!({}));
    let d3 = Device::new(root.clone(), Some(&server.url));
    let o = d3.outpost(
        &[
            "license",
            "activate",
            "--serial",
            &rotated,
            "--package",
            d3.pkg(),
        ],
        &[],
    );
    assert!(o.status.success(), "{o:?}");
    let lic = find_licence(&d3, &rotated);
    assert!(
        lic.key_endorsement.is_some(),
        "new key endorsed by the root"
    );
    assert_ne!(lic.claims.key_id, root.key_id);
    assert_eq!(d3.top_label(&d3.config()).unwrap(), "180");
    assert_eq!(
        d.top_label(&d.config()).unwrap(),
        "180",
        "pre-rotation licence"
    );
    let o = d3.outpost(&["license", "status", "--json", "--package", d3.pkg()], &[]);
    let status: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(status["package"]["error_code"], 0, "{status}");
    assert_eq!(status["licenses"][0]["state"], "active");
}

/// Issues one serial straight into the database by starting a short-lived server.
fn issue_offline(db: &str, keys: &str, kind: &str) -> String {
    let s = Server::start_with(db, Path::new(keys));
    let serial = s.serial(kind, &[PRODUCT], json!({}));
    s.stop();
    serial
}

#[test]
fn https_activation_trusts_a_private_ca_only_when_told() {
    let work = tempfile::tempdir().unwrap();
    let server = Server::start(work.path());
    server.add_vendor_and_models(&[PRODUCT]);
    let serial = server.serial("per_device", &[PRODUCT], json!({}));

    // A private CA and a certificate for localhost, served by a TLS terminator in
    // front of the (plain HTTP) licence server, as a reverse proxy would.
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&leaf_key, &ca, &ca_key)
        .unwrap();
    let https = tls_terminator(leaf.der().clone(), leaf_key.serialize_der(), &server.url);
    let ca_file = work.path().join("private-ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();

    let d = Device::new(server.root_key(), None);
    let o = d.activate(&serial, &https, &[]);
    assert_refused(&o, 2010, "untrusted certificate");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("OUTPOST_LICENSE_CA"),
        "{o:?}"
    );
    let o = d.outpost(
        &[
            "license",
            "activate",
            "--serial",
            &serial,
            "--package",
            d.pkg(),
            "--server",
            &https,
        ],
        &[("OUTPOST_LICENSE_CA", ca_file.to_str().unwrap())],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(d.top_label(&d.config()).unwrap(), "180");
}

/// Serves TLS on 127.0.0.1 with this certificate and forwards each HTTP message to
/// `upstream`; returns `https://localhost:PORT`.
fn tls_terminator(
    cert: rustls::pki_types::CertificateDer<'static>,
    key_pkcs8: Vec<u8>,
    upstream: &str,
) -> String {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert],
            rustls::pki_types::PrivatePkcs8KeyDer::from(key_pkcs8).into(),
        )
        .unwrap();
    let config = Arc::new(config);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let upstream = upstream.trim_start_matches("http://").to_string();
    std::thread::spawn(move || {
        for tcp in listener.incoming().map_while(Result::ok) {
            let (config, upstream) = (config.clone(), upstream.clone());
            std::thread::spawn(move || {
                let Ok(conn) = rustls::ServerConnection::new(config) else {
                    return;
                };
                let mut tls = rustls::StreamOwned::new(conn, tcp);
                let Some(request) = read_http_message(&mut tls) else {
                    return;
                };
                let Ok(mut up) = TcpStream::connect(&upstream) else {
                    return;
                };
                if up.write_all(&request).is_err() {
                    return;
                }
                if let Some(response) = read_http_message(&mut up) {
                    let _ = tls.write_all(&response);
                    tls.conn.send_close_notify();
                    let _ = tls.flush();
                }
            });
        }
    });
    format!("https://localhost:{port}")
}

/// One HTTP/1.1 message: headers, then a `Content-Length` body.
fn read_http_message(stream: &mut impl Read) -> Option<Vec<u8>> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).ok()? == 0 {
            return None;
        }
        buf.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&buf).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).ok()?;
    buf.extend(body);
    Some(buf)
}

/// The device's installed licence for `serial`.
fn find_licence(d: &Device, serial: &str) -> LicenseFile {
    LicenseStore::new(&d.licenses)
        .list()
        .unwrap()
        .into_iter()
        .filter_map(|s| s.license.ok())
        .find(|l| l.claims.serial.to_string() == serial)
        .expect("licence installed")
}

fn now() -> u64 {
    outpost_runtime::outpost_licensing::unix_now()
}

/// A forwarding HTTP proxy on loopback that counts its connections.
struct RecordingProxy {
    url: String,
    count: Arc<AtomicUsize>,
}

impl RecordingProxy {
    fn start(target: &str) -> RecordingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let target = target.trim_start_matches("http://").to_string();
        let count = Arc::new(AtomicUsize::new(0));
        let seen = count.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().map_while(Result::ok) {
                seen.fetch_add(1, Ordering::SeqCst);
                let Ok(upstream) = TcpStream::connect(&target) else {
                    continue;
                };
                pipe(client, upstream);
            }
        });
        RecordingProxy { url, count }
    }

    fn connections(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }
}

/// Copies bytes both ways until either side closes.
fn pipe(a: TcpStream, b: TcpStream) {
    let (mut a2, mut b2) = (a.try_clone().unwrap(), b.try_clone().unwrap());
    let (mut a, mut b) = (a, b);
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut a2, &mut b2);
        let _ = b2.shutdown(std::net::Shutdown::Write);
    });
    std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        while let Ok(n) = b.read(&mut buf) {
            if n == 0 || a.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = a.shutdown(std::net::Shutdown::Write);
    });
}
