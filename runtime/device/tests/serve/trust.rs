//! Signed bundles: `serve` and `predict` with `--trust` load only a bundle signed by a
//! trusted key and name why they refuse one (unsigned, tampered, untrusted); without
//! `--trust` they load as before and say that they do not check.

use std::path::Path;

use edgetune::trust::{self, SecretKey};

use crate::{case, f32_bytes, run, sample, serve_to_end};

/// A key pair written as `finetune-head keygen` writes it; the public key's path.
fn keypair(dir: &Path, name: &str) -> (SecretKey, String) {
    let key = SecretKey::generate().unwrap();
    let public = trust::write_keypair(&dir.join(name), &key).unwrap();
    (key, public.to_str().unwrap().to_string())
}

fn sign(model: &Path, key: &SecretKey) {
    let bytes = std::fs::read(model).unwrap();
    trust::sign_file(model, &bytes, key).unwrap();
}

#[test]
fn trusted_signed_bundles_only() {
    let (dir, model, state, _) = case("trust", 4, 1);
    let (key, public) = keypair(&dir, "fleet.key");
    let (other, other_public) = keypair(&dir, "other.key");
    let serve = |extra: &[&str]| serve_to_end(&model, &state, extra);

    // Without --trust: loads as before, and says it does not check.
    let (ok, _, err) = serve(&[]);
    assert!(ok, "{err}");
    assert!(err.contains("not verifying the signature"), "{err}");

    // Unsigned.
    let (ok, _, err) = serve(&["--trust", &public]);
    assert!(
        !ok && err.contains("unsigned") && err.contains("model.etb.sig"),
        "{err}"
    );

    // Signed by the trusted key: loads and names the key.
    sign(&model, &key);
    let (ok, _, err) = serve(&["--trust", &public]);
    assert!(ok, "{err}");
    let id = key.public().id().to_string();
    assert!(
        err.contains(&format!("signed by trusted key {id}")),
        "{err}"
    );
    // Trusted among several.
    let (ok, _, err) = serve(&["--trust", &other_public, "--trust", &public]);
    assert!(ok, "{err}");

    // Signed by a key that is not trusted.
    let (ok, _, err) = serve(&["--trust", &other_public]);
    assert!(
        !ok && err.contains("untrusted") && err.contains(&id),
        "{err}"
    );

    // One flipped byte of the bundle after signing.
    let mut bytes = std::fs::read(&model).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x10;
    std::fs::write(&model, &bytes).unwrap();
    let (ok, _, err) = serve(&["--trust", &public]);
    assert!(
        !ok && err.contains("tampered") && err.contains(&id),
        "{err}"
    );
    bytes[middle] ^= 0x10;
    std::fs::write(&model, &bytes).unwrap();

    // A signature file that is not one, and a private key where a public one belongs.
    sign(&model, &other);
    let sig = trust::signature_path(&model);
    std::fs::write(&sig, "edgetune-signature: 1\nkey: AAAA\n").unwrap();
    let (ok, _, err) = serve(&["--trust", &public]);
    assert!(!ok && err.contains("invalid signature file"), "{err}");
    let private = dir.join("fleet.key");
    let (ok, _, err) = serve(&["--trust", private.to_str().unwrap()]);
    assert!(!ok && err.contains("this is a private key"), "{err}");
    // Nothing was written by the refused runs: the state directory holds what the
    // accepted ones left.
    assert!(state.exists());
}

#[test]
fn predict_checks_too() {
    let (dir, model, _, mut rng) = case("trust-predict", 4, 2);
    let (key, public) = keypair(&dir, "k");
    let input = dir.join("x.f32");
    std::fs::write(&input, f32_bytes(&sample(0, &mut rng))).unwrap();
    let plain = ["predict", model.to_str().unwrap(), input.to_str().unwrap()];
    let trusting = [&plain[..], &["--trust", &public]].concat();
    let (ok, _, err) = run(&trusting);
    assert!(!ok && err.contains("unsigned"), "{err}");
    sign(&model, &key);
    let (ok, out, err) = run(&trusting);
    assert!(ok && out.contains('a'), "{out} {err}");
    let (ok, _, err) = run(&plain);
    assert!(ok && err.contains("not verifying"), "{err}");
}
