//! Crash safety on SQLite: kill -9 under load loses no answered activation.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::common::*;

#[test]
fn answered_activations_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let opts = Opts::sqlite(dir.path());
    let mut s = Server::start(&opts);
    setup_vendor(&s);
    let serial = one_serial(
        &s,
        "product_line",
        json!({"package_name": "com.acme.app", "device_cap": 10000}),
    );
    let url = format!("{}/v1/activate", s.url);
    let answered = Arc::new(Mutex::new(Vec::<String>::new()));
    let ok = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = (0..50)
        .map(|t| {
            let (url, serial, answered, ok) =
                (url.clone(), serial.clone(), answered.clone(), ok.clone());
            std::thread::spawn(move || {
                for i in 0..20 {
                    let req = request(
                        &serial,
                        "m1",
                        Some(fingerprint(&format!("crash-{t}-{i}"))),
                        Some("com.acme.app"),
                    );
                    let body = serde_json::to_vec(&req).unwrap();
                    match call("POST", &url, None, Some(&body)) {
                        Ok((200, v)) => {
                            let id = v["license"]["claims"]["activation_id"]
                                .as_str()
                                .unwrap()
                                .to_string();
                            answered.lock().unwrap().push(id);
                            ok.fetch_add(1, Ordering::SeqCst);
                        }
                        Ok((status, v)) => panic!("unexpected answer {status} {v}"),
                        // The server was killed.
                        Err(_) => return,
                    }
                }
            })
        })
        .collect();
    // Kill mid-load: after some activations were answered, long before all 1000.
    let start = Instant::now();
    while ok.load(Ordering::SeqCst) < 40 && start.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(5));
    }
    s.kill9();
    for t in threads {
        t.join().unwrap();
    }
    let answered = answered.lock().unwrap().clone();
    println!("{} activations answered before kill -9", answered.len());
    assert!(answered.len() >= 40, "only {} answered", answered.len());
    assert!(answered.len() < 1000, "the load finished before the kill");

    let s = Server::start(&opts);
    let rows = s.admin_get(&format!(
        "/v1/admin/activations?serial={serial}&limit=10000"
    ));
    let ids: Vec<&str> = rows["activations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap())
        .collect();
    for id in &answered {
        assert!(
            ids.contains(&id.as_str()),
            "answered activation {id} was lost"
        );
    }
    println!("{} activation rows after restart", ids.len());
    let d = s.admin_get(&format!("/v1/admin/serials/{serial}"));
    assert_eq!(
        d["serial"]["activated_devices"].as_u64().unwrap() as usize,
        ids.len(),
        "activated_devices must equal the number of activation rows"
    );
    let (status, _) = s.get("/healthz", None);
    assert_eq!(status, 200);
}
