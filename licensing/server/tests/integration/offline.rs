//! `offline-activate` and `bulk-activate`: the same rules, straight on the database.

use std::io::Read;

use outpost_licensing::LicenseFile;
use serde_json::{json, Value};

use crate::common::*;

#[test]
fn offline_and_bulk_activation() {
    let dir = tempfile::tempdir().unwrap();
    let opts = Opts::sqlite(dir.path());
    let s = Server::start(&opts);
    setup_vendor(&s);
    let serials = serials(
        &s,
        json!({"vendor": VENDOR, "kind": "per_device", "models": ["m1"], "count": 4}),
    );
    let trusted = s.license_keys(true);
    // SQLite: the subcommands open the same file while the server runs (WAL).
    let db = opts.db.clone();
    let keys = opts.keys.to_str().unwrap().to_string();
    let write = |name: &str, body: &[u8]| {
        let p = dir.path().join(name);
        std::fs::write(&p, body).unwrap();
        p.to_str().unwrap().to_string()
    };

    // One request: a licence file.
    let req = write(
        "one.json",
        &serde_json::to_vec(&request(&serials[0], "m1", Some(fingerprint("o1")), None)).unwrap(),
    );
    let out_file = dir.path().join("one.license.json");
    let out = run_cli(&[
        "offline-activate",
        "--db",
        &db,
        "--keys",
        &keys,
        &req,
        "--out",
        out_file.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{out:?}");
    let lic = LicenseFile::parse(&std::fs::read(&out_file).unwrap(), "one").unwrap();
    lic.verify_signature(&trusted).unwrap();
    assert_eq!(lic.claims.serial.to_string(), serials[0]);
    // The server sees the activation.
    let d = s.admin_get(&format!("/v1/admin/serials/{}", serials[0]));
    assert_eq!(d["serial"]["activated_devices"], 1);
    // Without --out the licence goes to stdout.
    let req2 = write(
        "two.json",
        &serde_json::to_vec(&request(&serials[1], "m1", Some(fingerprint("o2")), None)).unwrap(),
    );
    let out = run_cli(&["offline-activate", "--db", &db, "--keys", &keys, &req2]);
    assert!(out.status.success(), "{out:?}");
    LicenseFile::parse(&out.stdout, "stdout")
        .unwrap()
        .verify_signature(&trusted)
        .unwrap();

    // A refusal: exit status 1 and `error NNNN: message` on stderr.
    let other_device = write(
        "other.json",
        &serde_json::to_vec(&request(&serials[0], "m1", Some(fingerprint("o9")), None)).unwrap(),
    );
    let out = run_cli(&[
        "offline-activate",
        "--db",
        &db,
        "--keys",
        &keys,
        &other_device,
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("error 2005: "), "{err}");
    let junk = write("junk.json", b"{\"serial\": 1}");
    let out = run_cli(&["offline-activate", "--db", &db, "--keys", &keys, &junk]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("error 5001: "));

    // Bulk: a directory of requests plus a file; refusals go to report.json.
    let batch = dir.path().join("batch");
    std::fs::create_dir(&batch).unwrap();
    for (name, serial, tag) in [
        ("a", &serials[2], "b1"),
        ("b", &serials[3], "b2"),
        ("c", &serials[2], "b3"),
    ] {
        std::fs::write(
            batch.join(format!("{name}.json")),
            serde_json::to_vec(&request(serial, "m1", Some(fingerprint(tag)), None)).unwrap(),
        )
        .unwrap();
    }
    let unknown = outpost_licensing::Serial::generate().unwrap().to_string();
    let lone = write(
        "lone.json",
        &serde_json::to_vec(&request(&unknown, "m1", Some(fingerprint("b4")), None)).unwrap(),
    );
    let archive = dir.path().join("out.tar");
    let out = run_cli(&[
        "bulk-activate",
        "--db",
        &db,
        "--keys",
        &keys,
        "--out",
        archive.to_str().unwrap(),
        batch.to_str().unwrap(),
        &lone,
    ]);
    assert!(out.status.success(), "{out:?}");
    let summary = String::from_utf8_lossy(&out.stdout);
    assert!(
        summary.contains("4 requests: 2 licences issued, 2 refused"),
        "{summary}"
    );
    let mut names = Vec::new();
    let mut report: Option<Value> = None;
    let mut ar = tar::Archive::new(std::fs::File::open(&archive).unwrap());
    for entry in ar.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry.path().unwrap().to_string_lossy().into_owned();
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).unwrap();
        if name == "report.json" {
            report = Some(serde_json::from_slice(&bytes).unwrap());
        } else {
            LicenseFile::parse(&bytes, &name)
                .unwrap()
                .verify_signature(&trusted)
                .unwrap();
        }
        names.push(name);
    }
    assert_eq!(
        names,
        vec!["a.license.json", "b.license.json", "report.json"]
    );
    let report = report.unwrap();
    let refused = report["refused"].as_array().unwrap();
    assert_eq!(refused.len(), 2);
    let code_of = |file: &str| {
        refused
            .iter()
            .find(|r| r["file"].as_str().unwrap().ends_with(file))
            .map(|r| r["error_code"].as_u64().unwrap())
    };
    assert_eq!(code_of("c.json"), Some(2005));
    assert_eq!(code_of("lone.json"), Some(2002));
    assert!(refused
        .iter()
        .all(|r| r["message"].as_str().is_some_and(|m| !m.is_empty())));

    // Offline activations are audited as the command line.
    let audit = s.admin_get("/v1/admin/audit?limit=1000");
    let entries = audit["entries"].as_array().unwrap();
    assert!(entries
        .iter()
        .any(|e| e["actor"] == "cli offline-activate" && e["outcome"] == 0));
    assert!(entries
        .iter()
        .any(|e| e["actor"] == "cli bulk-activate" && e["outcome"] == 2005));
}
