//! PostgreSQL: the rule suite, and caps holding across two server processes.
//! Skipped (with a notice) unless OUTPOST_TEST_POSTGRES_URL is set.

use std::sync::{Arc, Barrier};

use serde_json::json;

use crate::common::*;

#[test]
fn rules_on_postgres() {
    let Some(url) = postgres_url("rules_on_postgres") else {
        return;
    };
    let db = PgDatabase::create(&url);
    let dir = tempfile::tempdir().unwrap();
    crate::rules::rule_suite(&Opts::new(&db.url, dir.path()));
}

#[test]
fn device_cap_holds_across_two_servers_on_postgres() {
    let Some(url) = postgres_url("device_cap_holds_across_two_servers_on_postgres") else {
        return;
    };
    let db = PgDatabase::create(&url);
    let dir = tempfile::tempdir().unwrap();
    let mut opts = Opts::new(&db.url, &dir.path().join("a"));
    opts.keys = dir.path().join("keys");
    opts.args.extend(["--max-connections".into(), "20".into()]);
    let a = Server::start(&opts);
    let mut opts_b = opts.clone();
    opts_b.dir = dir.path().join("b");
    let b = Server::start(&opts_b);
    setup_vendor(&a);
    let serial = one_serial(
        &a,
        "product_line",
        json!({"package_name": "com.acme.app", "device_cap": 100}),
    );
    let n = 200;
    let barrier = Arc::new(Barrier::new(n));
    let threads: Vec<_> = (0..n)
        .map(|i| {
            let url = if i % 2 == 0 {
                a.url.clone()
            } else {
                b.url.clone()
            };
            let serial = serial.clone();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                let req = request(
                    &serial,
                    "m1",
                    Some(fingerprint(&format!("pg-{i}"))),
                    Some("com.acme.app"),
                );
                let body = serde_json::to_vec(&req).unwrap();
                barrier.wait();
                let (status, v) =
                    call("POST", &format!("{url}/v1/activate"), None, Some(&body)).unwrap();
                (status, v["error_code"].as_u64().unwrap())
            })
        })
        .collect();
    let results: Vec<(u16, u64)> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let granted = results.iter().filter(|r| **r == (200, 0)).count();
    let capped = results.iter().filter(|r| **r == (403, 2006)).count();
    assert_eq!((granted, capped), (100, 100), "{results:?}");
    let rows = b.admin_get(&format!("/v1/admin/activations?serial={serial}"));
    assert_eq!(rows["activations"].as_array().unwrap().len(), 100);
    let d = a.admin_get(&format!("/v1/admin/serials/{serial}"));
    assert_eq!(d["serial"]["activated_devices"], 100);
}
