//! The admin API: tokens, vendors, models, serials, search, extend, revoke, reset,
//! CSV export, offline activation and the audit trail.

use serde_json::json;

use crate::common::*;

#[test]
fn admin_api() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&Opts::sqlite(dir.path()));

    // 401 / 5002 without a token, with a wrong one, with another scheme.
    for token in [None, Some("wrong-token-0123456789"), Some("")] {
        let (status, v) = s.get("/v1/admin/serials", token);
        assert_eq!((status, v["error_code"].as_u64()), (401, Some(5002)), "{v}");
        let (status, v) = s.post(
            "/v1/admin/vendors",
            token,
            json!({"id": "x", "name": "X"}).to_string().as_bytes(),
        );
        assert_eq!((status, v["error_code"].as_u64()), (401, Some(5002)), "{v}");
    }
    let r = call("GET", &format!("{}/v1/admin/serials", s.url), None, None).unwrap();
    assert_eq!(r.0, 401);

    setup_vendor(&s);
    // Duplicates, unknown vendors and models, bad bodies.
    let (status, v) = s.post(
        "/v1/admin/vendors",
        Some(TOKEN),
        json!({"id": VENDOR, "name": "again"})
            .to_string()
            .as_bytes(),
    );
    assert_eq!((status, v["error_code"].as_u64()), (409, Some(5001)), "{v}");
    let (status, v) = s.post(
        "/v1/admin/vendors/nobody/models",
        Some(TOKEN),
        json!({"product_id": "m1"}).to_string().as_bytes(),
    );
    assert_eq!((status, v["error_code"].as_u64()), (404, Some(5006)), "{v}");
    let (status, v) = s.post(
        "/v1/admin/serials",
        Some(TOKEN),
        json!({"vendor": VENDOR, "kind": "per_device", "models": ["nope"], "count": 1})
            .to_string()
            .as_bytes(),
    );
    assert_eq!((status, v["error_code"].as_u64()), (404, Some(5006)), "{v}");
    for bad in [
        json!({"vendor": VENDOR, "kind": "lifetime", "models": ["m1"], "count": 1}),
        json!({"vendor": VENDOR, "kind": "per_device", "models": ["m1"], "count": 0}),
        json!({"vendor": VENDOR, "kind": "per_device", "models": ["m1"], "count": 10001}),
        json!({"vendor": VENDOR, "kind": "product_line", "models": ["m1"], "count": 1}),
        json!({"vendor": VENDOR, "kind": "product_line", "models": ["m1"], "count": 1,
               "package_name": "com.acme.app", "device_cap": 10001}),
        json!({"vendor": VENDOR, "kind": "per_device", "models": [], "count": 1}),
        json!({"vendor": VENDOR, "kind": "per_device", "models": ["m1"], "count": 1, "extra": 1}),
        json!({"vendor": VENDOR, "kind": "per_device", "models": ["m1"], "count": "1"}),
    ] {
        let (status, v) = s.post("/v1/admin/serials", Some(TOKEN), bad.to_string().as_bytes());
        assert_eq!(
            (status, v["error_code"].as_u64()),
            (400, Some(5001)),
            "{bad}: {v}"
        );
    }
    let (status, v) = s.post("/v1/admin/serials", Some(TOKEN), b"{not json");
    assert_eq!((status, v["error_code"].as_u64()), (400, Some(5001)), "{v}");

    // Vendors list their models.
    let vendors = s.admin_get("/v1/admin/vendors");
    assert_eq!(vendors["vendors"][0]["id"], VENDOR);
    assert_eq!(vendors["vendors"][0]["models"], json!(["m1", "m2"]));

    // Create serials: defaults per kind.
    let batch = s.admin_post(
        "/v1/admin/serials",
        &json!({"vendor": VENDOR, "kind": "trial", "models": ["m1", "m2"], "count": 5}),
    );
    let batch_id = batch["batch_id"].as_str().unwrap().to_string();
    let trials: Vec<String> = batch["serials"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert_eq!(trials.len(), 5);
    let t = s.admin_get(&format!("/v1/admin/serials/{}", trials[0]));
    assert_eq!(t["serial"]["validity_days"], 90);
    assert_eq!(t["serial"]["device_cap"], 1);
    assert_eq!(t["serial"]["edition"], "standard");
    let line = one_serial(&s, "product_line", json!({"package_name": "com.acme.app"}));
    let l = s.admin_get(&format!("/v1/admin/serials/{line}"));
    assert_eq!(l["serial"]["device_cap"], 10000);
    assert_eq!(l["serial"]["validity_days"], 365);
    let per = one_serial(&s, "per_device", json!({"device_cap": 7}));
    assert_eq!(
        s.admin_get(&format!("/v1/admin/serials/{per}"))["serial"]["device_cap"],
        1,
        "per-device caps are forced to 1"
    );
    // Lower case and no dashes address the same serial; a typo is 2001; unknown 404.
    let lower = per.to_lowercase().replace('-', "");
    assert_eq!(
        s.admin_get(&format!("/v1/admin/serials/{lower}"))["serial"]["serial"],
        per.as_str()
    );
    let (status, v) = s.get("/v1/admin/serials/AAAA-AAAA-AAAA-AAAA", Some(TOKEN));
    assert_eq!((status, v["error_code"].as_u64()), (400, Some(2001)), "{v}");
    let unknown = outpost_licensing::Serial::generate().unwrap().to_string();
    let (status, v) = s.get(&format!("/v1/admin/serials/{unknown}"), Some(TOKEN));
    assert_eq!((status, v["error_code"].as_u64()), (404, Some(5006)), "{v}");

    // List and search.
    let all = s.admin_get("/v1/admin/serials");
    assert_eq!(all["total"], 7);
    let by_kind = s.admin_get("/v1/admin/serials?kind=trial&vendor=acme");
    assert_eq!(by_kind["total"], 5);
    let by_batch = s.admin_get(&format!("/v1/admin/serials?q={}", &batch_id[2..10]));
    assert_eq!(by_batch["total"], 5);
    let part = trials[2][5..14].to_lowercase();
    let found = s.admin_get(&format!("/v1/admin/serials?q={part}"));
    assert!(found["serials"]
        .as_array()
        .unwrap()
        .iter()
        .any(|x| x["serial"] == trials[2].as_str()));
    let page = s.admin_get("/v1/admin/serials?limit=2&offset=2");
    assert_eq!(page["serials"].as_array().unwrap().len(), 2);
    let (status, v) = s.get("/v1/admin/serials?limit=1001", Some(TOKEN));
    assert_eq!((status, v["error_code"].as_u64()), (400, Some(5001)), "{v}");
    let (status, v) = s.get("/v1/admin/serials?kind=lifetime", Some(TOKEN));
    assert_eq!((status, v["error_code"].as_u64()), (400, Some(5001)), "{v}");
    let (status, v) = s.get("/v1/admin/serials?limit=abc", Some(TOKEN));
    assert_eq!((status, v["error_code"].as_u64()), (400, Some(5001)), "{v}");

    // Extend: a re-activation then yields a later expiry.
    let lic = s.activate_ok(&request(&trials[0], "m1", Some(fingerprint("t0")), None));
    let ext = s.admin_post(
        &format!("/v1/admin/serials/{}/extend", trials[0]),
        &json!({"days": 10}),
    );
    assert_eq!(ext["activations_extended"], 1);
    let after = s.activate_ok(&request(&trials[0], "m1", Some(fingerprint("t0")), None));
    assert_eq!(after.claims.expires_at, lic.claims.expires_at + 10 * 86_400);
    assert_eq!(after.claims.activation_id, lic.claims.activation_id);
    // not_after moves too, when set.
    let bounded = one_serial(&s, "per_device", json!({"not_after": now() + 86_400}));
    let before = s.admin_get(&format!("/v1/admin/serials/{bounded}"))["serial"]["not_after"]
        .as_u64()
        .unwrap();
    let ext = s.admin_post(
        &format!("/v1/admin/serials/{bounded}/extend"),
        &json!({"days": 2}),
    );
    assert_eq!(ext["serial"]["not_after"], before + 2 * 86_400);
    let (status, v) = s.post(
        &format!("/v1/admin/serials/{unknown}/extend"),
        Some(TOKEN),
        br#"{"days": 1}"#,
    );
    assert_eq!((status, v["error_code"].as_u64()), (404, Some(5006)), "{v}");

    // Reset frees the slot of a per-device serial for another device.
    let lic_a = s.activate_ok(&request(&per, "m1", Some(fingerprint("a")), None));
    let (status, v) = s.activate(&request(&per, "m1", Some(fingerprint("b")), None));
    assert_eq!((status, v["error_code"].as_u64()), (403, Some(2005)));
    let (status, v) = s.post(
        &format!("/v1/admin/serials/{per}/reset"),
        Some(TOKEN),
        br#"{"activation_id": "nope"}"#,
    );
    assert_eq!((status, v["error_code"].as_u64()), (404, Some(5006)), "{v}");
    let r = s.admin_post(
        &format!("/v1/admin/serials/{per}/reset"),
        &json!({"activation_id": lic_a.claims.activation_id}),
    );
    assert_eq!(r["serial"]["activated_devices"], 0);
    s.activate_ok(&request(&per, "m1", Some(fingerprint("b")), None));
    let d = s.admin_get(&format!("/v1/admin/serials/{per}"));
    assert_eq!(d["serial"]["activated_devices"], 1);
    assert_eq!(d["activations"].as_array().unwrap().len(), 1);
    assert!(d["activations"][0]["license"]["signature"].is_string());

    // Activations list, by serial and by vendor.
    let acts = s.admin_get(&format!("/v1/admin/activations?serial={per}"));
    assert_eq!(acts["activations"].as_array().unwrap().len(), 1);
    let acts = s.admin_get("/v1/admin/activations?vendor=acme");
    assert_eq!(acts["activations"].as_array().unwrap().len(), 2);
    let acts = s.admin_get("/v1/admin/activations?vendor=other");
    assert_eq!(acts["activations"].as_array().unwrap().len(), 0);

    // Revoke.
    let rv = s.admin_post(
        &format!("/v1/admin/serials/{}/revoke", trials[1]),
        &json!({}),
    );
    assert_eq!(rv["serial"]["revoked"], true);
    assert_eq!(s.admin_get("/v1/admin/serials?revoked=true")["total"], 1);
    let (status, v) = s.activate(&request(&trials[1], "m1", Some(fingerprint("r")), None));
    assert_eq!((status, v["error_code"].as_u64()), (403, Some(2003)));

    // Offline activation through the admin API: same rules, audited as admin.
    let body =
        serde_json::to_vec(&request(&trials[3], "m2", Some(fingerprint("off")), None)).unwrap();
    let (status, v) = s.post("/v1/admin/offline-activate", Some(TOKEN), &body);
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["error_code"], 0);
    let (status, v) = s.post("/v1/admin/offline-activate", None, &body);
    assert_eq!((status, v["error_code"].as_u64()), (401, Some(5002)));
    let body =
        serde_json::to_vec(&request(&trials[1], "m1", Some(fingerprint("off")), None)).unwrap();
    let (status, v) = s.post("/v1/admin/offline-activate", Some(TOKEN), &body);
    assert_eq!((status, v["error_code"].as_u64()), (403, Some(2003)));

    // CSV export: a header and one row per serial, with activation counts.
    let (status, csv) = s.get("/v1/admin/export.csv?vendor=acme", Some(TOKEN));
    assert_eq!(status, 200);
    let csv = csv.as_str().unwrap().to_string();
    let mut lines = csv.lines();
    let header = lines.next().unwrap();
    assert!(header.starts_with("serial,vendor,kind,models"), "{header}");
    assert!(header.contains("activations_total"));
    let rows: Vec<&str> = lines.collect();
    assert_eq!(rows.len(), 8);
    let t0 = rows.iter().find(|r| r.starts_with(&trials[0])).unwrap();
    assert!(t0.contains(",trial,m1;m2,standard,1,90,"), "{t0}");
    let (_, other) = s.get("/v1/admin/export.csv?vendor=other", Some(TOKEN));
    assert_eq!(other.as_str().unwrap().lines().count(), 1);

    // The audit trail has the admin actions.
    let audit = s.admin_get("/v1/admin/audit?limit=1000");
    let entries = audit["entries"].as_array().unwrap();
    for action in [
        "create_vendor",
        "create_model",
        "create_serials",
        "extend",
        "revoke",
        "reset",
        "export_csv",
        "list_serials",
    ] {
        assert!(
            entries.iter().any(
                |e| e["action"] == action && e["actor"].as_str().unwrap().starts_with("admin ")
            ),
            "no audit row for {action}"
        );
    }
    assert!(entries.iter().any(|e| e["action"] == "activate"
        && e["actor"].as_str().unwrap().starts_with("admin ")
        && e["outcome"] == 2003));
    assert!(entries.len() <= 1000);
    let few = s.admin_get("/v1/admin/audit?limit=3");
    assert_eq!(few["entries"].as_array().unwrap().len(), 3);
}
