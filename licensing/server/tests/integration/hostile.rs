//! Hostile bodies and rate limits: coded JSON errors, never a crash.

use serde_json::json;

use crate::common::*;

#[test]
fn hostile_bodies_get_coded_errors_and_the_server_stays_healthy() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&Opts::sqlite(dir.path()));
    setup_vendor(&s);
    let serial = one_serial(&s, "per_device", json!({}));
    let good = serde_json::to_vec(&request(&serial, "m1", Some(fingerprint("h")), None)).unwrap();

    // 20 KiB: 413 / 5004.
    let mut big = good.clone();
    big.pop();
    big.extend(b", \"pad\": \"");
    big.extend(std::iter::repeat_n(b'x', 20 * 1024));
    big.extend(b"\"}");
    let (status, v) = s.post("/v1/activate", None, &big);
    assert_eq!((status, v["error_code"].as_u64()), (413, Some(5004)), "{v}");

    // Random bytes, deep nesting, wrong types, unknown fields, bad values: 400 / 5001.
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let random: Vec<u8> = (0..4096)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 24) as u8
        })
        .collect();
    let deep_array = "[".repeat(10_000);
    let deep_object = format!("{}1{}", "{\"serial\":".repeat(1000), "}".repeat(1000));
    let text = String::from_utf8(good.clone()).unwrap();
    let cases: Vec<Vec<u8>> = vec![
        random,
        Vec::new(),
        b"null".to_vec(),
        b"[]".to_vec(),
        deep_array.into_bytes(),
        deep_object.into_bytes(),
        vec![0xff, 0xfe, 0x00, 0x7b],
        text.replace(&format!("\"{serial}\""), "12345").into_bytes(),
        text.replace("\"m1\"", "[\"m1\"]").into_bytes(),
        text.replace("\"nonce\"", "\"extra\": true, \"nonce\"")
            .into_bytes(),
        text.replace("\"vendor\":\"acme\"", "\"vendor\":\"../../etc\"")
            .into_bytes(),
        text.replace("\"fingerprint\":\"v1;", "\"fingerprint\":\"v9;")
            .into_bytes(),
    ];
    for (i, body) in cases.iter().enumerate() {
        let (status, v) = s.post("/v1/activate", None, body);
        assert_eq!(
            (status, v["error_code"].as_u64()),
            (400, Some(5001)),
            "case {i}: {v}"
        );
    }

    // Admin bodies: bad JSON 5001; over 1 MiB 413 / 5004.
    let (status, v) = s.post("/v1/admin/vendors", Some(TOKEN), b"\x00\x01{{");
    assert_eq!((status, v["error_code"].as_u64()), (400, Some(5001)), "{v}");
    // (Announced sizes are refused before the body is read, and the connection is
    // closed: sent raw so the client does not trip over the unread body.)
    let head = |path: &str, len: usize, auth: bool| {
        let mut r = format!(
            "POST {path} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n\
             Content-Length: {len}\r\nConnection: close\r\n"
        );
        if auth {
            r.push_str(&format!("Authorization: Bearer {TOKEN}\r\n"));
        }
        r.push_str("\r\n");
        let mut bytes = r.into_bytes();
        bytes.extend(std::iter::repeat_n(b' ', 1024));
        bytes
    };
    let (status, v) = raw_http(&s.url, &head("/v1/admin/vendors", 1024 * 1024 + 10, true));
    assert_eq!((status, v["error_code"].as_u64()), (413, Some(5004)), "{v}");
    let (status, v) = raw_http(&s.url, &head("/v1/activate", 10 * 1024 * 1024, false));
    assert_eq!((status, v["error_code"].as_u64()), (413, Some(5004)), "{v}");

    // Unknown paths and methods answer JSON too.
    let (status, v) = s.get("/v1/serials", None);
    assert_eq!((status, v["error_code"].as_u64()), (404, Some(5006)), "{v}");
    let (status, v) = s.get("/v1/activate", None);
    assert_eq!(status, 405);
    assert!(v["error_code"].is_u64(), "{v}");

    // Still healthy, and a valid activation still works.
    let (status, v) = s.get("/healthz", None);
    assert_eq!((status, v), (200, json!({"status": "ok", "db": "ok"})));
    s.activate_ok(&request(&serial, "m1", Some(fingerprint("h")), None));
}

#[test]
fn rate_limits_answer_429_with_5003() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = Opts::sqlite(dir.path());
    opts.args = vec![
        "--rate-per-ip".into(),
        "2".into(),
        "--rate-burst".into(),
        "4".into(),
        "--rate-per-serial".into(),
        "3".into(),
    ];
    let s = Server::start(&opts);
    // Per IP: a burst of 20 gets some 429 / 5003.
    let body = b"{}";
    let mut limited = 0;
    for _ in 0..20 {
        let (status, v) = s.post("/v1/activate", None, body);
        if status == 429 {
            assert_eq!(v["error_code"], 5003, "{v}");
            limited += 1;
        } else {
            assert_eq!(v["error_code"], 5001, "{v}");
        }
    }
    assert!(limited >= 10, "only {limited} of 20 were limited");
    // Health and admin are not limited.
    let (status, _) = s.get("/healthz", None);
    assert_eq!(status, 200);
    let (status, text) = s.get("/metrics", None);
    assert_eq!(status, 200);
    assert!(text
        .as_str()
        .unwrap()
        .contains("outpost_rate_limited_total{scope=\"ip\"}"));
}

#[test]
fn per_serial_rate_limit() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = Opts::sqlite(dir.path());
    opts.args = vec![
        "--rate-per-ip".into(),
        "0".into(),
        "--rate-per-serial".into(),
        "3".into(),
    ];
    let s = Server::start(&opts);
    // Granted activations do not count: a product-line serial activates many devices.
    setup_vendor(&s);
    let line = one_serial(&s, "product_line", json!({"package_name": "com.acme.app"}));
    for i in 0..6 {
        s.activate_ok(&request(
            &line,
            "m1",
            Some(fingerprint(&format!("line-{i}"))),
            Some("com.acme.app"),
        ));
    }
    // Refusals do: the fourth refused attempt within a minute is throttled.
    let serial = outpost_licensing::Serial::generate().unwrap().to_string();
    let req = request(&serial, "m1", Some(fingerprint("r")), None);
    let codes: Vec<u64> = (0..5)
        .map(|_| s.activate(&req).1["error_code"].as_u64().unwrap())
        .collect();
    assert_eq!(codes, vec![2002, 2002, 2002, 5003, 5003]);
    // Another serial is not affected.
    let other = outpost_licensing::Serial::generate().unwrap().to_string();
    let (status, v) = s.activate(&request(&other, "m1", Some(fingerprint("r")), None));
    assert_eq!((status, v["error_code"].as_u64()), (403, Some(2002)));
}
