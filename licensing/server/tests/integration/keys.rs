//! Key creation, `public-key`, `rotate-key` and endorsed licences.

use serde_json::json;

use crate::common::*;

#[test]
fn key_rotation_keeps_old_and_new_licences_verifying_with_the_root() {
    let dir = tempfile::tempdir().unwrap();
    let opts = Opts::sqlite(dir.path());
    let keys = opts.keys.to_str().unwrap().to_string();

    // `public-key` creates the keys and prints the root public key.
    let out = run_cli(&["public-key", "--keys", &keys]);
    assert!(out.status.success(), "{out:?}");
    let root_hex = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert_eq!(root_hex.len(), 64);

    let mut s = Server::start(&opts);
    setup_vendor(&s);
    let v = s.admin_get("/v1/keys");
    let listed = v["keys"].as_array().unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["public_key"], root_hex.as_str());
    assert_eq!(listed[0]["root"], true);
    assert_eq!(listed[0]["current"], true);
    let root_id = listed[0]["key_id"].as_str().unwrap().to_string();
    // The .pub file has the format of `outpost-trainer keygen`'s public.key.
    let pub_file = std::fs::read_to_string(opts.keys.join(format!("{root_id}.pub"))).unwrap();
    assert_eq!(pub_file, format!("{root_hex}\n"));
    assert_eq!(
        std::fs::read_to_string(opts.keys.join("public.key")).unwrap(),
        pub_file
    );
    let root_only = s.license_keys(true);

    let serials = serials(
        &s,
        json!({"vendor": VENDOR, "kind": "per_device", "models": ["m1"], "count": 2}),
    );
    let old = s.activate_ok(&request(&serials[0], "m1", Some(fingerprint("k0")), None));
    assert_eq!(old.claims.key_id, root_id);
    old.verify_signature(&root_only).unwrap();
    assert!(s.terminate(), "clean shutdown on SIGTERM");

    let out = run_cli(&["rotate-key", "--keys", &keys]);
    assert!(out.status.success(), "{out:?}");
    let s = Server::start(&opts);
    let v = s.admin_get("/v1/keys");
    let listed = v["keys"].as_array().unwrap();
    assert_eq!(listed.len(), 2);
    let current = listed.iter().find(|k| k["current"] == true).unwrap();
    assert_eq!(current["root"], false);
    let new_id = current["key_id"].as_str().unwrap();
    assert_ne!(new_id, root_id);

    let new = s.activate_ok(&request(&serials[1], "m1", Some(fingerprint("k1")), None));
    assert_eq!(new.claims.key_id, new_id);
    let e = new
        .key_endorsement
        .as_ref()
        .expect("an endorsement by the root");
    assert_eq!(e.endorsed_by, root_id);
    // Verifies with only the root key (what old packages list).
    new.verify_signature(&root_only).unwrap();
    // The licence from before the rotation still verifies, and re-activation of
    // its device now gets a licence signed by the new key.
    old.verify_signature(&root_only).unwrap();
    old.verify_signature(&s.license_keys(false)).unwrap();
    let again = s.activate_ok(&request(&serials[0], "m1", Some(fingerprint("k0")), None));
    assert_eq!(again.claims.key_id, new_id);
    again.verify_signature(&root_only).unwrap();
    // `public-key` still prints the root.
    let out = run_cli(&["public-key", "--keys", &keys]);
    assert_eq!(String::from_utf8(out.stdout).unwrap().trim(), root_hex);
}
