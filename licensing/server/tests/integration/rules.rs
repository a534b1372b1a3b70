//! Every activation rule, with its code and HTTP status; run on SQLite here and on
//! PostgreSQL in `postgres.rs`.

use outpost_licensing::{LicenseKind, Serial};
use serde_json::{json, Value};

use crate::common::*;

fn assert_refused(got: (u16, Value), status: u16, code: u64) -> Value {
    let (s, v) = got;
    assert_eq!((s, v["error_code"].as_u64()), (status, Some(code)), "{v}");
    assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    v
}

/// The whole rule suite against a server on `opts`.
pub fn rule_suite(opts: &Opts) {
    let s = Server::start(opts);
    setup_vendor(&s);
    let all_keys = s.license_keys(false);

    // A valid activation: the licence verifies with the key from /v1/keys and says
    // what the serial says.
    let serial = one_serial(
        &s,
        "per_device",
        json!({"models": ["m1", "m2"], "edition": "pro"}),
    );
    let fp = fingerprint("dev-a");
    let before = now();
    let lic = s.activate_ok(&request(&serial, "m2", Some(fp.clone()), None));
    lic.verify_signature(&all_keys).unwrap();
    lic.verify_signature(&s.license_keys(true)).unwrap();
    let c = &lic.claims;
    assert_eq!(c.serial, Serial::parse(&serial).unwrap());
    assert_eq!(c.kind, LicenseKind::PerDevice);
    assert_eq!(c.vendor, VENDOR);
    assert_eq!(c.models, vec!["m1".to_string(), "m2".to_string()]);
    assert_eq!(c.edition, "pro");
    assert_eq!(c.fingerprint.as_ref(), Some(&fp));
    assert!(c.issued_at >= before && c.issued_at <= now());
    assert_eq!(c.expires_at, c.issued_at + 365 * 86_400);
    assert!(lic.key_endorsement.is_none());

    // Re-activation on the same device (one component changed: tolerated) gives the
    // same activation and expiry.
    let again = s.activate_ok(&request(
        &serial,
        "m1",
        Some(fingerprint_with("dev-a", Some("mac"))),
        None,
    ));
    assert_eq!(again.claims.activation_id, c.activation_id);
    assert_eq!(again.claims.expires_at, c.expires_at);

    // 2005: a per-device serial on a second device.
    let v = assert_refused(
        s.activate(&request(&serial, "m1", Some(fingerprint("dev-b")), None)),
        403,
        2005,
    );
    assert!(!v.to_string().contains(&serial));

    // 2001: a typo (check digits) answers 400 and does not echo the serial.
    let good = Serial::generate().unwrap().to_string();
    let mut typo: Vec<char> = good.chars().collect();
    typo[0] = if typo[0] == 'A' { 'B' } else { 'A' };
    let typo: String = typo.into_iter().collect();
    let v = assert_refused(
        s.activate(&request(&typo, "m1", Some(fp.clone()), None)),
        400,
        2001,
    );
    assert!(!v.to_string().contains(&typo) && !v.to_string().contains(&typo.replace('-', "")));

    // 2002: a well-formed serial that was never issued; the message says nothing
    // about it.
    let unknown = Serial::generate().unwrap().to_string();
    let v = assert_refused(
        s.activate(&request(&unknown, "m1", Some(fp.clone()), None)),
        403,
        2002,
    );
    assert!(!v.to_string().contains(&unknown));
    assert!(!v.to_string().contains(&unknown[..4]));

    // 2003: revoked.
    let revoked = one_serial(&s, "per_device", json!({}));
    s.admin_post(&format!("/v1/admin/serials/{revoked}/revoke"), &json!({}));
    assert_refused(
        s.activate(&request(&revoked, "m1", Some(fp.clone()), None)),
        403,
        2003,
    );

    // 2004: the serial's not_after has passed.
    let expiring = one_serial(&s, "per_device", json!({"not_after": now() + 2}));
    // Before it passes, the licence ends at not_after.
    let early = one_serial(&s, "trial", json!({"not_after": now() + 3 * 86_400}));
    let lic = s.activate_ok(&request(&early, "m1", Some(fp.clone()), None));
    assert_eq!(lic.claims.kind, LicenseKind::Trial);
    assert!(lic.claims.expires_at <= now() + 3 * 86_400);
    std::thread::sleep(std::time::Duration::from_millis(3100));
    let v = assert_refused(
        s.activate(&request(&expiring, "m1", Some(fp.clone()), None)),
        403,
        2004,
    );
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .starts_with("serial expired on "),
        "{v}"
    );

    // 2009: another vendor, or a model the serial does not cover.
    let mut wrong_vendor = request(&serial, "m1", Some(fp.clone()), None);
    wrong_vendor.vendor = "other".into();
    assert_refused(s.activate(&wrong_vendor), 403, 2009);
    let only_m1 = one_serial(&s, "per_device", json!({}));
    assert_refused(
        s.activate(&request(&only_m1, "m2", Some(fp.clone()), None)),
        403,
        2009,
    );

    // 5001: a per-device request without a fingerprint.
    assert_refused(
        s.activate(&request(&only_m1, "m1", None, Some("com.acme.app"))),
        400,
        5001,
    );

    // Product line: 2008 for another app, 2006 at the cap.
    let line = one_serial(
        &s,
        "product_line",
        json!({"package_name": "com.acme.app", "device_cap": 2}),
    );
    assert_refused(
        s.activate(&request(
            &line,
            "m1",
            Some(fingerprint("p0")),
            Some("com.other.app"),
        )),
        403,
        2008,
    );
    assert_refused(
        s.activate(&request(&line, "m1", Some(fingerprint("p0")), None)),
        403,
        2008,
    );
    let l1 = s.activate_ok(&request(
        &line,
        "m1",
        Some(fingerprint("p1")),
        Some("com.acme.app"),
    ));
    assert_eq!(l1.claims.package_name.as_deref(), Some("com.acme.app"));
    assert_eq!(l1.claims.kind, LicenseKind::ProductLine);
    // Without a fingerprint, the package name and nonce identify the device.
    let nofp = request(&line, "m1", None, Some("com.acme.app"));
    let l2 = s.activate_ok(&nofp);
    assert!(l2.claims.fingerprint.is_none());
    // The same request again is a re-activation, not a new device.
    assert_eq!(
        s.activate_ok(&nofp).claims.activation_id,
        l2.claims.activation_id
    );
    let v = assert_refused(
        s.activate(&request(
            &line,
            "m1",
            Some(fingerprint("p3")),
            Some("com.acme.app"),
        )),
        403,
        2006,
    );
    assert_eq!(v["detail"], 2);
    // Known devices still re-activate at the cap.
    s.activate_ok(&request(
        &line,
        "m1",
        Some(fingerprint("p1")),
        Some("com.acme.app"),
    ));
    let detail = s.admin_get(&format!("/v1/admin/serials/{line}"));
    assert_eq!(detail["serial"]["activated_devices"], 2);
    assert_eq!(detail["activations"].as_array().unwrap().len(), 2);

    // 2007: the 51st activation of one serial on one device.
    let busy = one_serial(&s, "trial", json!({"validity_days": 30}));
    let dev = fingerprint("busy");
    let first = s.activate_ok(&request(&busy, "m1", Some(dev.clone()), None));
    assert_eq!(
        first.claims.expires_at,
        first.claims.issued_at + 30 * 86_400
    );
    for i in 2..=50 {
        let l = s.activate_ok(&request(&busy, "m1", Some(dev.clone()), None));
        // Re-activation never extends a trial.
        assert_eq!(
            l.claims.expires_at, first.claims.expires_at,
            "activation {i}"
        );
    }
    let v = assert_refused(
        s.activate(&request(&busy, "m1", Some(dev.clone()), None)),
        403,
        2007,
    );
    assert_eq!(v["detail"], 50);

    // Every attempt is in the audit trail with its outcome.
    let audit = s.admin_get("/v1/admin/audit?limit=1000");
    let entries = audit["entries"].as_array().unwrap();
    for code in [
        0, 2001, 2002, 2003, 2004, 2005, 2006, 2007, 2008, 2009, 5001,
    ] {
        assert!(
            entries
                .iter()
                .any(|e| e["action"] == "activate" && e["outcome"] == code),
            "no audit row with outcome {code}"
        );
    }
    // Metrics count outcomes.
    let (status, metrics) = s.get("/metrics", None);
    assert_eq!(status, 200);
    let text = metrics.as_str().unwrap();
    assert!(
        text.contains("outpost_activations_total{code=\"2007\"} 1"),
        "{text}"
    );
    assert!(text.contains("outpost_http_request_duration_seconds_bucket{route=\"/v1/activate\""));
    // No full serial in the logs.
    let log = s.log_text();
    for sr in [&serial, &line, &busy, &unknown] {
        assert!(!log.contains(sr.as_str()), "log leaks a serial");
        assert!(!log.contains(&sr.replace('-', "")), "log leaks a serial");
    }
}

#[test]
fn rules_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    rule_suite(&Opts::sqlite(dir.path()));
}
