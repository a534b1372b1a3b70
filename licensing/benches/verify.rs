//! What a licence check costs on the device when a package opens: parse, signature,
//! fingerprint, and the whole store lookup (read files, clock guard, all checks).
//!
//! `cargo bench -p outpost-licensing --bench verify`

use criterion::{criterion_group, criterion_main, Criterion};
use ed25519_dalek::SigningKey;
use outpost_licensing::{
    unix_now, Claims, DeviceIdentity, Fingerprint, LicenseFile, LicenseKeys, LicenseKind,
    LicenseStore, Requirement, Serial,
};

fn bench(c: &mut Criterion) {
    let key = SigningKey::from_bytes(&[9; 32]);
    let mut keys = LicenseKeys::default();
    keys.add(key.verifying_key());
    let fingerprint = Fingerprint::of_this_device("acme").expect("fingerprint");
    let now = unix_now();
    let lic = LicenseFile::sign(
        Claims {
            serial: Serial::from_random([1, 2, 3, 4, 5, 6, 7]),
            kind: LicenseKind::PerDevice,
            vendor: "acme".into(),
            models: vec!["efficientnet_lite0".into()],
            edition: "standard".into(),
            fingerprint: Some(fingerprint.clone()),
            package_name: None,
            issued_at: now - 60,
            expires_at: now + 86_400,
            activation_id: "bench".into(),
            key_id: String::new(),
        },
        &key,
        None,
    );
    let bytes = lic.to_json();
    let dir = tempfile::tempdir().expect("tempdir");
    let store = LicenseStore::new(dir.path());
    store.install(&lic).expect("install");
    let req = Requirement {
        vendor: "acme".into(),
        product_id: "efficientnet_lite0".into(),
        edition: None,
        keys: keys.clone(),
    };

    c.bench_function("parse licence file", |b| {
        b.iter(|| LicenseFile::parse(&bytes, "bench").expect("parse"))
    });
    c.bench_function("verify signature", |b| {
        b.iter(|| lic.verify_signature(&keys).expect("verify"))
    });
    c.bench_function("fingerprint this device", |b| {
        b.iter(|| Fingerprint::of_this_device("acme").expect("fingerprint"))
    });
    c.bench_function("store lookup (read, clock guard, all checks)", |b| {
        b.iter(|| {
            let device = DeviceIdentity {
                fingerprint: Fingerprint::of_this_device("acme").ok(),
                package_name: None,
            };
            store
                .find_valid(&req, &device, None, unix_now())
                .expect("valid")
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
